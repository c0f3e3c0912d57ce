/* Exits with the status given as `status=N` (0-255; 7 without one), so a
 * test can check the monitor passes the guest's status through. */
#include "lib.h"

#define DEFAULT_STATUS 7

int main(void)
{
	const char *arg = cmdline_arg("status");
	u64 status = DEFAULT_STATUS;

	if (arg && (parse_u64(arg, &status) || status > 255)) {
		print("exit_status: bad status= value, using 7\n");
		status = DEFAULT_STATUS;
	}
	kprintf("exiting with %lu\n", status);
	return (int)status;
}
