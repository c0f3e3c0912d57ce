/* many.hvt: as many devices as a manifest holds, 63 block devices b1..b63
 * (handles 1..63).  Reads the first sector of each and checks that its
 * first byte is the handle (the test writes it there); prints
 * "many: 63 devices ok" and halts 0, or names the first that is not. */
#include "hvt_guest.h"

/* clang-format off */
HVT_MANIFEST(HVT_BLOCK("b1"), HVT_BLOCK("b2"), HVT_BLOCK("b3"), HVT_BLOCK("b4"), HVT_BLOCK("b5"), HVT_BLOCK("b6"), HVT_BLOCK("b7"), HVT_BLOCK("b8"), HVT_BLOCK("b9"), HVT_BLOCK("b10"), HVT_BLOCK("b11"), HVT_BLOCK("b12"), HVT_BLOCK("b13"), HVT_BLOCK("b14"), HVT_BLOCK("b15"), HVT_BLOCK("b16"), HVT_BLOCK("b17"), HVT_BLOCK("b18"), HVT_BLOCK("b19"), HVT_BLOCK("b20"), HVT_BLOCK("b21"), HVT_BLOCK("b22"), HVT_BLOCK("b23"), HVT_BLOCK("b24"), HVT_BLOCK("b25"), HVT_BLOCK("b26"), HVT_BLOCK("b27"), HVT_BLOCK("b28"), HVT_BLOCK("b29"), HVT_BLOCK("b30"), HVT_BLOCK("b31"), HVT_BLOCK("b32"), HVT_BLOCK("b33"), HVT_BLOCK("b34"), HVT_BLOCK("b35"), HVT_BLOCK("b36"), HVT_BLOCK("b37"), HVT_BLOCK("b38"), HVT_BLOCK("b39"), HVT_BLOCK("b40"), HVT_BLOCK("b41"), HVT_BLOCK("b42"), HVT_BLOCK("b43"), HVT_BLOCK("b44"), HVT_BLOCK("b45"), HVT_BLOCK("b46"), HVT_BLOCK("b47"), HVT_BLOCK("b48"), HVT_BLOCK("b49"), HVT_BLOCK("b50"), HVT_BLOCK("b51"), HVT_BLOCK("b52"), HVT_BLOCK("b53"), HVT_BLOCK("b54"), HVT_BLOCK("b55"), HVT_BLOCK("b56"), HVT_BLOCK("b57"), HVT_BLOCK("b58"), HVT_BLOCK("b59"), HVT_BLOCK("b60"), HVT_BLOCK("b61"), HVT_BLOCK("b62"), HVT_BLOCK("b63"));
/* clang-format on */

int main(const struct hvt_boot_info *bi)
{
	const struct hvt_mft *m = hvt_mft();
	u8 *buf = hvt_alloc(4096);

	(void)bi;
	if (!m || m->entries != 64) {
		kprintf("many: manifest has %u entries, want 64\n", m ? m->entries : 0);
		return 1;
	}
	for (u32 h = 1; h < 64; h++) {
		if (!m->e[h].attached) {
			kprintf("many: %s not attached\n", m->e[h].name);
			return 1;
		}
		int r = hvt_block_read(h, 0, buf, m->e[h].u.block.block_size);
		if (r != SOLO5_R_OK || buf[0] != h) {
			kprintf("many: %s: read %s, byte 0x%x\n", m->e[h].name,
				hvt_result_name(r), buf[0]);
			return 1;
		}
	}
	kprintf("many: 63 devices ok\n");
	return 0;
}
