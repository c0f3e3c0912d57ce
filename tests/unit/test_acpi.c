/* boot_acpi(): the ACPI tables as Linux's early scan and ACPICA read them:
 * RSDP found 16-byte aligned in 0xE0000-0xFFFFF, checksums, XSDT -> FADT
 * (-> DSDT) and MADT, one local APIC per vCPU and one IOAPIC. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/guest_mem.h"
#include "monitor/layout.h"
#include "monitor/boot/loader.h"

#include "tests/unit/guest_mem_fixture.h"

/* Linux's acpi_find_root_pointer(): "RSD PTR " on a 16-byte boundary in
 * the BIOS area, checksum over 20 bytes (and 36 for revision 2). */
static uint64_t find_rsdp(void)
{
	for (uint64_t a = 0xE0000; a < 0x100000; a += 16) {
		const uint8_t *p = gmem_ptr(&mem, a, 36);
		assert_non_null(p);
		if (memcmp(p, "RSD PTR ", 8) == 0 && sum(p, 20) == 0)
			return a;
	}
	fail_msg("no RSDP in 0xE0000-0xFFFFF");
	return 0;
}

/* AML PkgLength (ACPI §20.2.4) at p: its value; *n = its bytes. */
static uint32_t pkg_len(const uint8_t *p, unsigned *n)
{
	unsigned extra = p[0] >> 6;
	uint32_t v = extra ? p[0] & 0xF : p[0] & 0x3F;
	for (unsigned i = 0; i < extra; i++)
		v |= (uint32_t)p[1 + i] << (4 + 8 * i);
	*n = 1 + extra;
	return v;
}

/* A table's header: signature, length, checksum, OEM id; inside the
 * reserved BIOS range [LAYOUT_EBDA, 1 MiB).  Returns its length. */
static const uint8_t *table(uint64_t gpa, const char *sig, uint32_t *len)
{
	assert_true(gpa >= LAYOUT_EBDA && gpa + 36 <= LAYOUT_BIOS_END);
	const uint8_t *h = gmem_ptr(&mem, gpa, 36);
	assert_non_null(h);
	assert_memory_equal(h, sig, 4);
	*len = (uint32_t)get(h, 4, 4);
	assert_true(*len >= 36);
	assert_true(gpa + *len <= LAYOUT_BIOS_END);
	assert_memory_equal(h + 10, "EMBER ", 6);
	h = gmem_ptr(&mem, gpa, *len);
	assert_int_equal(sum(h, *len), 0);
	return h;
}

static void check_tables(unsigned nr_cpus)
{
	uint64_t rsdp_gpa = find_rsdp();
	assert_int_equal(rsdp_gpa, LAYOUT_ACPI_RSDP);
	assert_int_equal(rsdp_gpa % 16, 0);
	const uint8_t *rsdp = gmem_ptr(&mem, rsdp_gpa, 36);
	assert_int_equal(rsdp[15], 2);		/* revision */
	assert_int_equal(get(rsdp, 20, 4), 36); /* length */
	assert_int_equal(sum(rsdp, 36), 0);	/* extended checksum */
	assert_memory_equal(rsdp + 9, "EMBER ", 6);

	uint32_t len;
	const uint8_t *xsdt = table(get(rsdp, 24, 8), "XSDT", &len);
	assert_int_equal(len, 36 + 2 * 8);
	uint64_t fadt_gpa = 0, madt_gpa = 0;
	for (uint32_t off = 36; off < len; off += 8) {
		uint64_t a = get(xsdt, off, 8);
		const uint8_t *h = gmem_ptr(&mem, a, 4);
		assert_non_null(h);
		if (memcmp(h, "FACP", 4) == 0)
			fadt_gpa = a;
		else if (memcmp(h, "APIC", 4) == 0)
			madt_gpa = a;
		else
			fail_msg("XSDT entry at %#llx is %.4s", (unsigned long long)a, h);
	}
	assert_int_equal(fadt_gpa, LAYOUT_ACPI_FADT);
	assert_int_equal(madt_gpa, LAYOUT_ACPI_MADT);

	const uint8_t *fadt = table(fadt_gpa, "FACP", &len);
	assert_int_equal(len, 276);
	assert_int_equal(fadt[8], 6);			    /* revision */
	assert_true(get(fadt, 112, 4) & (1u << 20));	    /* HW_REDUCED_ACPI */
	assert_int_equal(get(fadt, 109, 2) & (1u << 2), 4); /* VGA not present */
	assert_int_equal(get(fadt, 46, 2), 0);		    /* no SCI */
	assert_int_equal(get(fadt, 76, 4), 0);		    /* no PM timer */
	uint64_t dsdt_gpa = get(fadt, 140, 8);		    /* X_DSDT */
	assert_int_equal(dsdt_gpa, LAYOUT_ACPI_DSDT);

	const uint8_t *dsdt = table(dsdt_gpa, "DSDT", &len);
	assert_true(len > 36);
	assert_int_equal(dsdt[36], 0x10); /* ScopeOp */
	unsigned n;
	assert_int_equal(pkg_len(dsdt + 37, &n), len - 37);
	assert_memory_equal(dsdt + 37 + n, "\\_SB_", 5);

	const uint8_t *madt = table(madt_gpa, "APIC", &len);
	assert_int_equal(get(madt, 36, 4), LAYOUT_LAPIC);
	assert_int_equal(len, 44 + 8 * nr_cpus + 12);
	assert_true(madt_gpa + len <= LAYOUT_ACPI_END);
	unsigned cpus = 0, ioapics = 0;
	for (uint32_t off = 44; off < len;) {
		const uint8_t *e = madt + off;
		assert_true(off + 2 <= len && e[1] >= 2 && off + e[1] <= len);
		switch (e[0]) {
		case 0: /* processor local APIC */
			assert_int_equal(e[1], 8);
			assert_int_equal(e[2], cpus); /* ACPI uid */
			assert_int_equal(e[3], cpus); /* APIC id */
			assert_int_equal(get(e, 4, 4), 1);
			cpus++;
			break;
		case 1: /* IOAPIC */
			assert_int_equal(e[1], 12);
			assert_int_equal(e[2], nr_cpus); /* id, as the MP table */
			assert_int_equal(get(e, 4, 4), LAYOUT_IOAPIC);
			assert_int_equal(get(e, 8, 4), 0); /* GSI base */
			ioapics++;
			break;
		default:
			fail_msg("MADT entry type %u", e[0]);
		}
		off += e[1];
	}
	assert_int_equal(cpus, nr_cpus);
	assert_int_equal(ioapics, 1);
}

static void test_one_cpu(void **state)
{
	assert_int_equal(boot_acpi(&mem, 1, NULL, 0), 0);
	check_tables(1);
}

static void test_two_cpus(void **state)
{
	assert_int_equal(boot_acpi(&mem, 2, NULL, 0), 0);
	check_tables(2);
}

static void test_32_cpus(void **state)
{
	assert_int_equal(boot_acpi(&mem, 32, NULL, 0), 0);
	check_tables(32);
	/* Fewer CPUs after more: no stale entries survive. */
	assert_int_equal(boot_acpi(&mem, 3, NULL, 0), 0);
	check_tables(3);
}

static void test_max_cpus(void **state)
{
	assert_int_equal(boot_acpi(&mem, 254, NULL, 0), 0);
	check_tables(254);
}

static void test_refusals(void **state)
{
	assert_int_equal(boot_acpi(&mem, 0, NULL, 0), -EINVAL);
	assert_int_equal(boot_acpi(&mem, 255, NULL, 0), -E2BIG);
}

static void test_too_small(void **state)
{
	struct gmem small;
	/* RAM ending inside the BIOS area, and below it. */
	assert_int_equal(gmem_init(&small, 0xE0000 + 4096), 0);
	assert_int_equal(boot_acpi(&small, 1, NULL, 0), -EFAULT);
	gmem_free(&small);
	assert_int_equal(gmem_init(&small, 512 * 1024), 0);
	assert_int_equal(boot_acpi(&small, 1, NULL, 0), -EFAULT);
	gmem_free(&small);
	/* Exactly 1 MiB is enough. */
	assert_int_equal(gmem_init(&small, MiB), 0);
	assert_int_equal(boot_acpi(&small, 1, NULL, 0), 0);
	gmem_free(&small);
}

/* The DSDT's \_SB scope holds one LNRO0005 device per virtio-mmio slot,
 * with the slot's window and its edge-triggered interrupt, each device's
 * package exactly as long as its PkgLength says. */
static void test_virtio_mmio_devices(void **state)
{
	const struct acpi_mmio_dev devs[3] = {
	    {0xC0001000, 0x1000, 5}, {0xC0002000, 0x1000, 6}, {0xC0003000, 0x1000, 7}};
	assert_int_equal(boot_acpi(&mem, 2, devs, 3), 0);
	check_tables(2);
	uint32_t len;
	const uint8_t *dsdt = table(LAYOUT_ACPI_DSDT, "DSDT", &len);
	assert_true(LAYOUT_ACPI_DSDT + len <= LAYOUT_ACPI_END);
	const uint8_t *p = dsdt + 36;
	unsigned n;
	assert_int_equal(p[0], 0x10); /* ScopeOp */
	uint32_t scope = pkg_len(p + 1, &n);
	assert_int_equal(1 + scope, len - 36);
	p += 1 + n;
	assert_memory_equal(p, "\\_SB_", 5);
	p += 5;
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(p[0], 0x5B); /* DeviceOp */
		assert_int_equal(p[1], 0x82);
		uint32_t dlen = pkg_len(p + 2, &n);
		const uint8_t *d = p + 2 + n, *end = p + 2 + dlen;
		char seg[5] = {'V', 'R', '0', (char)('0' + i), 0};
		assert_memory_equal(d, seg, 4);
		/* Name (_HID, "LNRO0005") */
		assert_memory_equal(d + 4, "\x08_HID\x0dLNRO0005", 15);
		/* Name (_UID, i) */
		assert_memory_equal(d + 19, "\x08_UID\x0a", 6);
		assert_int_equal(d[25], i);
		/* Name (_CRS, Buffer) */
		assert_memory_equal(d + 26, "\x08_CRS\x11", 6);
		const uint8_t *crs = d + 26 + 6 + 1 + 2; /* PkgLength, BufferSize */
		assert_int_equal(d[33], 0x0A);
		assert_int_equal(d[34], 23);
		assert_int_equal(crs[0], 0x86); /* Memory32Fixed */
		assert_int_equal(get(crs, 4, 4), devs[i].base);
		assert_int_equal(get(crs, 8, 4), 0x1000);
		assert_int_equal(crs[12], 0x89); /* Extended Interrupt */
		assert_int_equal(crs[15], 0x03); /* consumer, edge, active high */
		assert_int_equal(crs[16], 1);
		assert_int_equal(get(crs, 17, 4), devs[i].gsi);
		assert_int_equal(crs[21], 0x79); /* End Tag */
		assert_ptr_equal(crs + 23, end);
		p = end;
	}
	assert_ptr_equal(p, dsdt + len);
	/* Fewer devices after more: the DSDT shrinks, nothing stale. */
	assert_int_equal(boot_acpi(&mem, 1, NULL, 0), 0);
	dsdt = table(LAYOUT_ACPI_DSDT, "DSDT", &len);
	assert_int_equal(len, 36 + 7);
	/* A window above 4 GiB cannot be described by Memory32Fixed. */
	const struct acpi_mmio_dev high = {0x100000000ULL, 0x1000, 5};
	assert_int_equal(boot_acpi(&mem, 1, &high, 1), -EINVAL);
	struct acpi_mmio_dev many[ACPI_MAX_MMIO_DEVS + 1];
	for (unsigned i = 0; i <= ACPI_MAX_MMIO_DEVS; i++)
		many[i] = (struct acpi_mmio_dev){0xC0001000 + i * 0x1000, 0x1000, 5};
	assert_int_equal(boot_acpi(&mem, 1, many, ACPI_MAX_MMIO_DEVS), 0);
	check_tables(1);
	assert_int_equal(boot_acpi(&mem, 1, many, ACPI_MAX_MMIO_DEVS + 1), -E2BIG);
}

/* The e820 map reserves every byte the tables use. */
static void test_reserved_in_e820(void **state)
{
	struct e820_entry e[8];
	int n = boot_e820(&mem, e, 8);
	assert_true(n > 0);
	bool covered = false;
	for (int i = 0; i < n; i++) {
		if (e[i].type == E820_RESERVED && e[i].addr <= LAYOUT_ACPI_RSDP &&
		    e[i].addr + e[i].size >= LAYOUT_ACPI_END)
			covered = true;
		if (e[i].type == E820_RAM)
			assert_true(e[i].addr + e[i].size <= LAYOUT_ACPI_RSDP ||
				    e[i].addr >= LAYOUT_ACPI_END);
	}
	assert_true(covered);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_cpu),	     cmocka_unit_test(test_two_cpus),
	    cmocka_unit_test(test_32_cpus),	     cmocka_unit_test(test_max_cpus),
	    cmocka_unit_test(test_refusals),	     cmocka_unit_test(test_too_small),
	    cmocka_unit_test(test_reserved_in_e820), cmocka_unit_test(test_virtio_mmio_devices),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
