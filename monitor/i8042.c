/* i8042: only the CPU reset line (command 0xFE on port 0x64) matters. */
#include <string.h>

#include "monitor/exitcodes.h"
#include "monitor/layout.h"
#include "monitor/legacy.h"

#define I8042_CMD_RESET 0xfe

/* Port 0x60: no keyboard, so no data; writes are dropped. */
static int data_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	if (!is_write)
		memset(data, 0, len);
	return 0;
}

/* Port 0x64: status reads 0 (no data, input buffer empty: drivers give
 * up quietly); the reset command stops the VM. */
static int cmd_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct i8042 *k = opaque;
	if (!is_write) {
		memset(data, 0, len);
		return 0;
	}
	if (data[0] == I8042_CMD_RESET) {
		k->stop(k->opaque, EXIT_GUEST_RESET, "guest reset (i8042)");
		return 1;
	}
	return 0;
}

int i8042_init(struct i8042 *k, struct bus *pio, stop_fn stop, void *opaque)
{
	k->stop = stop;
	k->opaque = opaque;
	/* Two ranges: 0x61 between them is the PIT's speaker port. */
	int r = bus_register(pio, PORT_I8042_DATA, 1, data_io, k, "i8042-data");
	return r ? r : bus_register(pio, PORT_I8042_CMD, 1, cmd_io, k, "i8042-cmd");
}
