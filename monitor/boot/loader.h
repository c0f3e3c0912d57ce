/* Kernel loaders and boot-structure builders.  Pure functions over a
 * kernel image in host memory and a struct gmem: no KVM, no files, so the
 * unit tests drive them with hostile images directly.  Every error
 * returns -errno and writes a one-line reason to err (the caller prefixes
 * the kernel's path). */
#ifndef EMBER_LOADER_H
#define EMBER_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/guest_mem.h"
#include "monitor/hvt/hvt.h"

enum boot_proto {
	BOOT_NONE = 0,
	BOOT_PVH,     /* ELF with XEN_ELFNOTE_PHYS32_ENTRY: 32-bit entry, ebx = start info */
	BOOT_LINUX64, /* Linux 64-bit boot protocol: bzImage, or a vmlinux ELF without PVH note */
	BOOT_HVT,     /* Solo5 hvt unikernel: ELF with a "Solo5" ABI1 note */
};

enum kernel_format {
	KFMT_UNKNOWN = 0,
	KFMT_ELF,
	KFMT_BZIMAGE,
};

struct load_result {
	enum boot_proto proto;
	uint64_t entry;	       /* PVH: 32-bit physical entry; LINUX64: 64-bit entry */
	uint64_t kernel_start; /* lowest guest-physical byte loaded */
	uint64_t kernel_end;   /* one past the highest byte loaded (incl. bss / init_size) */
	bool is_linux;	       /* ELF "Linux" notes or a bzImage: wants an irqchip */
	uint32_t cmdline_max;  /* longest command line the kernel takes, without NUL */
	uint64_t initrd_max;   /* last byte the initrd may occupy (inclusive, like the
				* boot protocol's initrd_addr_max) */
	/* bzImage only: the setup header bytes (0x1f1..0x1f1+hdr_len) to copy
	 * into the zero page, as the boot protocol asks. */
	uint8_t setup_hdr[0x80];
	uint32_t setup_hdr_len;
	/* ELF only: Solo5 notes (pointers into the image, valid while it is
	 * mapped) */
	struct hvt_notes solo5;
};

/* Guess the format from magic numbers (ELF: 7f 'E' 'L' 'F'; bzImage:
 * "HdrS" at 0x202 and boot flag 0xAA55 at 0x1fe). */
enum kernel_format loader_probe(const uint8_t *img, size_t len);

/* Load an ELF64 x86_64 executable's PT_LOAD segments at their physical
 * addresses (p_paddr).  Refuses: truncated headers, segments past the end
 * of the file, filesz > memsz, segments outside RAM or below 1 MiB,
 * overlapping segments, a PVH entry outside a loaded segment.  Picks
 * BOOT_HVT if a PT_NOTE holds a Solo5 ABI1 note (the caller checks its
 * target and version), BOOT_PVH if one holds XEN_ELFNOTE_PHYS32_ENTRY
 * (Xen note type 18), else BOOT_LINUX64 with e_entry. */
__attribute__((warn_unused_result)) int loader_elf(const struct gmem *m, const uint8_t *img,
						   size_t len, struct load_result *out, char *err,
						   size_t errlen);

/* Load a bzImage's protected-mode kernel at its preferred address (Linux
 * boot protocol >= 2.12 with XLF_KERNEL_64 required), check that
 * init_size fits in RAM, and keep the setup header for the zero page.
 * entry = load address + 0x200. */
__attribute__((warn_unused_result)) int loader_bzimage(const struct gmem *m, const uint8_t *img,
						       size_t len, struct load_result *out,
						       char *err, size_t errlen);

/* Place the initrd page-aligned as high as it may go in low RAM (below
 * res->initrd_max and above res->kernel_end).  Sets *gpa. */
__attribute__((warn_unused_result)) int loader_initrd(const struct gmem *m,
						      const struct load_result *res,
						      const uint8_t *data, size_t len,
						      uint64_t *gpa, char *err, size_t errlen);

/* e820 / PVH memory map of this VM: RAM [0, EBDA), reserved [EBDA, 1 MiB),
 * RAM [1 MiB, low end), RAM above 4 GiB if any.  Returns the number of
 * entries written (<= max) or -ENOSPC. */
struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type; /* 1 = RAM, 2 = reserved */
} __attribute__((packed));
#define E820_RAM 1
#define E820_RESERVED 2
int boot_e820(const struct gmem *m, struct e820_entry *out, unsigned max);

/* The byte that makes len bytes at p sum to 0 mod 256 (MP and ACPI
 * tables' checksums). */
uint8_t boot_checksum(const void *p, size_t len);

/* Identity page tables for the first 1 GiB in 2 MiB pages at
 * LAYOUT_PML4/PDPT/PD.  0 or -EFAULT (RAM too small). */
__attribute__((warn_unused_result)) int boot_page_tables(const struct gmem *m);

/* Kernel command line at LAYOUT_CMDLINE, NUL-terminated.  -E2BIG if
 * longer than max_len bytes (without the NUL). */
__attribute__((warn_unused_result)) int boot_cmdline(const struct gmem *m, const char *cmdline,
						     size_t len, size_t max_len);

/* PVH: struct hvm_start_info at LAYOUT_PVH_INFO with the memory map, the
 * command line pointer and the initrd as module 0 (initrd_size 0 = none). */
__attribute__((warn_unused_result)) int boot_pvh_info(const struct gmem *m, uint64_t initrd_gpa,
						      uint64_t initrd_size);

/* Linux: the zero page (struct boot_params) at LAYOUT_ZERO_PAGE with the
 * setup header (from the bzImage, or built for a vmlinux), e820 map,
 * cmdline pointer, initrd address and size, type_of_loader 0xff. */
__attribute__((warn_unused_result)) int boot_zero_page(const struct gmem *m,
						       const struct load_result *res,
						       uint64_t initrd_gpa, uint64_t initrd_size);

/* Intel MP table (spec 1.4) at LAYOUT_EBDA announcing nr_cpus CPUs, the
 * IOAPIC and all 24 of its pins as ISA IRQs (Linux kernels built with
 * CONFIG_X86_MPPARSE find APs and the IOAPIC through it).  -EINVAL for 0
 * CPUs, -E2BIG past 37 (it must end below 0xa0000), -EFAULT if RAM ends
 * below 640 KiB. */
__attribute__((warn_unused_result)) int boot_mptable(const struct gmem *m, unsigned nr_cpus);

/* A virtio-mmio device as the DSDT describes it. */
struct acpi_mmio_dev {
	uint64_t base; /* below 4 GiB */
	uint32_t size;
	uint32_t gsi;
};
#define ACPI_MAX_MMIO_DEVS 32

/* ACPI 6.x tables at LAYOUT_ACPI_*: RSDP (revision 2) -> XSDT -> FADT
 * (hardware-reduced, X_DSDT -> the DSDT) and MADT (one enabled local APIC
 * per vCPU, ACPI id = APIC id = index; the IOAPIC with id nr_cpus at
 * LAYOUT_IOAPIC, GSI base 0, as in the MP table).  The DSDT's \_SB holds
 * one "LNRO0005" device per virtio-mmio slot (its window and an
 * edge-triggered, active-high interrupt), which is how kernels without
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (Debian's) find them.  For kernels
 * built without CONFIG_X86_MPPARSE (Debian's).  -EINVAL for 0 CPUs or a
 * device above 4 GiB, -E2BIG past 254 CPUs or ACPI_MAX_MMIO_DEVS devices,
 * -EFAULT if RAM ends below 1 MiB. */
__attribute__((warn_unused_result)) int boot_acpi(const struct gmem *m, unsigned nr_cpus,
						  const struct acpi_mmio_dev *devs,
						  unsigned nr_devs);

#endif
