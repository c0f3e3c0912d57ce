/* Intel MultiProcessor Specification 1.4 table: how Linux finds the
 * application processors and the IOAPIC without ACPI.
 *
 * Layout (as Firecracker's mptable.rs): the MP floating pointer structure
 * (spec §4.1) at LAYOUT_EBDA, which Linux scans ("last KiB of base
 * memory", 639 KiB), then the configuration table header (§4.2) and its
 * entries (§4.3): processors, one ISA bus, the IOAPIC, one I/O interrupt
 * per IOAPIC pin and the two local interrupts.  e820 reserves
 * [LAYOUT_EBDA, 1 MiB); the table stays below 0xa0000. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/boot/loader.h"

#define MP_END 0xa0000ULL /* end of base memory */

struct mpf_intel {	   /* §4.1 MP floating pointer structure */
	char signature[4]; /* "_MP_" */
	uint32_t physptr;  /* configuration table address */
	uint8_t length;	   /* in 16-byte paragraphs: 1 */
	uint8_t spec_rev;  /* 4 = version 1.4 */
	uint8_t checksum;  /* all 16 bytes sum to 0 */
	uint8_t feature1;  /* 0: a configuration table is present */
	uint8_t feature2;  /* bit 7 IMCR; 0 = virtual wire mode */
	uint8_t feature3[3];
} __attribute__((packed));

struct mpc_table {	   /* §4.2 MP configuration table header */
	char signature[4]; /* "PCMP" */
	uint16_t length;   /* base table, header included */
	uint8_t spec_rev;
	uint8_t checksum; /* base table sums to 0 */
	char oem[8];
	char product[12];
	uint32_t oem_ptr;
	uint16_t oem_size;
	uint16_t count; /* entries in the base table */
	uint32_t lapic; /* local APIC address */
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mpc_cpu { /* §4.3.1 */
	uint8_t type;
	uint8_t apic_id;
	uint8_t apic_ver;
	uint8_t flags; /* bit 0 enabled, bit 1 bootstrap processor */
	uint32_t signature;
	uint32_t features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus { /* §4.3.2 */
	uint8_t type;
	uint8_t bus_id;
	char bus_type[6];
} __attribute__((packed));

struct mpc_ioapic { /* §4.3.3 */
	uint8_t type;
	uint8_t apic_id;
	uint8_t apic_ver;
	uint8_t flags; /* bit 0 usable */
	uint32_t addr;
} __attribute__((packed));

struct mpc_intsrc { /* §4.3.4 I/O and §4.3.5 local interrupt assignment */
	uint8_t type;
	uint8_t irq_type;
	uint16_t irq_flags; /* polarity / trigger; 0 = conforms to the bus */
	uint8_t src_bus;
	uint8_t src_irq;
	uint8_t dst_apic;
	uint8_t dst_pin; /* IOAPIC INTIN# or LINTIN# */
} __attribute__((packed));

_Static_assert(sizeof(struct mpf_intel) == 16, "floating pointer is 16 bytes");
_Static_assert(sizeof(struct mpc_table) == 44, "table header is 44 bytes");
_Static_assert(sizeof(struct mpc_cpu) == 20, "processor entry is 20 bytes");
_Static_assert(sizeof(struct mpc_bus) == 8, "bus entry is 8 bytes");
_Static_assert(sizeof(struct mpc_ioapic) == 8, "IOAPIC entry is 8 bytes");
_Static_assert(sizeof(struct mpc_intsrc) == 8, "interrupt entries are 8 bytes");

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_INTSRC = 3, MP_LINTSRC = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_SMI = 2, MP_EXTINT = 3 };
#define MP_SPEC_1_4 4
#define CPU_ENABLED 0x01
#define CPU_BSP 0x02
#define CPU_SIGNATURE 0x600 /* family 6 */
#define CPU_FEATURES 0x201  /* APIC | FPU, as Firecracker */
#define LAPIC_VERSION 0x14  /* KVM's in-kernel local APIC */
#define IOAPIC_VERSION 0x11 /* KVM's in-kernel IOAPIC */
#define IOAPIC_USABLE 0x01
#define ISA_BUS_ID 0
#define LINT_ALL_APICS 0xff
/* KVM's IOAPIC has 24 pins.  All are announced (as Firecracker does), not
 * only ISA IRQs 0-15: virtio-mmio devices sit on GSIs 5-23 and Linux
 * routes an IOAPIC pin only if the MP table names it. */
#define MP_IRQS 24

#define MP_FIXED_SIZE                                                                              \
	(sizeof(struct mpf_intel) + sizeof(struct mpc_table) + sizeof(struct mpc_bus) +            \
	 sizeof(struct mpc_ioapic) + (MP_IRQS + 2) * sizeof(struct mpc_intsrc))
#define MP_MAX_CPUS ((MP_END - LAYOUT_EBDA - MP_FIXED_SIZE) / sizeof(struct mpc_cpu))
_Static_assert(MP_MAX_CPUS >= 32, "the MP table area holds at least 32 CPUs");

int boot_mptable(const struct gmem *m, unsigned nr_cpus)
{
	uint8_t buf[MP_END - LAYOUT_EBDA];

	if (nr_cpus == 0)
		return -EINVAL;
	if (nr_cpus > MP_MAX_CPUS)
		return -E2BIG;
	memset(buf, 0, sizeof(buf));

	struct mpf_intel mpf = {
	    .signature = {'_', 'M', 'P', '_'},
	    .physptr = (uint32_t)(LAYOUT_EBDA + sizeof(mpf)),
	    .length = 1,
	    .spec_rev = MP_SPEC_1_4,
	};
	mpf.checksum = boot_checksum(&mpf, sizeof(mpf));
	memcpy(buf, &mpf, sizeof(mpf));
	size_t table = sizeof(mpf), off = table + sizeof(struct mpc_table);
	uint16_t count = 0;

	for (unsigned i = 0; i < nr_cpus; i++) {
		struct mpc_cpu c = {
		    .type = MP_PROCESSOR,
		    .apic_id = (uint8_t)i,
		    .apic_ver = LAPIC_VERSION,
		    .flags = CPU_ENABLED | (i == 0 ? CPU_BSP : 0),
		    .signature = CPU_SIGNATURE,
		    .features = CPU_FEATURES,
		};
		memcpy(buf + off, &c, sizeof(c));
		off += sizeof(c);
		count++;
	}
	struct mpc_bus bus = {.type = MP_BUS, .bus_id = ISA_BUS_ID};
	memcpy(bus.bus_type, "ISA   ", 6);
	memcpy(buf + off, &bus, sizeof(bus));
	off += sizeof(bus);
	count++;
	struct mpc_ioapic io = {
	    .type = MP_IOAPIC,
	    .apic_id = (uint8_t)nr_cpus,
	    .apic_ver = IOAPIC_VERSION,
	    .flags = IOAPIC_USABLE,
	    .addr = (uint32_t)LAYOUT_IOAPIC,
	};
	memcpy(buf + off, &io, sizeof(io));
	off += sizeof(io);
	count++;
	for (unsigned irq = 0; irq < MP_IRQS; irq++) {
		struct mpc_intsrc s = {
		    .type = MP_INTSRC,
		    .irq_type = MP_INT,
		    .src_bus = ISA_BUS_ID,
		    .src_irq = (uint8_t)irq,
		    .dst_apic = (uint8_t)nr_cpus,
		    .dst_pin = (uint8_t)irq,
		};
		memcpy(buf + off, &s, sizeof(s));
		off += sizeof(s);
		count++;
	}
	/* Virtual wire mode: the 8259's output on every LAPIC's LINT0, NMI on
	 * LINT1 (§5.1 default configuration). */
	const struct mpc_intsrc lint[2] = {
	    {.type = MP_LINTSRC, .irq_type = MP_EXTINT, .dst_apic = 0, .dst_pin = 0},
	    {.type = MP_LINTSRC, .irq_type = MP_NMI, .dst_apic = LINT_ALL_APICS, .dst_pin = 1},
	};
	memcpy(buf + off, lint, sizeof(lint));
	off += sizeof(lint);
	count += 2;

	struct mpc_table t = {
	    .signature = {'P', 'C', 'M', 'P'},
	    .length = (uint16_t)(off - table),
	    .spec_rev = MP_SPEC_1_4,
	    .oem = {'E', 'M', 'B', 'E', 'R', ' ', ' ', ' '},
	    .product = {'0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'},
	    .count = count,
	    .lapic = (uint32_t)LAYOUT_LAPIC,
	};
	memcpy(buf + table, &t, sizeof(t));
	buf[table + offsetof(struct mpc_table, checksum)] = boot_checksum(buf + table, off - table);
	return gmem_write(m, LAYOUT_EBDA, buf, off);
}
