/* Rate limiters for the block, net and rng devices, with Firecracker's
 * semantics (its API's RateLimiter {bandwidth, ops} of TokenBucket {size,
 * one_time_burst, refill_time}): two token buckets, bytes and ops.  A
 * request of N bytes takes 1 op token and N byte tokens, both or neither.
 *
 * A bucket holds up to `size` tokens and refills linearly from empty to
 * full in `refill_ms`; it starts full.  `one_time_burst` extra tokens are
 * spent first and never come back.  A bucket with size 0 or refill_ms 0
 * does not limit (Firecracker's TokenBucket::new gives None for either).
 * One request larger than `size` is let through when the bucket is full:
 * it empties the bucket and the rest becomes a debt that the refill pays
 * before anything else passes, so a big request waits its due time
 * instead of never fitting.
 *
 * Pure logic: every time is CLOCK_MONOTONIC nanoseconds from the caller
 * (the device arms its timer from rl_wait_ns()).  Integer arithmetic only;
 * the refill keeps its fractional token, so polling often or seldom gives
 * the same budget. */
#ifndef EMBER_RATELIMIT_H
#define EMBER_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct rl_bucket_cfg {
	uint64_t size;		 /* tokens; 0: unlimited */
	uint64_t one_time_burst; /* extra tokens, once */
	uint64_t refill_ms;	 /* empty to full; 0: unlimited */
};

/* All zero: no limit. */
struct rl_cfg {
	struct rl_bucket_cfg bytes, ops;
};

/* One bucket: its configuration and state, fixed-width (snapshot record).
 * Invariants (rl_check): budget <= size; debt > 0 only when budget == 0;
 * frac < refill_ms * 10^6. */
struct rl_bucket {
	uint64_t size;		 /* as configured; 0: unlimited */
	uint64_t one_time_burst; /* as configured, for rl_get_cfg() */
	uint64_t refill_ms;	 /* as configured; 0: unlimited */
	uint64_t burst_left;	 /* one-time tokens not spent yet */
	uint64_t budget;	 /* tokens now, 0..size */
	uint64_t debt;		 /* tokens an oversized request still owes */
	uint64_t frac;		 /* refill remainder: token * ns / refill_ns */
	uint64_t last_ns;	 /* time of the last refill */
};
_Static_assert(sizeof(struct rl_bucket) == 64, "rl_bucket is a snapshot record");

struct ratelimit {
	struct rl_bucket bytes, ops;
};
_Static_assert(sizeof(struct ratelimit) == 128, "ratelimit is a snapshot record");

/* Set up both buckets from cfg (NULL: no limit), full, with their whole
 * one_time_burst, as of now_ns. */
void rl_init(struct ratelimit *rl, const struct rl_cfg *cfg, uint64_t now_ns);

/* Any bucket limits.  When false, rl_consume() always succeeds and the
 * device may skip the limiter. */
bool rl_active(const struct ratelimit *rl);

/* Take 1 op and `bytes` byte tokens, both or neither.  true: go ahead;
 * false: nothing was taken, retry after rl_wait_ns().  A now_ns earlier
 * than the last one seen refills nothing (and takes no time back). */
__attribute__((warn_unused_result)) bool rl_consume(struct ratelimit *rl, uint64_t bytes,
						    uint64_t now_ns);

/* Nanoseconds from now_ns until rl_consume(rl, bytes, now_ns + result)
 * would succeed, with no other consumer in between; 0 if it would now.
 * Saturates at UINT64_MAX.  Changes nothing. */
uint64_t rl_wait_ns(const struct ratelimit *rl, uint64_t bytes, uint64_t now_ns);

/* Reconfigure a running limiter (the API's PATCH), as Firecracker's
 * update_buckets: a bucket whose configuration is unchanged keeps its
 * state (budget, burst, debt); a changed one starts afresh, full, with its
 * new one_time_burst; size 0 turns it off.  To patch only some fields,
 * start from rl_get_cfg(). */
void rl_update(struct ratelimit *rl, const struct rl_cfg *cfg, uint64_t now_ns);

/* The configuration the limiter runs with. */
void rl_get_cfg(const struct ratelimit *rl, struct rl_cfg *cfg);

/* Check a record read back from a snapshot: 0, or -EINVAL when an
 * invariant above is broken (the file is corrupt; refuse it). */
__attribute__((warn_unused_result)) int rl_check(const struct ratelimit *rl);

/* Move both buckets' clocks to now_ns, refilling nothing: after a restore,
 * last_ns belongs to the saving host's CLOCK_MONOTONIC and would stall
 * (or flood) the limiter. */
void rl_rebase(struct ratelimit *rl, uint64_t now_ns);

#endif
