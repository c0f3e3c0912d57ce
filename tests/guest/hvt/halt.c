/* halt.hvt: HALT with the status from the command line (status=N,
 * default 7) and a cookie pointing at a 512-byte buffer (cookie=none: a
 * NULL cookie).  The monitor's exit code is the status. */
#include "hvt_guest.h"

HVT_MANIFEST();

static char cookie_buf[HVT_HALT_COOKIE_MAX] = "ember hvt halt cookie";

int main(const struct hvt_boot_info *bi)
{
	u64 status = 7;
	const char *s = cmdline_arg("status");

	(void)bi;
	if (s && parse_u64(s, &status)) {
		kprintf("halt: bad status=%s\n", s);
		return 2;
	}
	const void *cookie = cmdline_has("cookie=none") ? NULL : cookie_buf;
	kprintf("halting with %d\n", (int)status);
	hvt_halt((int)status, cookie);
}
