/* Bus: registration rules and lookup at range edges. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/bus.h"

static int last_off = -1;

static int handler(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	last_off = (int)off;
	if (!is_write)
		memset(data, (int)(uintptr_t)opaque, len);
	return 0;
}

static void test_register_and_find(void **state)
{
	struct bus b = {0};
	assert_int_equal(bus_register(&b, 0x3f8, 8, handler, (void *)1, "com1"), 0);
	assert_int_equal(bus_register(&b, 0x60, 1, handler, (void *)2, "kbd"), 0);
	assert_int_equal(bus_register(&b, 0x64, 1, handler, (void *)3, "cmd"), 0);
	assert_null(bus_find(&b, 0x3f7));
	assert_string_equal(bus_find(&b, 0x3f8)->name, "com1");
	assert_string_equal(bus_find(&b, 0x3ff)->name, "com1");
	assert_null(bus_find(&b, 0x400));
	assert_string_equal(bus_find(&b, 0x60)->name, "kbd");
	assert_null(bus_find(&b, 0x61));
	assert_string_equal(bus_find(&b, 0x64)->name, "cmd");
	/* sorted regardless of registration order */
	assert_true(b.r[0].base < b.r[1].base && b.r[1].base < b.r[2].base);
}

static void test_overlaps_refused(void **state)
{
	struct bus b = {0};
	assert_int_equal(bus_register(&b, 0x100, 0x10, handler, NULL, "a"), 0);
	assert_int_equal(bus_register(&b, 0x10f, 1, handler, NULL, "b"), -EEXIST);
	assert_int_equal(bus_register(&b, 0xff, 2, handler, NULL, "c"), -EEXIST);
	assert_int_equal(bus_register(&b, 0x0, 0x1000, handler, NULL, "d"), -EEXIST);
	assert_int_equal(bus_register(&b, 0x110, 1, handler, NULL, "e"), 0);
	assert_int_equal(bus_register(&b, 0xff, 1, handler, NULL, "f"), 0);
}

static void test_bad_ranges(void **state)
{
	struct bus b = {0};
	assert_int_equal(bus_register(&b, 0x100, 0, handler, NULL, "zero"), -EINVAL);
	assert_int_equal(bus_register(&b, UINT64_MAX - 1, 4, handler, NULL, "wrap"), -EINVAL);
	assert_int_equal(bus_register(&b, 0x100, 1, NULL, NULL, "nofn"), -EINVAL);
	/* the very top of the address space is fine when it does not wrap */
	assert_int_equal(bus_register(&b, UINT64_MAX - 3, 3, handler, NULL, "top"), 0);
	assert_non_null(bus_find(&b, UINT64_MAX - 1));
	assert_null(bus_find(&b, UINT64_MAX));
}

static void test_full(void **state)
{
	struct bus b = {0};
	for (unsigned i = 0; i < BUS_MAX_RANGES; i++)
		assert_int_equal(bus_register(&b, i * 16, 8, handler, NULL, "x"), 0);
	assert_int_equal(bus_register(&b, 0x100000, 8, handler, NULL, "y"), -ENOSPC);
	for (unsigned i = 0; i < BUS_MAX_RANGES; i++) {
		assert_non_null(bus_find(&b, i * 16 + 7));
		assert_null(bus_find(&b, i * 16 + 8));
	}
}

static void test_dispatch(void **state)
{
	struct bus b = {0};
	uint8_t d[8] = {0};
	assert_int_equal(bus_register(&b, 0x1000, 0x100, handler, (void *)0xab, "m"), 0);
	assert_int_equal(bus_dispatch(&b, 0x1010, d, 4, false), 0);
	assert_int_equal(last_off, 0x10);
	assert_int_equal(d[3], 0xab);
	assert_int_equal(bus_dispatch(&b, 0x2000, d, 4, false), -ENOENT);
	/* an access running past the end of its range is refused */
	assert_int_equal(bus_dispatch(&b, 0x10fe, d, 4, false), -ERANGE);
	assert_int_equal(bus_dispatch(&b, 0x10fc, d, 4, true), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_register_and_find), cmocka_unit_test(test_overlaps_refused),
	    cmocka_unit_test(test_bad_ranges),        cmocka_unit_test(test_full),
	    cmocka_unit_test(test_dispatch),
	};
	return cmocka_run_group_tests_name("bus", tests, NULL, NULL);
}
