/* ember's exit port: lets unikernels and tests end with a status code
 * (serverless functions need their result).  A write of S to PORT_EXIT
 * stops the VM and ember exits with S & 0xff. */
#include <stdio.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/legacy.h"

static int exit_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct exit_port *e = opaque;
	if (!is_write) {
		memset(data, 0xff, len);
		return 0;
	}
	char why[64];
	snprintf(why, sizeof(why), "guest exited with status %u", data[0]);
	e->stop(e->opaque, data[0], why);
	return 1;
}

int exit_port_init(struct exit_port *e, struct bus *pio, stop_fn stop, void *opaque)
{
	e->stop = stop;
	e->opaque = opaque;
	return bus_register(pio, PORT_EXIT, 4, exit_io, e, "exit");
}
