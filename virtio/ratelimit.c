/* Token-bucket rate limiters (see ratelimit.h).  Refill arithmetic is in
 * unsigned __int128: elapsed_ns * size needs up to 128 bits, and the
 * remainder of each division is kept in `frac`, so no token is lost to
 * rounding however often the device polls (Firecracker drops it). */
#include "virtio/ratelimit.h"

#include <errno.h>
#include <string.h>

typedef unsigned __int128 u128;

#define NS_PER_MS 1000000ULL
#define U128_MAX (~(u128)0)

static bool limited(const struct rl_bucket *b)
{
	return b->size && b->refill_ms;
}

/* refill_ms in ns, saturated: past ~584 years the rate is 0 anyway. */
static uint64_t refill_ns(const struct rl_bucket *b)
{
	if (b->refill_ms > UINT64_MAX / NS_PER_MS)
		return UINT64_MAX;
	return b->refill_ms * NS_PER_MS;
}

static void bucket_init(struct rl_bucket *b, const struct rl_bucket_cfg *c, uint64_t now)
{
	memset(b, 0, sizeof(*b));
	if (!c)
		return;
	b->size = c->size;
	b->one_time_burst = c->one_time_burst;
	b->refill_ms = c->refill_ms;
	b->last_ns = now;
	if (limited(b)) {
		b->burst_left = c->one_time_burst;
		b->budget = c->size; /* starts full, as Firecracker's */
	}
}

/* Add the tokens earned since last_ns: the debt is paid first, the budget
 * stops at size.  A clock that went back earns nothing and is not
 * followed, so the time is not counted twice when it comes forward. */
static void refill(struct rl_bucket *b, uint64_t now)
{
	if (!limited(b) || now <= b->last_ns)
		return;
	uint64_t elapsed = now - b->last_ns;
	b->last_ns = now;
	if (b->budget == b->size) { /* full: nothing owed (debt implies empty) */
		b->frac = 0;
		return;
	}
	/* < 2^128: (2^64-1)^2 + 2^64 fits */
	u128 acc = (u128)elapsed * b->size + b->frac;
	u128 ns = refill_ns(b);
	u128 tokens = acc / ns;

	b->frac = (uint64_t)(acc % ns);
	if (tokens < b->debt) {
		b->debt -= (uint64_t)tokens;
		return;
	}
	tokens -= b->debt;
	b->debt = 0;
	if (tokens >= b->size - b->budget) {
		b->budget = b->size;
		b->frac = 0; /* a full bucket holds no part-token */
	} else {
		b->budget += (uint64_t)tokens;
	}
}

/* Tokens n costs beyond the one-time burst. */
static uint64_t need(const struct rl_bucket *b, uint64_t n)
{
	return n <= b->burst_left ? 0 : n - b->burst_left;
}

/* After refill(): n tokens may be taken now.  More than size may, once,
 * from a full bucket (Firecracker's OverConsumption). */
static bool can_take(const struct rl_bucket *b, uint64_t n)
{
	uint64_t k = need(b, n);

	if (!limited(b) || k == 0)
		return true;
	if (b->debt)
		return false;
	return k <= b->budget || (k > b->size && b->budget == b->size);
}

/* Only after can_take(b, n). */
static void take(struct rl_bucket *b, uint64_t n)
{
	if (!limited(b))
		return;
	uint64_t k = need(b, n);

	b->burst_left -= n - k;
	if (k <= b->budget) {
		b->budget -= k;
	} else {
		b->debt = k - b->budget;
		b->budget = 0;
	}
}

/* ns from now until can_take(b, n), saturated. */
static uint64_t bucket_wait(const struct rl_bucket *b0, uint64_t n, uint64_t now)
{
	struct rl_bucket b = *b0;

	refill(&b, now);
	if (can_take(&b, n))
		return 0;
	/* b.last_ns = max(now, the clock the bucket has seen) */
	uint64_t lag = b.last_ns - now;
	uint64_t k = need(&b, n);
	uint64_t want = k > b.size ? b.size : k; /* oversized: wait until full */
	/* not takeable: debt > 0 (and budget 0), or want > budget */
	u128 tokens = (u128)b.debt + want - b.budget;
	u128 ns = refill_ns(&b);

	if (tokens > U128_MAX / ns)
		return UINT64_MAX;
	/* smallest e with e * size + frac >= tokens * ns; frac < ns <= that */
	u128 x = tokens * ns - b.frac;
	u128 e = x / b.size + (x % b.size != 0);

	if (e > UINT64_MAX - lag)
		return UINT64_MAX;
	return (uint64_t)e + lag;
}

void rl_init(struct ratelimit *rl, const struct rl_cfg *cfg, uint64_t now_ns)
{
	bucket_init(&rl->bytes, cfg ? &cfg->bytes : NULL, now_ns);
	bucket_init(&rl->ops, cfg ? &cfg->ops : NULL, now_ns);
}

bool rl_active(const struct ratelimit *rl)
{
	return limited(&rl->bytes) || limited(&rl->ops);
}

bool rl_consume(struct ratelimit *rl, uint64_t bytes, uint64_t now_ns)
{
	if (!rl_active(rl))
		return true;
	refill(&rl->bytes, now_ns);
	refill(&rl->ops, now_ns);
	if (!can_take(&rl->bytes, bytes) || !can_take(&rl->ops, 1))
		return false;
	take(&rl->bytes, bytes);
	take(&rl->ops, 1);
	return true;
}

uint64_t rl_wait_ns(const struct ratelimit *rl, uint64_t bytes, uint64_t now_ns)
{
	uint64_t a = bucket_wait(&rl->bytes, bytes, now_ns);
	uint64_t b = bucket_wait(&rl->ops, 1, now_ns);

	/* A bucket's tokens only grow with time, so both suffice at the later. */
	return a > b ? a : b;
}

static bool same_cfg(const struct rl_bucket *b, const struct rl_bucket_cfg *c)
{
	return b->size == c->size && b->one_time_burst == c->one_time_burst &&
	       b->refill_ms == c->refill_ms;
}

void rl_update(struct ratelimit *rl, const struct rl_cfg *cfg, uint64_t now_ns)
{
	static const struct rl_cfg none;

	if (!cfg)
		cfg = &none;
	if (!same_cfg(&rl->bytes, &cfg->bytes))
		bucket_init(&rl->bytes, &cfg->bytes, now_ns);
	if (!same_cfg(&rl->ops, &cfg->ops))
		bucket_init(&rl->ops, &cfg->ops, now_ns);
}

static void bucket_cfg(const struct rl_bucket *b, struct rl_bucket_cfg *c)
{
	c->size = b->size;
	c->one_time_burst = b->one_time_burst;
	c->refill_ms = b->refill_ms;
}

void rl_get_cfg(const struct ratelimit *rl, struct rl_cfg *cfg)
{
	bucket_cfg(&rl->bytes, &cfg->bytes);
	bucket_cfg(&rl->ops, &cfg->ops);
}

static bool bucket_ok(const struct rl_bucket *b)
{
	if (!limited(b))
		return true;
	return b->budget <= b->size && (b->debt == 0 || b->budget == 0) && b->frac < refill_ns(b) &&
	       b->burst_left <= b->one_time_burst;
}

int rl_check(const struct ratelimit *rl)
{
	return bucket_ok(&rl->bytes) && bucket_ok(&rl->ops) ? 0 : -EINVAL;
}

void rl_rebase(struct ratelimit *rl, uint64_t now_ns)
{
	rl->bytes.last_ns = now_ns;
	rl->ops.last_ns = now_ns;
}
