/* poll.hvt: POLL with nothing arriving must wait out its timeout.  One net
 * device "service" (a tap the test leaves quiet).  timeout_ms=N (default
 * 200).  Prints the elapsed time (WALLTIME) and "poll: timeout ok" when
 * POLL returned nothing ready after at least the timeout and well before
 * a second had passed beyond it; frames that do arrive (a host's stray
 * IPv6 traffic) are drained and the wait is tried again, up to 3 times.
 * Then POLL with timeout 0 must return at once. */
#include "hvt_guest.h"

HVT_MANIFEST(HVT_NET("service"));

static u64 drain(int h, u8 *buf, u64 size)
{
	u64 n = 0;

	for (;;) {
		u64 len = size;
		if (hvt_net_read((u64)h, buf, &len) != SOLO5_R_OK)
			return n;
		n++;
	}
}

int main(const struct hvt_boot_info *bi)
{
	const struct hvt_mft_entry *e;
	int h = hvt_mft_find("service", HVT_MFT_NET_BASIC, &e);
	u64 timeout_ms = 200;
	const char *s = cmdline_arg("timeout_ms");

	(void)bi;
	if (h < 0 || !e->attached) {
		kprintf("poll: net device service missing\n");
		return 1;
	}
	if (s && parse_u64(s, &timeout_ms)) {
		kprintf("poll: bad timeout_ms=%s\n", s);
		return 2;
	}
	u64 size = (u64)e->u.net.mtu + 14;
	u8 *buf = hvt_alloc(size);
	if (!buf)
		return 3;

	for (int attempt = 0; attempt < 3; attempt++) {
		u64 ready = 0, t0 = hvt_walltime();
		int r = hvt_poll(timeout_ms * 1000000, &ready);
		u64 t1 = hvt_walltime(), ms = (t1 - t0) / 1000000;
		kprintf("poll: ret=%d ready_set=0x%lx elapsed_ms=%lu\n", r, ready, ms);
		if (ready) {
			kprintf("poll: woke for %lu stray frames; again\n", drain(h, buf, size));
			continue;
		}
		/* WALLTIME is the realtime clock; allow 5 ms of it against the
		 * monitor's monotonic timeout. */
		if (ms + 5 < timeout_ms || ms > timeout_ms + 1000) {
			kprintf("poll: elapsed %lu ms for a %lu ms timeout\n", ms, timeout_ms);
			return 1;
		}
		kprintf("poll: timeout ok\n");

		u64 z0 = hvt_walltime();
		r = hvt_poll(0, &ready);
		u64 zms = (hvt_walltime() - z0) / 1000000;
		kprintf("poll: zero timeout ret=%d elapsed_ms=%lu\n", r, zms);
		return 0;
	}
	kprintf("poll: never quiet\n");
	return 1;
}
