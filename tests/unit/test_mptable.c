/* boot_mptable(): the Intel MP spec 1.4 table as Linux's mpparse.c reads
 * it: floating pointer found at 639 KiB, checksums, entry counts. */
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

#define NR_IRQS 24 /* every pin of KVM's IOAPIC */

#include "tests/unit/guest_mem_fixture.h"

/* Parse the table at LAYOUT_EBDA as a guest would and check everything. */
static void check_table(unsigned nr_cpus)
{
	/* Linux scans [639 KiB, 640 KiB) in 16-byte steps for "_MP_". */
	const uint8_t *mpf = gmem_ptr(&mem, 639 * 1024, 16);
	assert_non_null(mpf);
	assert_memory_equal(mpf, "_MP_", 4);
	assert_int_equal(mpf[8], 1);  /* length in paragraphs */
	assert_int_equal(mpf[9], 4);  /* spec 1.4 */
	assert_int_equal(mpf[11], 0); /* feature1: a table follows, no default config */
	assert_int_equal(sum(mpf, 16), 0);

	uint32_t phys = (uint32_t)get(mpf, 4, 4);
	assert_int_equal(phys, LAYOUT_EBDA + 16);
	const uint8_t *t = gmem_ptr(&mem, phys, 44);
	assert_non_null(t);
	assert_memory_equal(t, "PCMP", 4);
	unsigned len = (unsigned)get(t, 4, 2);
	unsigned count = (unsigned)get(t, 34, 2);
	assert_int_equal(t[6], 4);
	assert_int_equal(get(t, 36, 4), LAYOUT_LAPIC);
	assert_int_equal(get(t, 40, 2), 0); /* no extended table */
	assert_int_equal(len, 44 + 20 * nr_cpus + 8 + 8 + 8 * (NR_IRQS + 2));
	assert_int_equal(count, nr_cpus + 1 + 1 + NR_IRQS + 2);
	assert_true(phys + len <= 0xa0000);
	t = gmem_ptr(&mem, phys, len);
	assert_int_equal(sum(t, len), 0);

	unsigned cpus = 0, buses = 0, ioapics = 0, ints = 0, lints = 0, bsps = 0;
	size_t off = 44;
	for (unsigned e = 0; e < count; e++) {
		assert_true(off < len);
		const uint8_t *p = t + off;
		switch (p[0]) {
		case 0:				      /* processor */
			assert_int_equal(p[1], cpus); /* APIC id = index */
			assert_true(p[3] & 1);	      /* enabled */
			if (p[3] & 2)
				bsps++;
			assert_int_equal(!!(p[3] & 2), cpus == 0);
			cpus++;
			off += 20;
			break;
		case 1:
			assert_memory_equal(p + 2, "ISA   ", 6);
			buses++;
			off += 8;
			break;
		case 2:
			assert_int_equal(p[1], nr_cpus); /* IOAPIC id after the CPUs' */
			assert_int_equal(p[2], 0x11);
			assert_int_equal(p[3] & 1, 1);
			assert_int_equal(get(p, 4, 4), LAYOUT_IOAPIC);
			ioapics++;
			off += 8;
			break;
		case 3:
			assert_int_equal(p[1], 0);	 /* INT */
			assert_int_equal(p[4], 0);	 /* ISA bus */
			assert_int_equal(p[5], ints);	 /* source IRQ */
			assert_int_equal(p[6], nr_cpus); /* to the IOAPIC */
			assert_int_equal(p[7], ints);	 /* pin = IRQ */
			ints++;
			off += 8;
			break;
		case 4:
			if (lints == 0) {
				assert_int_equal(p[1], 3); /* ExtINT */
				assert_int_equal(p[7], 0); /* LINT0 */
			} else {
				assert_int_equal(p[1], 1); /* NMI */
				assert_int_equal(p[7], 1); /* LINT1 */
			}
			lints++;
			off += 8;
			break;
		default:
			fail_msg("entry %u has type %u", e, p[0]);
		}
	}
	assert_int_equal(off, len);
	assert_int_equal(cpus, nr_cpus);
	assert_int_equal(bsps, 1);
	assert_int_equal(buses, 1);
	assert_int_equal(ioapics, 1);
	assert_int_equal(ints, NR_IRQS);
	assert_int_equal(lints, 2);
}

static void test_one_cpu(void **state)
{
	assert_int_equal(boot_mptable(&mem, 1), 0);
	check_table(1);
}

static void test_two_cpus(void **state)
{
	assert_int_equal(boot_mptable(&mem, 2), 0);
	check_table(2);
}

static void test_32_cpus(void **state)
{
	assert_int_equal(boot_mptable(&mem, 32), 0);
	check_table(32);
}

static void test_limits(void **state)
{
	assert_int_equal(boot_mptable(&mem, 0), -EINVAL);
	assert_int_equal(boot_mptable(&mem, 255), -E2BIG);
	assert_int_equal(boot_mptable(&mem, 100000), -E2BIG);
	/* Every count up to the first refusal fits below 0xa0000. */
	unsigned n = 1;
	while (boot_mptable(&mem, n) == 0) {
		check_table(n);
		n++;
	}
	assert_int_equal(boot_mptable(&mem, n), -E2BIG);
	assert_true(n > 32);
	assert_true(16 + 44 + 20 * n + 16 + 8 * (NR_IRQS + 2) > 0x400);
}

static void test_no_ram_for_table(void **state)
{
	gmem_free(&mem);
	assert_int_equal(gmem_init(&mem, 0x80000), 0); /* 512 KiB: no 639 KiB */
	assert_int_equal(boot_mptable(&mem, 1), -EFAULT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_one_cpu, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_cpus, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_32_cpus, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_ram_for_table, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
