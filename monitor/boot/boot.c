/* Boot structures every protocol shares: memory map, identity page tables,
 * command line, and the PVH start info (xen/include/public/arch-x86/
 * hvm/start_info.h, version 1). */
#include <errno.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/boot/loader.h"

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info v1 layout");

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry layout");

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry layout");

#define HVM_START_MAGIC 0x336ec578
#define PVH_MAX_MEMMAP 8

uint8_t boot_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += b[i];
	return (uint8_t)-sum;
}

int boot_e820(const struct gmem *m, struct e820_entry *out, unsigned max)
{
	struct e820_entry e[4];
	unsigned n = 0;
	uint64_t low = gmem_low_end(m);

	e[n++] = (struct e820_entry){0, low < LAYOUT_EBDA ? low : LAYOUT_EBDA, E820_RAM};
	if (low > LAYOUT_EBDA)
		e[n++] =
		    (struct e820_entry){LAYOUT_EBDA, LAYOUT_BIOS_END - LAYOUT_EBDA, E820_RESERVED};
	if (low > LAYOUT_HIMEM)
		e[n++] = (struct e820_entry){LAYOUT_HIMEM, low - LAYOUT_HIMEM, E820_RAM};
	if (m->nr > 1)
		e[n++] = (struct e820_entry){m->r[1].gpa, m->r[1].size, E820_RAM};
	if (n > max)
		return -ENOSPC;
	memcpy(out, e, n * sizeof(e[0]));
	return (int)n;
}

int boot_page_tables(const struct gmem *m)
{
	uint64_t *pml4 = gmem_ptr(m, LAYOUT_PML4, 4096);
	uint64_t *pdpt = gmem_ptr(m, LAYOUT_PDPT, 4096);
	uint64_t *pd = gmem_ptr(m, LAYOUT_PD, 4096);
	if (!pml4 || !pdpt || !pd)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	/* present | writable; PD entries add PS for 2 MiB pages. */
	pml4[0] = LAYOUT_PDPT | 0x3;
	pdpt[0] = LAYOUT_PD | 0x3;
	for (uint64_t i = 0; i < 512; i++)
		pd[i] = (i << 21) | 0x83;
	return 0;
}

int boot_cmdline(const struct gmem *m, const char *cmdline, size_t len, size_t max_len)
{
	if (len > max_len || len + 1 > LAYOUT_CMDLINE_MAX)
		return -E2BIG;
	char *p = gmem_ptr(m, LAYOUT_CMDLINE, len + 1);
	if (!p)
		return -EFAULT;
	memcpy(p, cmdline, len);
	p[len] = '\0';
	return 0;
}

int boot_pvh_info(const struct gmem *m, uint64_t initrd_gpa, uint64_t initrd_size)
{
	/* rsdp_paddr stays 0 here; vm_build sets it where it writes ACPI. */
	_Static_assert(LAYOUT_PVH_INFO + offsetof(struct hvm_start_info, rsdp_paddr) ==
			   LAYOUT_PVH_INFO_RSDP,
		       "LAYOUT_PVH_INFO_RSDP");
	struct e820_entry e[PVH_MAX_MEMMAP];
	int n = boot_e820(m, e, PVH_MAX_MEMMAP);
	if (n < 0)
		return n;
	struct hvm_memmap_table_entry map[PVH_MAX_MEMMAP];
	memset(map, 0, sizeof(map));
	for (int i = 0; i < n; i++)
		map[i] = (struct hvm_memmap_table_entry){e[i].addr, e[i].size, e[i].type, 0};
	struct hvm_start_info si = {
	    .magic = HVM_START_MAGIC,
	    .version = 1,
	    .cmdline_paddr = LAYOUT_CMDLINE,
	    .memmap_paddr = LAYOUT_PVH_MEMMAP,
	    .memmap_entries = (uint32_t)n,
	};
	if (initrd_size) {
		struct hvm_modlist_entry mod = {.paddr = initrd_gpa, .size = initrd_size};
		if (gmem_write(m, LAYOUT_PVH_MODLIST, &mod, sizeof(mod)))
			return -EFAULT;
		si.nr_modules = 1;
		si.modlist_paddr = LAYOUT_PVH_MODLIST;
	}
	if (gmem_write(m, LAYOUT_PVH_INFO, &si, sizeof(si)) ||
	    gmem_write(m, LAYOUT_PVH_MEMMAP, map, (uint64_t)n * sizeof(map[0])))
		return -EFAULT;
	return 0;
}
