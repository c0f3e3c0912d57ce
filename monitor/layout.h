/* The x86_64 machine model: fixed guest-physical addresses (Firecracker's,
 * so Firecracker-style guests boot unchanged).  See docs/architecture.md. */
#ifndef EMBER_LAYOUT_H
#define EMBER_LAYOUT_H

#define LAYOUT_GDT 0x500ULL
#define LAYOUT_IDT 0x520ULL
#define LAYOUT_PVH_INFO 0x6000ULL    /* struct hvm_start_info */
#define LAYOUT_PVH_MODLIST 0x6040ULL /* struct hvm_modlist_entry[] */
#define LAYOUT_PVH_MEMMAP 0x7000ULL  /* struct hvm_memmap_table_entry[] */
#define LAYOUT_ZERO_PAGE 0x7000ULL   /* struct boot_params (Linux boot) */
#define LAYOUT_BOOT_STACK 0x8ff0ULL
#define LAYOUT_PML4 0x9000ULL
#define LAYOUT_PDPT 0xa000ULL
#define LAYOUT_PD 0xb000ULL
#define LAYOUT_CMDLINE 0x20000ULL
#define LAYOUT_CMDLINE_MAX 2048ULL /* bytes including the NUL */
#define LAYOUT_EBDA 0x9fc00ULL	   /* MP table; reserved up to 1 MiB */
#define LAYOUT_HIMEM 0x100000ULL   /* 1 MiB: kernels load at or above */
#define LAYOUT_BIOS_END 0x100000ULL
/* ACPI tables (monitor/boot/acpi.c), in the BIOS area Linux scans for the
 * RSDP (0xE0000-0xFFFFF, 16-byte steps), inside e820's reserved
 * [LAYOUT_EBDA, 1 MiB).  The MADT grows with the vCPUs and ends below
 * the DSDT, which grows with the virtio devices and ends below
 * LAYOUT_ACPI_END. */
#define LAYOUT_ACPI_RSDP 0xE0000ULL
#define LAYOUT_ACPI_XSDT 0xE0040ULL
#define LAYOUT_ACPI_FADT 0xE0100ULL
#define LAYOUT_ACPI_MADT 0xE0280ULL
#define LAYOUT_ACPI_DSDT 0xE1000ULL /* after the MADT's room for 254 CPUs */
#define LAYOUT_ACPI_END 0xE2000ULL
/* Where the RSDP's address goes so Linux need not scan for it:
 * boot_params.acpi_rsdp_addr (zero page offset 0x070, u64). */
#define LAYOUT_ZERO_PAGE_RSDP (LAYOUT_ZERO_PAGE + 0x070ULL)
/* hvm_start_info.rsdp_paddr (offset 0x20, u64), the same for PVH. */
#define LAYOUT_PVH_INFO_RSDP (LAYOUT_PVH_INFO + 0x20ULL)

#define LAYOUT_MMIO_HOLE 0xC0000000ULL
#define LAYOUT_VIRTIO_MMIO 0xC0001000ULL
#define LAYOUT_IOAPIC 0xFEC00000ULL
#define LAYOUT_LAPIC 0xFEE00000ULL
#define LAYOUT_KVM_TSS 0xFFFBD000ULL
#define LAYOUT_KVM_IDENTITY 0xFFFFC000ULL

/* Legacy ports */
#define PORT_COM1 0x3f8
#define IRQ_COM1 4
#define PORT_I8042_DATA 0x60
#define PORT_I8042_CMD 0x64
#define IRQ_I8042 1
/* ember's exit port: a write of status S (1, 2 or 4 bytes; low 8 bits
 * used) stops the VM and ember exits with S.  Same port as QEMU's
 * isa-debug-exit, without its (S << 1) | 1 encoding. */
#define PORT_EXIT 0xf4

#endif
