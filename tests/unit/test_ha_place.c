/* Cluster placement (ha/emberd/cluster_place.h): most free memory wins,
 * ties by vCPUs then name, rules ("hosts", "avoid_hosts") never broken,
 * the reason when nothing fits, and a batch spreads over the hosts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ha/emberd/cluster_place.h"

#define MiB (1ull << 20)

static void test_most_free_memory(void **state)
{
	struct ed_place_host h[] = {
	    {"a", 1024 * MiB, 900 * MiB, 8, 1},
	    {"b", 1024 * MiB, 100 * MiB, 8, 1},
	    {"c", 1024 * MiB, 500 * MiB, 8, 1},
	};
	struct ed_place_vm vm = {"v", 64 * MiB, 1, NULL, NULL};
	char why[256] = "";
	assert_int_equal(ed_place(h, 3, &vm, why, sizeof(why)), 1);
}

static void test_ties_by_cpus_then_name(void **state)
{
	struct ed_place_host h[] = {
	    {"c", 1024 * MiB, 0, 8, 0},
	    {"b", 1024 * MiB, 0, 8, 0},
	    {"a", 1024 * MiB, 0, 8, 2},
	};
	struct ed_place_vm vm = {"v", 64 * MiB, 1, NULL, NULL};
	char why[256] = "";
	/* a has fewer free vCPUs; b and c tie: b by name */
	assert_int_equal(ed_place(h, 3, &vm, why, sizeof(why)), 1);
	/* the same answer whatever order the hosts come in */
	struct ed_place_host r[] = {h[2], h[0], h[1]};
	assert_string_equal(r[ed_place(r, 3, &vm, why, sizeof(why))].name, "b");
}

static void test_must_and_avoid(void **state)
{
	struct ed_place_host h[] = {
	    {"a", 1024 * MiB, 0, 8, 0},
	    {"b", 1024 * MiB, 500 * MiB, 8, 0},
	    {"c", 1024 * MiB, 900 * MiB, 8, 0},
	};
	const char *const must[] = {"b", "c", NULL};
	const char *const avoid[] = {"b", NULL};
	const char *const none[] = {NULL};
	char why[256] = "";
	struct ed_place_vm vm = {"v", 64 * MiB, 1, must, none};
	assert_int_equal(ed_place(h, 3, &vm, why, sizeof(why)), 1);
	vm.avoid = avoid;
	assert_int_equal(ed_place(h, 3, &vm, why, sizeof(why)), 2);
	vm.must = none;
	assert_int_equal(ed_place(h, 3, &vm, why, sizeof(why)), 0);
}

static void test_unplaced_reasons(void **state)
{
	struct ed_place_host h[] = {
	    {"b", 1024 * MiB, 1000 * MiB, 8, 0},
	    {"c", 1024 * MiB, 0, 1, 1},
	};
	const char *const must_a[] = {"a", NULL};
	const char *const must_ad[] = {"a", "d", NULL};
	const char *const avoid_bc[] = {"b", "c", NULL};
	char why[256] = "";
	struct ed_place_vm vm = {"v", 64 * MiB, 1, must_a, NULL};
	assert_int_equal(ed_place(h, 2, &vm, why, sizeof(why)), -1);
	assert_string_equal(why, "hosts = a: a is down");
	vm.must = must_ad;
	assert_int_equal(ed_place(h, 2, &vm, why, sizeof(why)), -1);
	assert_string_equal(why, "hosts = a,d: a, d are down");
	vm.must = NULL;
	vm.avoid = avoid_bc;
	assert_int_equal(ed_place(h, 2, &vm, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "avoided"));
	vm.avoid = NULL; /* b lacks memory, c lacks a vCPU */
	assert_int_equal(ed_place(h, 2, &vm, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "no allowed host has room for 64 MiB and 1 vCPUs"));
	assert_int_equal(ed_place(h, 0, &vm, why, sizeof(why)), -1);
	assert_string_equal(why, "no live host");
}

static void test_batch_spreads(void **state)
{
	struct ed_place_host h[] = {
	    {"b", 4096 * MiB, 0, 400, 0},
	    {"c", 4096 * MiB, 0, 400, 0},
	};
	struct ed_place_vm vms[100];
	int choice[100];
	char whys[100][256];
	for (int i = 0; i < 100; i++)
		vms[i] = (struct ed_place_vm){"v", 16 * MiB, 1, NULL, NULL};
	assert_int_equal(ed_place_all(h, 2, vms, 100, choice, whys), 100);
	int on_b = 0;
	for (int i = 0; i < 100; i++)
		on_b += choice[i] == 0;
	assert_int_equal(on_b, 50);
	assert_int_equal(h[0].mem_used, 50 * 16 * MiB);
	assert_int_equal(h[1].vcpus_used, 50);
	/* full: the rest are unplaced, with the reason */
	struct ed_place_host small[] = {{"b", 32 * MiB, 0, 8, 0}};
	assert_int_equal(ed_place_all(small, 1, vms, 3, choice, whys), 2);
	assert_int_equal(choice[2], -1);
	assert_non_null(strstr(whys[2], "no allowed host has room"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_most_free_memory), cmocka_unit_test(test_ties_by_cpus_then_name),
	    cmocka_unit_test(test_must_and_avoid),   cmocka_unit_test(test_unplaced_reasons),
	    cmocka_unit_test(test_batch_spreads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
