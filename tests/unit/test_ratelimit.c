/* virtio/ratelimit: token buckets on a fake clock (every time is passed
 * in), exact waits, debt, clock going back and 64-bit extremes. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "virtio/ratelimit.h"

#define MS 1000000ULL
#define T0 (1000 * MS) /* an arbitrary monotonic start */

/* bytes: size 1000 tokens, full in 1000 ms: 1 token per ms. */
static const struct rl_cfg bytes_1k = {.bytes = {.size = 1000, .refill_ms = 1000}};

static void test_unlimited(void **state)
{
	struct ratelimit rl;

	rl_init(&rl, NULL, T0);
	assert_false(rl_active(&rl));
	for (int i = 0; i < 1000; i++)
		assert_true(rl_consume(&rl, UINT64_MAX, T0));
	assert_int_equal(rl_wait_ns(&rl, UINT64_MAX, T0), 0);

	static const struct rl_cfg zero;
	rl_init(&rl, &zero, T0);
	assert_false(rl_active(&rl));
	/* refill_ms 0 does not limit either (Firecracker's TokenBucket::new) */
	const struct rl_cfg no_time = {.bytes = {.size = 10}, .ops = {.size = 1}};
	rl_init(&rl, &no_time, T0);
	assert_false(rl_active(&rl));
	assert_true(rl_consume(&rl, 1000, T0));
	assert_true(rl_consume(&rl, 1000, T0 + 1));
	assert_int_equal(rl_wait_ns(&rl, 1000, T0 + 1), 0);
	assert_int_equal(rl_check(&rl), 0);
}

static void test_bytes_bucket(void **state)
{
	struct ratelimit rl;

	rl_init(&rl, &bytes_1k, T0);
	assert_true(rl_active(&rl));
	assert_true(rl_consume(&rl, 1000, T0));
	assert_false(rl_consume(&rl, 1, T0));
	assert_int_equal(rl_wait_ns(&rl, 1, T0), 1 * MS);
	/* after 500 ms, 500 tokens: 501 is refused, 500 passes, then none */
	assert_false(rl_consume(&rl, 501, T0 + 500 * MS));
	assert_true(rl_consume(&rl, 500, T0 + 500 * MS));
	assert_false(rl_consume(&rl, 1, T0 + 500 * MS));
	/* never above size, however long the wait */
	assert_true(rl_consume(&rl, 1000, T0 + 3600000 * MS));
	assert_false(rl_consume(&rl, 1, T0 + 3600000 * MS));
	assert_int_equal(rl_check(&rl), 0);
}

/* Many small polls earn what one late poll would: no rounding loss. */
static void test_no_rounding_loss(void **state)
{
	/* 3 tokens per 1000 ms: 1 token every 333.33 ms */
	const struct rl_cfg c = {.bytes = {.size = 3, .refill_ms = 1000}};
	struct ratelimit rl;

	rl_init(&rl, &c, T0);
	assert_true(rl_consume(&rl, 3, T0));
	uint64_t t = T0;
	for (int i = 0; i < 1000; i++) { /* 1000 polls, 1 ms apart */
		t += MS;
		if (t < T0 + 1000 * MS)
			assert_false(rl_consume(&rl, 3, t));
	}
	assert_true(rl_consume(&rl, 3, T0 + 1000 * MS));
	/* exact: 1 token after ceil(1e9 / 3) ns */
	assert_int_equal(rl_wait_ns(&rl, 1, T0 + 1000 * MS), 333333334);
	assert_false(rl_consume(&rl, 1, T0 + 1000 * MS + 333333333));
	assert_true(rl_consume(&rl, 1, T0 + 1000 * MS + 333333334));
}

static void test_burst_first_never_refilled(void **state)
{
	const struct rl_cfg c = {.bytes = {.size = 100, .one_time_burst = 50, .refill_ms = 100}};
	struct ratelimit rl;

	rl_init(&rl, &c, T0);
	/* 150 at once: the burst, then the whole budget */
	assert_true(rl_consume(&rl, 40, T0));
	assert_int_equal(rl.bytes.burst_left, 10);
	assert_int_equal(rl.bytes.budget, 100); /* burst spent first */
	assert_true(rl_consume(&rl, 110, T0));
	assert_int_equal(rl.bytes.burst_left, 0);
	assert_int_equal(rl.bytes.budget, 0);
	assert_false(rl_consume(&rl, 1, T0));
	/* a long time later only size is back, never the burst */
	assert_true(rl_consume(&rl, 100, T0 + 10000 * MS));
	assert_int_equal(rl.bytes.burst_left, 0);
	assert_false(rl_consume(&rl, 1, T0 + 10000 * MS));
	/* a refused request spends no burst */
	rl_init(&rl, &c, T0);
	assert_true(rl_consume(&rl, 100, T0)); /* burst 50 + budget 50 */
	assert_false(rl_consume(&rl, 60, T0));
	assert_int_equal(rl.bytes.budget, 50);
	assert_true(rl_consume(&rl, 50, T0));
}

static void test_together_or_not_at_all(void **state)
{
	/* 2 ops per second, 1000 bytes per second */
	const struct rl_cfg c = {.bytes = {.size = 1000, .refill_ms = 1000},
				 .ops = {.size = 2, .refill_ms = 1000}};
	struct ratelimit rl;

	rl_init(&rl, &c, T0);
	assert_true(rl_consume(&rl, 100, T0));
	assert_true(rl_consume(&rl, 100, T0));
	/* ops exhausted: the bytes are not taken */
	assert_false(rl_consume(&rl, 100, T0));
	assert_int_equal(rl.bytes.budget, 800);
	assert_int_equal(rl_wait_ns(&rl, 100, T0), 500 * MS);
	/* bytes short: the op is not taken */
	assert_true(rl_consume(&rl, 0, T0 + 500 * MS)); /* 0 bytes still costs an op */
	assert_int_equal(rl.ops.budget, 0);
	assert_true(rl_consume(&rl, 800, T0 + 1000 * MS)); /* bytes 200, ops 0 */
	/* 1 op there, 700 bytes: the op is not taken */
	assert_false(rl_consume(&rl, 800, T0 + 1500 * MS));
	assert_int_equal(rl.ops.budget, 1);
	assert_int_equal(rl.bytes.budget, 700);
	assert_int_equal(rl_wait_ns(&rl, 800, T0 + 1500 * MS), 100 * MS);
	assert_true(rl_consume(&rl, 800, T0 + 1600 * MS));
	/* 200 bytes after 200 ms, the op after 400: the wait is the later */
	assert_int_equal(rl_wait_ns(&rl, 200, T0 + 1600 * MS), 400 * MS);
	assert_false(rl_consume(&rl, 200, T0 + 2000 * MS - 1));
	assert_true(rl_consume(&rl, 200, T0 + 2000 * MS));
}

static void test_oversized_request(void **state)
{
	struct ratelimit rl;

	rl_init(&rl, &bytes_1k, T0);
	/* 2500 > size: allowed from a full bucket, 1500 owed */
	assert_true(rl_consume(&rl, 2500, T0));
	assert_int_equal(rl.bytes.budget, 0);
	assert_int_equal(rl.bytes.debt, 1500);
	/* nothing passes until the debt is paid and the next bytes earned */
	assert_int_equal(rl_wait_ns(&rl, 1, T0), 1501 * MS);
	assert_false(rl_consume(&rl, 1, T0 + 1500 * MS));
	assert_int_equal(rl.bytes.debt, 0);
	assert_true(rl_consume(&rl, 1, T0 + 1501 * MS));
	/* a 0-byte request costs no byte tokens, debt or not */
	assert_true(rl_consume(&rl, 0, T0 + 1501 * MS));

	/* an oversized request waits for a full bucket, not for its size */
	rl_init(&rl, &bytes_1k, T0);
	assert_true(rl_consume(&rl, 400, T0));
	assert_false(rl_consume(&rl, 5000, T0));
	assert_int_equal(rl_wait_ns(&rl, 5000, T0), 400 * MS);
	assert_false(rl_consume(&rl, 5000, T0 + 400 * MS - 1));
	assert_true(rl_consume(&rl, 5000, T0 + 400 * MS));
	assert_int_equal(rl.bytes.debt, 4000);
	assert_int_equal(rl_wait_ns(&rl, 5000, T0 + 400 * MS), 5000 * MS);
	/* UINT64_MAX bytes: one pass, then a debt it saturates waiting for */
	rl_init(&rl, &bytes_1k, T0);
	assert_true(rl_consume(&rl, UINT64_MAX, T0));
	assert_int_equal(rl_wait_ns(&rl, 1, T0), UINT64_MAX);
	assert_int_equal(rl_check(&rl), 0);
}

static void test_wait_exact(void **state)
{
	struct ratelimit rl;

	rl_init(&rl, &bytes_1k, T0);
	assert_int_equal(rl_wait_ns(&rl, 1000, T0), 0);
	assert_true(rl_consume(&rl, 1000, T0));
	assert_int_equal(rl_wait_ns(&rl, 0, T0), 0);
	assert_int_equal(rl_wait_ns(&rl, 1, T0), 1 * MS);
	assert_int_equal(rl_wait_ns(&rl, 500, T0), 500 * MS);
	assert_int_equal(rl_wait_ns(&rl, 1000, T0), 1000 * MS);
	assert_int_equal(rl_wait_ns(&rl, 500, T0 + 100 * MS), 400 * MS);
	assert_int_equal(rl_wait_ns(&rl, 500, T0 + 100 * MS + 1), 400 * MS - 1);
	/* the wait is exact: one ns earlier fails, at it succeeds */
	uint64_t w = rl_wait_ns(&rl, 777, T0 + 3);
	assert_false(rl_consume(&rl, 777, T0 + 3 + w - 1));
	assert_true(rl_consume(&rl, 777, T0 + 3 + w));
	/* rl_wait_ns changes nothing */
	struct ratelimit copy = rl;
	(void)rl_wait_ns(&rl, 999, T0 + 5000 * MS);
	assert_memory_equal(&copy, &rl, sizeof(rl));
}

static void test_clock_backwards(void **state)
{
	struct ratelimit rl;

	rl_init(&rl, &bytes_1k, T0);
	assert_true(rl_consume(&rl, 1000, T0 + 100 * MS));
	/* earlier than last seen: no refill, no underflow, no time given back */
	assert_false(rl_consume(&rl, 1, T0));
	assert_false(rl_consume(&rl, 1, 0));
	assert_int_equal(rl.bytes.budget, 0);
	assert_int_equal(rl.bytes.last_ns, T0 + 100 * MS);
	/* the wait counts from now up to the last time seen, then the refill */
	assert_int_equal(rl_wait_ns(&rl, 10, T0 + 100 * MS), 10 * MS);
	assert_int_equal(rl_wait_ns(&rl, 10, T0), 110 * MS);
	assert_int_equal(rl_wait_ns(&rl, 10, 0), T0 + 110 * MS);
	assert_true(rl_consume(&rl, 10, T0 + 110 * MS));
	/* a backwards step followed by the real time counts it once */
	assert_false(rl_consume(&rl, 1, T0 + 50 * MS));
	assert_false(rl_consume(&rl, 11, T0 + 120 * MS));
	assert_true(rl_consume(&rl, 10, T0 + 120 * MS));
	/* after a restore, rl_rebase moves the clock without a refill */
	rl_rebase(&rl, 5);
	assert_false(rl_consume(&rl, 1, 5));
	assert_int_equal(rl_wait_ns(&rl, 1, 5), 1 * MS);
	assert_int_equal(rl_check(&rl), 0);
}

static void test_huge_values(void **state)
{
	/* size 2^63, full in 1 ms: 2^63 tokens per ms */
	const struct rl_cfg c = {
	    .bytes = {.size = 1ULL << 63, .refill_ms = 1},
	    .ops = {.size = UINT64_MAX, .one_time_burst = UINT64_MAX, .refill_ms = UINT64_MAX}};
	struct ratelimit rl;

	rl_init(&rl, &c, 0);
	assert_true(rl_consume(&rl, 1ULL << 63, 0));
	assert_false(rl_consume(&rl, 1, 0));
	assert_int_equal(rl_wait_ns(&rl, 1ULL << 62, 0), MS / 2);
	assert_int_equal(rl_wait_ns(&rl, 1, 0), 1); /* 2^63 / 10^6 tokens per ns */
	/* a maximal elapsed time: (2^64-1) * 2^63 needs 127 bits */
	assert_true(rl_consume(&rl, 1ULL << 63, UINT64_MAX));
	assert_int_equal(rl.bytes.budget, 0);
	/* oversized by almost 2^64 from a full bucket, then the wait */
	rl_init(&rl, &c, 0);
	assert_true(rl_consume(&rl, UINT64_MAX, 0));
	assert_int_equal(rl.bytes.debt, UINT64_MAX - (1ULL << 63));
	assert_int_equal(rl_wait_ns(&rl, UINT64_MAX, 0), 2 * MS); /* debt + a full bucket */
	/* refill_ms * 10^6 overflows 64 bits: saturated, never wraps to fast */
	assert_int_equal(rl.ops.burst_left, UINT64_MAX - 1);
	const struct rl_cfg slow = {.ops = {.size = 1, .refill_ms = UINT64_MAX}};
	rl_init(&rl, &slow, 0);
	assert_true(rl_consume(&rl, 0, 0));
	assert_false(rl_consume(&rl, 0, UINT64_MAX - 1));
	assert_int_equal(rl_wait_ns(&rl, 0, 0), UINT64_MAX);
	assert_int_equal(rl_check(&rl), 0);
}

static void test_update(void **state)
{
	struct ratelimit rl;
	struct rl_cfg c;

	rl_init(&rl, &bytes_1k, T0);
	assert_true(rl_consume(&rl, 2000, T0)); /* 1000 owed */
	/* the same configuration: the state, debt included, is kept */
	rl_get_cfg(&rl, &c);
	assert_memory_equal(&c, &bytes_1k, sizeof(c));
	rl_update(&rl, &c, T0 + 10 * MS);
	assert_int_equal(rl.bytes.debt, 1000);
	assert_false(rl_consume(&rl, 1, T0 + 10 * MS));
	/* a new ops bucket: bytes untouched, ops full */
	c.ops = (struct rl_bucket_cfg){.size = 5, .refill_ms = 100};
	rl_update(&rl, &c, T0 + 20 * MS);
	assert_int_equal(rl.bytes.debt, 990); /* an update refills nothing */
	assert_int_equal(rl.ops.budget, 5);
	assert_int_equal(rl.ops.last_ns, T0 + 20 * MS);
	/* a changed bytes bucket starts afresh: full, burst, no debt */
	c.bytes = (struct rl_bucket_cfg){.size = 10, .one_time_burst = 5, .refill_ms = 10};
	rl_update(&rl, &c, T0 + 30 * MS);
	assert_int_equal(rl.bytes.debt, 0);
	assert_int_equal(rl.bytes.budget, 10);
	assert_int_equal(rl.bytes.burst_left, 5);
	assert_int_equal(rl.bytes.frac, 0);
	assert_int_equal(rl_check(&rl), 0);
	assert_true(rl_consume(&rl, 15, T0 + 30 * MS));
	assert_false(rl_consume(&rl, 1, T0 + 30 * MS));
	assert_int_equal(rl_wait_ns(&rl, 1, T0 + 30 * MS), 1 * MS);
	/* size 0 turns a bucket off; all off: inactive */
	c.bytes.size = 0;
	rl_update(&rl, &c, T0 + 30 * MS);
	assert_true(rl_active(&rl));
	assert_true(rl_consume(&rl, UINT64_MAX, T0 + 30 * MS));
	rl_update(&rl, NULL, T0 + 30 * MS);
	assert_false(rl_active(&rl));
	assert_int_equal(rl_check(&rl), 0);
}

/* A pseudo-random workload driven by rl_wait_ns: every wait is exact (one
 * ns earlier fails), and what passed, less the debt still owed, never
 * exceeds burst + size + the refill of the elapsed time. */
static void test_random_rate_bound(void **state)
{
	const struct rl_cfg c = {.bytes = {.size = 4096, .one_time_burst = 10000, .refill_ms = 7},
				 .ops = {.size = 50, .refill_ms = 3}};
	struct ratelimit rl;
	uint64_t seed = 42, t = T0, passed = 0;

	rl_init(&rl, &c, T0);
	for (int i = 0; i < 20000; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t n = (seed >> 33) % 6000; /* some larger than size */
		t += (seed >> 20) % 3000;
		uint64_t w = rl_wait_ns(&rl, n, t);
		if (w) {
			assert_false(rl_consume(&rl, n, t + w - 1));
			t += w;
		}
		assert_true(rl_consume(&rl, n, t));
		passed += n;
		assert_int_equal(rl_check(&rl), 0);
		uint64_t earned = (t - T0) * 4096 / (7 * MS);
		assert_true(passed - rl.bytes.debt <= 10000 + 4096 + earned);
		assert_true((uint64_t)i + 1 <= 50 + (t - T0) * 50 / (3 * MS));
	}
}

static void test_check_and_snapshot(void **state)
{
	struct ratelimit rl, back;

	rl_init(&rl, &bytes_1k, T0);
	assert_true(rl_consume(&rl, 1234, T0));
	assert_true(rl_consume(&rl, 0, T0 + 300 * MS + 7));
	/* save -> restore -> save: the same bytes */
	memcpy(&back, &rl, sizeof(back));
	assert_int_equal(rl_check(&back), 0);
	assert_memory_equal(&back, &rl, sizeof(rl));
	/* a corrupt record is refused */
	back.bytes.budget = 1001;
	assert_int_equal(rl_check(&back), -EINVAL);
	back = rl;
	back.bytes.frac = 1000 * MS;
	assert_int_equal(rl_check(&back), -EINVAL);
	back = rl;
	back.bytes.budget = 1;
	back.bytes.debt = 1;
	assert_int_equal(rl_check(&back), -EINVAL);
	back = rl;
	back.bytes.burst_left = 1;
	assert_int_equal(rl_check(&back), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unlimited),
	    cmocka_unit_test(test_bytes_bucket),
	    cmocka_unit_test(test_no_rounding_loss),
	    cmocka_unit_test(test_burst_first_never_refilled),
	    cmocka_unit_test(test_together_or_not_at_all),
	    cmocka_unit_test(test_oversized_request),
	    cmocka_unit_test(test_wait_exact),
	    cmocka_unit_test(test_clock_backwards),
	    cmocka_unit_test(test_huge_values),
	    cmocka_unit_test(test_update),
	    cmocka_unit_test(test_random_rate_bound),
	    cmocka_unit_test(test_check_and_snapshot),
	};
	return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
