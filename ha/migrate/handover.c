/* The hand-over rules (docs/migration.md, "Exactly once") as one pure
 * function of what each end says: the VM must run in exactly one place,
 * so an end is resumed only once the other is known to be stopped for
 * good (paused in handover-unknown, or its process gone: its API socket
 * refuses connections).  A stuck end (no answer) is never taken for a
 * gone one. */
#include <string.h>

#include "ha/migrate/migrate.h"

static bool ended(enum mig_phase p)
{
	return p == MIG_PH_GONE || p == MIG_PH_FAILED;
}

/* Same host: both ends watched. */
static enum mig_action both(enum mig_phase src, enum mig_phase dst, bool settled)
{
	switch (src) {
	case MIG_PH_HANDOVER_UNKNOWN: /* paused for good: the target decides */
		return dst == MIG_PH_READY     ? MIG_RESUME_TARGET_STOP_SOURCE
		       : dst == MIG_PH_RUNNING ? MIG_STOP_SOURCE
		       : ended(dst)	       ? MIG_RESUME_SOURCE
					       : MIG_WAIT;
	case MIG_PH_COMPLETED: /* GOGO sent: the target runs it, or is about to */
		return dst == MIG_PH_RUNNING ? MIG_OK : ended(dst) ? MIG_LOST : MIG_WAIT;
	case MIG_PH_GONE:
		if (dst == MIG_PH_RUNNING)
			return MIG_OK;
		if (dst == MIG_PH_READY) /* nobody runs it: the target may */
			return settled ? MIG_RESUME_TARGET : MIG_WAIT;
		if (ended(dst) || (dst == MIG_PH_NONE && settled))
			return MIG_LOST;
		return MIG_WAIT; /* receiving: it reads the end of the stream and fails */
	case MIG_PH_FAILED:
	case MIG_PH_CANCELLED: /* the source runs on (resumed if it ran) */
		if (dst == MIG_PH_READY)
			return MIG_STOP_TARGET;
		if (dst == MIG_PH_RUNNING)
			return MIG_UNRESOLVED; /* never by the contract: say so */
		return ended(dst) || settled ? MIG_FAILED : MIG_WAIT;
	default: /* still moving, or no answer: the source's timeout bounds it */
		return MIG_WAIT;
	}
}

enum mig_action mig_decide(enum mig_phase src, enum mig_phase dst, bool watch_src, bool watch_dst,
			   bool src_committed, bool settled)
{
	/* Post-copy: the source has handed over (GOGO) and pushes the rest;
	 * the target runs the VM while its pages arrive. */
	if (src == MIG_PH_POSTCOPY)
		src = MIG_PH_COMPLETED;
	if (dst == MIG_PH_POSTCOPY)
		dst = MIG_PH_RUNNING;
	if (watch_src && watch_dst)
		return both(src, dst, settled);
	if (watch_src) { /* sending host: the target is another host's */
		switch (src) {
		case MIG_PH_COMPLETED:
			return MIG_OK;
		case MIG_PH_FAILED:
		case MIG_PH_CANCELLED:
			return MIG_FAILED;
		case MIG_PH_HANDOVER_UNKNOWN:
			return MIG_UNRESOLVED;
		case MIG_PH_GONE: /* the stream's end may still be in the relay */
			return src_committed ? MIG_OK : settled ? MIG_UNRESOLVED : MIG_WAIT;
		default:
			return MIG_WAIT;
		}
	}
	if (!watch_dst) /* receiving host: the source is another host's */
		return MIG_UNRESOLVED;
	/* A target in ready waits for GOGO or for --resolve: only the
	 * deadline turns that into MIG_UNRESOLVED (the caller's). */
	return dst == MIG_PH_RUNNING ? MIG_OK : ended(dst) ? MIG_FAILED : MIG_WAIT;
}

bool mig_stream_ends_with_gogo(const unsigned char *tail, size_t len)
{
	static const unsigned char zero[4];
	/* {u32 type, u32 len, u64 a, u64 b, u32 crc, u32 0}, little-endian,
	 * the type's four characters as they read (docs/migration.md) */
	return len == 32 && !memcmp(tail, "GOGO", 4) && !memcmp(tail + 4, zero, 4) &&
	       !memcmp(tail + 28, zero, 4);
}

const char *mig_action_text(enum mig_action a)
{
	static const char *const texts[] = {
	    [MIG_WAIT] = "in progress",
	    [MIG_OK] = "the target runs the VM",
	    [MIG_FAILED] = "not moved: the VM runs on at the source",
	    [MIG_RESUME_TARGET_STOP_SOURCE] = "the hand-over record was lost: the target (ready) "
					      "was resumed, then the source stopped",
	    [MIG_STOP_SOURCE] = "the hand-over record was lost but the target runs: the source "
				"was stopped",
	    [MIG_RESUME_SOURCE] = "the hand-over record was lost and the target is gone: the "
				  "source was resumed",
	    [MIG_RESUME_TARGET] = "the source is gone and the target was ready: the target was "
				  "resumed",
	    [MIG_STOP_TARGET] = "the source runs on: the target, left ready, was stopped",
	    [MIG_LOST] = "neither end runs the VM: the source is gone and the target failed",
	    [MIG_UNRESOLVED] = "the outcome is not known here",
	};
	return (size_t)a < sizeof(texts) / sizeof(texts[0]) ? texts[a] : "?";
}
