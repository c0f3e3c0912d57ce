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

#include "monitor/guest_mem.h"
#include "monitor/layout.h"
#include "monitor/loader.h"

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
	assert_int_equal(dsdt[37], len - 37);
	assert_memory_equal(dsdt + 38, "\\_SB_", 5);

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
	assert_int_equal(boot_acpi(&mem, 1), 0);
	check_tables(1);
}

static void test_two_cpus(void **state)
{
	assert_int_equal(boot_acpi(&mem, 2), 0);
	check_tables(2);
}

static void test_32_cpus(void **state)
{
	assert_int_equal(boot_acpi(&mem, 32), 0);
	check_tables(32);
	/* Fewer CPUs after more: no stale entries survive. */
	assert_int_equal(boot_acpi(&mem, 3), 0);
	check_tables(3);
}

static void test_max_cpus(void **state)
{
	assert_int_equal(boot_acpi(&mem, 254), 0);
	check_tables(254);
}

static void test_refusals(void **state)
{
	assert_int_equal(boot_acpi(&mem, 0), -EINVAL);
	assert_int_equal(boot_acpi(&mem, 255), -E2BIG);
}

static void test_too_small(void **state)
{
	struct gmem small;
	/* RAM ending inside the BIOS area, and below it. */
	assert_int_equal(gmem_init(&small, 0xE0000 + 4096), 0);
	assert_int_equal(boot_acpi(&small, 1), -EFAULT);
	gmem_free(&small);
	assert_int_equal(gmem_init(&small, 512 * 1024), 0);
	assert_int_equal(boot_acpi(&small, 1), -EFAULT);
	gmem_free(&small);
	/* Exactly 1 MiB is enough. */
	assert_int_equal(gmem_init(&small, MiB), 0);
	assert_int_equal(boot_acpi(&small, 1), 0);
	gmem_free(&small);
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
	    cmocka_unit_test(test_reserved_in_e820),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
