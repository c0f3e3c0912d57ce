/* devices.hvt: three devices, so handles are not all 1.  Manifest:
 * e[0] reserved, e[1] block "disk0", e[2] net "net0", e[3] block "disk1".
 * Prints the manifest as the monitor filled it in (one "dev I ..." line
 * per entry), the first 16 bytes of each disk ("disk0: <hex>"), and checks
 * that a block call on the net handle and a net call on a block handle get
 * EINVAL.  Halts 0 if every device is attached and the checks hold. */
#include "hvt_guest.h"

HVT_MANIFEST(HVT_BLOCK("disk0"), HVT_NET("net0"), HVT_BLOCK("disk1"));

static void hex16(const char *label, const u8 *b)
{
	char hex[33];

	for (int i = 0; i < 16; i++) {
		hex[2 * i] = "0123456789abcdef"[b[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
	}
	hex[32] = 0;
	kprintf("%s: %s\n", label, hex);
}

int main(const struct hvt_boot_info *bi)
{
	const struct hvt_mft *m = hvt_mft();
	int ok = 1;

	(void)bi;
	if (!m) {
		kprintf("devices: no manifest in boot info\n");
		return 1;
	}
	kprintf("mft: version=%u entries=%u\n", m->version, m->entries);
	for (u32 i = 0; i < m->entries && i < HVT_MFT_MAX_ENTRIES; i++) {
		const struct hvt_mft_entry *e = &m->e[i];
		if (e->type == HVT_MFT_BLOCK_BASIC)
			kprintf("dev %u %s block attached=%u capacity=%lu block_size=%u\n", i,
				e->name, e->attached, e->u.block.capacity, e->u.block.block_size);
		else if (e->type == HVT_MFT_NET_BASIC)
			kprintf(
			    "dev %u %s net attached=%u mac=%02x:%02x:%02x:%02x:%02x:%02x mtu=%u\n",
			    i, e->name, e->attached, e->u.net.mac[0], e->u.net.mac[1],
			    e->u.net.mac[2], e->u.net.mac[3], e->u.net.mac[4], e->u.net.mac[5],
			    e->u.net.mtu);
		else
			kprintf("dev %u '%s' type=0x%x attached=%u\n", i, e->name, e->type,
				e->attached);
		if (i > 0 && !e->attached)
			ok = 0;
	}

	int d0 = hvt_mft_find("disk0", HVT_MFT_BLOCK_BASIC, NULL);
	int n0 = hvt_mft_find("net0", HVT_MFT_NET_BASIC, NULL);
	int d1 = hvt_mft_find("disk1", HVT_MFT_BLOCK_BASIC, NULL);
	if (d0 != 1 || n0 != 2 || d1 != 3) {
		kprintf("devices: handles %d %d %d, want 1 2 3\n", d0, n0, d1);
		return 1;
	}
	u8 *buf = hvt_alloc(4096);
	/* One sector: the manifest's block_size (--block-sector-size) */
	int r = hvt_block_read(1, 0, buf, m->e[1].u.block.block_size);
	if (r == SOLO5_R_OK)
		hex16("disk0", buf);
	else
		ok = 0, kprintf("devices: disk0 read: %s\n", hvt_result_name(r));
	r = hvt_block_read(3, 0, buf, m->e[3].u.block.block_size);
	if (r == SOLO5_R_OK)
		hex16("disk1", buf);
	else
		ok = 0, kprintf("devices: disk1 read: %s\n", hvt_result_name(r));

	r = hvt_block_read(2, 0, buf, 512);
	kprintf("devices: block read on the net handle: %s\n", hvt_result_name(r));
	ok &= r == SOLO5_R_EINVAL;
	memset(buf, 0xff, 60);
	r = hvt_net_write(1, buf, 60);
	kprintf("devices: net write on a block handle: %s\n", hvt_result_name(r));
	ok &= r == SOLO5_R_EINVAL;

	kprintf(ok ? "devices: all ok\n" : "devices: FAILED\n");
	return ok ? 0 : 1;
}
