/* Minimal ACPI 6.x tables: how kernels built without CONFIG_X86_MPPARSE
 * (Debian's) find the application processors and the IOAPIC.
 *
 * As Firecracker's (src/vmm/src/acpi/): an RSDP (§5.2.5, revision 2) in
 * the BIOS area Linux scans, an XSDT (§5.2.8) listing the FADT and the
 * MADT, a hardware-reduced FADT (§5.2.9: no PM timer, no SCI, no GPEs,
 * no FACS) whose X_DSDT points at a DSDT whose \_SB scope lists the
 * virtio-mmio devices (§6.1.5 _HID "LNRO0005", §6.4 _CRS), and a MADT
 * (§5.2.12) with one local APIC per vCPU and the IOAPIC.  No
 * interrupt source overrides: Linux then maps ISA IRQs 0-15 identity,
 * edge, active high, as the MP table does.  Every table sits at a fixed
 * address of layout.h inside e820's reserved [LAYOUT_EBDA, 1 MiB). */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/boot/loader.h"

struct acpi_rsdp {	   /* §5.2.5.3 */
	char signature[8]; /* "RSD PTR " */
	uint8_t checksum;  /* first 20 bytes sum to 0 */
	char oem_id[6];
	uint8_t revision;   /* 2: ACPI 2.0+ (XSDT) */
	uint32_t rsdt_addr; /* 0: no RSDT, the XSDT only */
	uint32_t length;    /* 36 */
	uint64_t xsdt_addr;
	uint8_t ext_checksum; /* all 36 bytes sum to 0 */
	uint8_t reserved[3];
} __attribute__((packed));

struct acpi_header { /* §5.2.6 system description table header */
	char signature[4];
	uint32_t length; /* whole table, header included */
	uint8_t revision;
	uint8_t checksum; /* whole table sums to 0 */
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_gas { /* §5.2.3.2 generic address structure */
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t address;
} __attribute__((packed));

struct acpi_fadt { /* §5.2.9, revision 6 */
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable;
	uint8_t acpi_disable;
	uint8_t s4bios_req;
	uint8_t pstate_cnt;
	uint32_t pm1a_evt_blk;
	uint32_t pm1b_evt_blk;
	uint32_t pm1a_cnt_blk;
	uint32_t pm1b_cnt_blk;
	uint32_t pm2_cnt_blk;
	uint32_t pm_tmr_blk;
	uint32_t gpe0_blk;
	uint32_t gpe1_blk;
	uint8_t pm1_evt_len;
	uint8_t pm1_cnt_len;
	uint8_t pm2_cnt_len;
	uint8_t pm_tmr_len;
	uint8_t gpe0_blk_len;
	uint8_t gpe1_blk_len;
	uint8_t gpe1_base;
	uint8_t cst_cnt;
	uint16_t p_lvl2_lat;
	uint16_t p_lvl3_lat;
	uint16_t flush_size;
	uint16_t flush_stride;
	uint8_t duty_offset;
	uint8_t duty_width;
	uint8_t day_alrm;
	uint8_t mon_alrm;
	uint8_t century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_revision;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk;
	struct acpi_gas x_pm1b_evt_blk;
	struct acpi_gas x_pm1a_cnt_blk;
	struct acpi_gas x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk;
	struct acpi_gas x_pm_tmr_blk;
	struct acpi_gas x_gpe0_blk;
	struct acpi_gas x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	uint64_t hypervisor_vendor_id;
} __attribute__((packed));

struct acpi_madt { /* §5.2.12 */
	struct acpi_header h;
	uint32_t lapic_addr;
	uint32_t flags; /* bit 0 PCAT_COMPAT */
} __attribute__((packed));

struct madt_lapic { /* §5.2.12.2 processor local APIC, type 0 */
	uint8_t type;
	uint8_t length; /* 8 */
	uint8_t acpi_uid;
	uint8_t apic_id;
	uint32_t flags; /* bit 0 enabled */
} __attribute__((packed));

struct madt_ioapic { /* §5.2.12.3 I/O APIC, type 1 */
	uint8_t type;
	uint8_t length; /* 12 */
	uint8_t ioapic_id;
	uint8_t reserved;
	uint32_t addr;
	uint32_t gsi_base;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP is 36 bytes");
_Static_assert(sizeof(struct acpi_header) == 36, "SDT header is 36 bytes");
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS is 12 bytes");
_Static_assert(offsetof(struct acpi_fadt, iapc_boot_arch) == 109, "FADT IAPC_BOOT_ARCH");
_Static_assert(offsetof(struct acpi_fadt, flags) == 112, "FADT flags");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT X_DSDT");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6 is 276 bytes");
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT header is 44 bytes");
_Static_assert(sizeof(struct madt_lapic) == 8, "local APIC entry is 8 bytes");
_Static_assert(sizeof(struct madt_ioapic) == 12, "IOAPIC entry is 12 bytes");

#define OEM_ID "EMBER "
#define OEM_REVISION 1
#define CREATOR_ID "EMBR"
#define CREATOR_REVISION 1

/* FADT flags (§5.2.9 table 5.10) */
#define FADT_PWR_BUTTON (1u << 4)	/* no fixed-feature power button */
#define FADT_SLP_BUTTON (1u << 5)	/* no fixed-feature sleep button */
#define FADT_HW_REDUCED_ACPI (1u << 20) /* no PM timer, SCI, GPE, FACS */
/* IA-PC boot architecture flags (§5.2.9.3), as Firecracker sets them */
#define IAPC_VGA_NOT_PRESENT (1u << 2)
#define IAPC_MSI_NOT_PRESENT (1u << 3)
#define IAPC_PCIE_ASPM_CONTROLS (1u << 4)
#define FADT_REVISION 6
#define FADT_MINOR_REVISION 5 /* ACPI 6.5 */
#define MADT_REVISION 6
#define DSDT_REVISION 2 /* 64-bit AML integers */
#define XSDT_REVISION 1
#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_ENABLED 1

/* AML (ACPI 6.5 §20) for the DSDT's body:
 *   Scope (\_SB) {
 *     Device (VR00) {
 *       Name (_HID, "LNRO0005")
 *       Name (_UID, 0)
 *       Name (_CRS, ResourceTemplate () {
 *         Memory32Fixed (ReadWrite, base, size)
 *         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }
 *       })
 *     } ...
 *   } */
#define AML_SCOPE 0x10
#define AML_NAME 0x08
#define AML_BYTE 0x0A
#define AML_STRING 0x0D
#define AML_BUFFER 0x11
#define AML_EXT 0x5B
#define AML_DEVICE 0x82
#define AML_DEVICE_LEN 61 /* one device, PkgLength included: see mmio_device() */
#define AML_MAX (2 + 3 + 5 + ACPI_MAX_MMIO_DEVS * (2 + AML_DEVICE_LEN))

#define ACPI_MAX_CPUS 254 /* 8-bit APIC ids; the IOAPIC takes nr_cpus */
_Static_assert(LAYOUT_ACPI_MADT + sizeof(struct acpi_madt) + ACPI_MAX_CPUS * 8 + 12 <=
		   LAYOUT_ACPI_DSDT,
	       "the MADT fits below the DSDT");
_Static_assert(LAYOUT_ACPI_DSDT + sizeof(struct acpi_header) + AML_MAX <= LAYOUT_ACPI_END,
	       "the DSDT fits below LAYOUT_ACPI_END");

/* PkgLength (§20.2.4) for a package of body bytes: 1 byte up to 63 in
 * all, else 2 (up to 4095).  Returns the bytes written. */
static size_t pkg_length(uint8_t *p, size_t body)
{
	if (body + 1 < 64) {
		p[0] = (uint8_t)(body + 1);
		return 1;
	}
	size_t len = body + 2;
	p[0] = (uint8_t)(0x40 | (len & 0xF));
	p[1] = (uint8_t)(len >> 4);
	return 2;
}

static size_t name_seg(uint8_t *p, const char seg[4])
{
	memcpy(p, seg, 4);
	return 4;
}

/* Device (VRnn) for one virtio-mmio slot; returns its length. */
static size_t mmio_device(uint8_t *p, unsigned i, const struct acpi_mmio_dev *d)
{
	uint8_t body[AML_DEVICE_LEN];
	size_t n = 0;
	char seg[5] = {'V', 'R', (char)('0' + i / 10), (char)('0' + i % 10), 0};
	n += name_seg(body + n, seg);
	body[n++] = AML_NAME;
	n += name_seg(body + n, "_HID");
	body[n++] = AML_STRING;
	memcpy(body + n, "LNRO0005", 9);
	n += 9;
	body[n++] = AML_NAME;
	n += name_seg(body + n, "_UID");
	body[n++] = AML_BYTE;
	body[n++] = (uint8_t)i;
	body[n++] = AML_NAME;
	n += name_seg(body + n, "_CRS");
	/* Buffer: Memory32Fixed (12), Extended Interrupt (9), End Tag (2) */
	uint8_t res[23] = {0x86, 9, 0, 1}; /* §6.4.3.4: read-write */
	uint32_t base = (uint32_t)d->base, gsi = d->gsi;
	memcpy(res + 4, &base, 4);
	memcpy(res + 8, &d->size, 4);
	res[12] = 0x89; /* §6.4.3.6 */
	res[13] = 6;
	res[14] = 0;
	res[15] = 0x03; /* consumer, edge-triggered, active high, exclusive */
	res[16] = 1;
	memcpy(res + 17, &gsi, 4);
	res[21] = 0x79; /* End Tag, checksum 0: "treat as correct" */
	res[22] = 0;
	body[n++] = AML_BUFFER;
	n += pkg_length(body + n, 2 + sizeof(res));
	body[n++] = AML_BYTE;
	body[n++] = sizeof(res);
	memcpy(body + n, res, sizeof(res));
	n += sizeof(res);

	size_t o = 0;
	p[o++] = AML_EXT;
	p[o++] = AML_DEVICE;
	o += pkg_length(p + o, n);
	memcpy(p + o, body, n);
	return o + n;
}

/* Scope (\_SB) with the devices; returns its length. */
static size_t dsdt_body(uint8_t *p, const struct acpi_mmio_dev *devs, unsigned nr)
{
	uint8_t inner[AML_MAX];
	size_t n = 0;
	inner[n++] = '\\';
	n += name_seg(inner + n, "_SB_");
	for (unsigned i = 0; i < nr; i++)
		n += mmio_device(inner + n, i, &devs[i]);
	size_t o = 0;
	p[o++] = AML_SCOPE;
	o += pkg_length(p + o, n);
	memcpy(p + o, inner, n);
	return o + n;
}
_Static_assert(LAYOUT_ACPI_RSDP % 16 == 0 && LAYOUT_ACPI_RSDP >= 0xE0000 &&
		   LAYOUT_ACPI_END <= LAYOUT_BIOS_END && LAYOUT_ACPI_RSDP >= LAYOUT_EBDA,
	       "the RSDP sits where Linux scans, inside the reserved range");
_Static_assert(LAYOUT_ACPI_RSDP + sizeof(struct acpi_rsdp) <= LAYOUT_ACPI_XSDT &&
		   LAYOUT_ACPI_XSDT + sizeof(struct acpi_header) + 2 * 8 <= LAYOUT_ACPI_FADT &&
		   LAYOUT_ACPI_FADT + sizeof(struct acpi_fadt) <= LAYOUT_ACPI_MADT,
	       "ACPI tables do not overlap");

static void header(struct acpi_header *h, const char sig[4], uint32_t len, uint8_t rev,
		   const char table_id[8])
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, OEM_ID, 6);
	memcpy(h->oem_table_id, table_id, 8);
	h->oem_revision = OEM_REVISION;
	memcpy(h->creator_id, CREATOR_ID, 4);
	h->creator_revision = CREATOR_REVISION;
}

/* The table's header is at the start of buf; fill in its checksum. */
static void seal(uint8_t *buf, size_t len)
{
	buf[offsetof(struct acpi_header, checksum)] = 0;
	buf[offsetof(struct acpi_header, checksum)] = boot_checksum(buf, len);
}

int boot_acpi(const struct gmem *m, unsigned nr_cpus, const struct acpi_mmio_dev *devs,
	      unsigned nr_devs)
{
	if (nr_cpus == 0)
		return -EINVAL;
	if (nr_cpus > ACPI_MAX_CPUS || nr_devs > ACPI_MAX_MMIO_DEVS)
		return -E2BIG;
	for (unsigned i = 0; i < nr_devs; i++)
		if (devs[i].base > UINT32_MAX || devs[i].size > UINT32_MAX - devs[i].base)
			return -EINVAL;
	/* The whole area must be RAM (and e820 reserves it only then). */
	uint8_t *area = gmem_ptr(m, LAYOUT_ACPI_RSDP, LAYOUT_ACPI_END - LAYOUT_ACPI_RSDP);
	if (gmem_low_end(m) < LAYOUT_BIOS_END || !area)
		return -EFAULT;

	/* DSDT */
	uint8_t dsdt[sizeof(struct acpi_header) + AML_MAX];
	memset(dsdt, 0, sizeof(dsdt));
	size_t dsdt_len = sizeof(struct acpi_header) +
			  dsdt_body(dsdt + sizeof(struct acpi_header), devs, nr_devs);
	struct acpi_header dh = {0};
	header(&dh, "DSDT", (uint32_t)dsdt_len, DSDT_REVISION, "EMBRDSDT");
	memcpy(dsdt, &dh, sizeof(dh));
	seal(dsdt, dsdt_len);

	/* FADT: hardware-reduced; DSDT through the 64-bit X_DSDT only. */
	struct acpi_fadt fadt;
	memset(&fadt, 0, sizeof(fadt));
	header(&fadt.h, "FACP", sizeof(fadt), FADT_REVISION, "EMBRFACP");
	fadt.flags = FADT_HW_REDUCED_ACPI | FADT_PWR_BUTTON | FADT_SLP_BUTTON;
	fadt.iapc_boot_arch = IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_PRESENT | IAPC_PCIE_ASPM_CONTROLS;
	fadt.minor_revision = FADT_MINOR_REVISION;
	fadt.x_dsdt = LAYOUT_ACPI_DSDT;
	seal((uint8_t *)&fadt, sizeof(fadt));

	/* MADT */
	uint8_t madt[sizeof(struct acpi_madt) + ACPI_MAX_CPUS * sizeof(struct madt_lapic) +
		     sizeof(struct madt_ioapic)];
	memset(madt, 0, sizeof(madt));
	size_t off = sizeof(struct acpi_madt);
	for (unsigned i = 0; i < nr_cpus; i++) {
		struct madt_lapic l = {
		    .type = MADT_LAPIC,
		    .length = sizeof(l),
		    .acpi_uid = (uint8_t)i,
		    .apic_id = (uint8_t)i,
		    .flags = MADT_ENABLED,
		};
		memcpy(madt + off, &l, sizeof(l));
		off += sizeof(l);
	}
	struct madt_ioapic io = {
	    .type = MADT_IOAPIC,
	    .length = sizeof(io),
	    .ioapic_id = (uint8_t)nr_cpus, /* as the MP table */
	    .addr = (uint32_t)LAYOUT_IOAPIC,
	    .gsi_base = 0,
	};
	memcpy(madt + off, &io, sizeof(io));
	off += sizeof(io);
	struct acpi_madt mh;
	memset(&mh, 0, sizeof(mh));
	header(&mh.h, "APIC", (uint32_t)off, MADT_REVISION, "EMBRAPIC");
	mh.lapic_addr = (uint32_t)LAYOUT_LAPIC;
	mh.flags = 0; /* no dual 8259s to mask: hardware-reduced, as Firecracker */
	memcpy(madt, &mh, sizeof(mh));
	seal(madt, off);

	/* XSDT: FADT, MADT */
	uint8_t xsdt[sizeof(struct acpi_header) + 2 * sizeof(uint64_t)];
	memset(xsdt, 0, sizeof(xsdt));
	struct acpi_header xh = {0};
	header(&xh, "XSDT", sizeof(xsdt), XSDT_REVISION, "EMBRXSDT");
	memcpy(xsdt, &xh, sizeof(xh));
	const uint64_t entries[2] = {LAYOUT_ACPI_FADT, LAYOUT_ACPI_MADT};
	memcpy(xsdt + sizeof(xh), entries, sizeof(entries));
	seal(xsdt, sizeof(xsdt));

	/* RSDP */
	struct acpi_rsdp rsdp;
	memset(&rsdp, 0, sizeof(rsdp));
	memcpy(rsdp.signature, "RSD PTR ", 8);
	memcpy(rsdp.oem_id, OEM_ID, 6);
	rsdp.revision = 2;
	rsdp.length = sizeof(rsdp);
	rsdp.xsdt_addr = LAYOUT_ACPI_XSDT;
	rsdp.checksum = boot_checksum(&rsdp, 20);
	rsdp.ext_checksum = boot_checksum(&rsdp, sizeof(rsdp));

	/* Clear the area first: no stale bytes between the tables. */
	memset(area, 0, LAYOUT_ACPI_END - LAYOUT_ACPI_RSDP);
	if (gmem_write(m, LAYOUT_ACPI_DSDT, dsdt, dsdt_len) ||
	    gmem_write(m, LAYOUT_ACPI_FADT, &fadt, sizeof(fadt)) ||
	    gmem_write(m, LAYOUT_ACPI_MADT, madt, off) ||
	    gmem_write(m, LAYOUT_ACPI_XSDT, xsdt, sizeof(xsdt)) ||
	    gmem_write(m, LAYOUT_ACPI_RSDP, &rsdp, sizeof(rsdp)))
		return -EFAULT;
	return 0;
}
