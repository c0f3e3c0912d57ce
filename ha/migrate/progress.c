/* What `ember migrate` shows (ha/migrate/migrate.h): GET /migration read
 * into a struct, the progress line in its two forms, the JSON summary.
 * Pure: the caller writes the text where it goes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ha/migrate/migrate.h"

static const char *const phase_names[] = {
    [MIG_PH_NOANSWER] = "no-answer",
    [MIG_PH_GONE] = "gone",
    [MIG_PH_OTHER] = "other",
    [MIG_PH_NONE] = "none",
    [MIG_PH_SETUP] = "setup",
    [MIG_PH_PRECOPY] = "precopy",
    [MIG_PH_STOP_AND_COPY] = "stop-and-copy",
    [MIG_PH_HANDOVER] = "handover",
    [MIG_PH_COMPLETED] = "completed",
    [MIG_PH_CANCELLED] = "cancelled",
    [MIG_PH_FAILED] = "failed",
    [MIG_PH_HANDOVER_UNKNOWN] = "handover-unknown",
    [MIG_PH_RECEIVING] = "receiving",
    [MIG_PH_READY] = "ready",
    [MIG_PH_RUNNING] = "running",
    [MIG_PH_POSTCOPY] = "postcopy",
};

enum mig_phase mig_phase_parse(const char *s)
{
	for (size_t i = MIG_PH_NONE; s && i < sizeof(phase_names) / sizeof(phase_names[0]); i++)
		if (!strcmp(s, phase_names[i]))
			return (enum mig_phase)i;
	return MIG_PH_OTHER;
}

const char *mig_phase_name(enum mig_phase p)
{
	return (size_t)p < sizeof(phase_names) / sizeof(phase_names[0]) ? phase_names[p] : "?";
}

static uint64_t u64_of(const json_t *j, const char *key)
{
	const json_t *v = json_object_get(j, key);
	double d = json_is_number(v) ? json_number_value(v) : 0;
	return d > 0 ? (uint64_t)d : 0;
}

int mig_status_parse(const json_t *j, struct mig_status *s)
{
	const char *phase = json_string_value(json_object_get(j, "phase"));
	memset(s, 0, sizeof(*s));
	s->downtime_ms = -1;
	if (!json_is_object(j) || !phase)
		return -EINVAL;
	s->phase = mig_phase_parse(phase);
	snprintf(s->phase_text, sizeof(s->phase_text), "%s", phase);
	s->round = (unsigned)u64_of(j, "round");
	s->throttle_pct = (unsigned)u64_of(j, "throttle_pct");
	s->bytes_sent = u64_of(j, "bytes_sent");
	s->bytes_remaining = u64_of(j, "bytes_remaining");
	s->bandwidth_bps = u64_of(j, "bandwidth_bps");
	s->total_ms = u64_of(j, "total_ms");
	const json_t *ed = json_object_get(j, "expected_downtime_ms"),
		     *dt = json_object_get(j, "downtime_ms");
	s->expected_downtime_ms = json_is_number(ed) ? json_number_value(ed) : 0;
	if (json_is_number(dt))
		s->downtime_ms = json_number_value(dt);
	const char *e = json_string_value(json_object_get(j, "error"));
	snprintf(s->error, sizeof(s->error), "%s", e ? e : "");
	return 0;
}

static unsigned percent(const struct mig_status *s)
{
	if (s->phase >= MIG_PH_STOP_AND_COPY && s->phase <= MIG_PH_COMPLETED)
		return 100;
	uint64_t total = s->bytes_sent + s->bytes_remaining;
	return total ? (unsigned)(s->bytes_sent * 100.0 / (double)total) : 0;
}

/* " 812.4 MB/s" style rates: decimal megabytes, as link speeds are. */
static double mbps(const struct mig_status *s)
{
	return (double)s->bandwidth_bps / 1e6;
}

const char *mig_progress_line(char *buf, size_t len, const struct mig_status *s, bool tty,
			      unsigned width)
{
	unsigned pct = percent(s);
	char tail[32] = "", round[24] = "";
	if (s->round)
		snprintf(round, sizeof(round), " round %u", s->round);
	if (s->throttle_pct)
		snprintf(tail, sizeof(tail), tty ? " throttle %u%%" : ", throttle %u%%",
			 s->throttle_pct);
	if (!tty) {
		if (s->error[0])
			snprintf(buf, len, "migrate: %s: %s", s->phase_text, s->error);
		else if (s->phase == MIG_PH_PRECOPY || s->phase == MIG_PH_RECEIVING)
			snprintf(buf, len,
				 "migrate: %s%s: %u%%, %.1f MiB sent, %.1f MB/s, expected downtime "
				 "%.1f ms%s",
				 s->phase_text, round, pct, (double)s->bytes_sent / 1048576.0,
				 mbps(s), s->expected_downtime_ms, tail);
		else
			snprintf(buf, len, "migrate: %s%s", s->phase_text, round);
		return buf;
	}
	char head[64], rest[400]; /* room for any double: -Wformat-truncation */
	snprintf(head, sizeof(head), "%s%s", s->phase_text, round);
	snprintf(rest, sizeof(rest), "%3u%% %7.1f MB/s downtime ~%.1f ms%s", pct, mbps(s),
		 s->expected_downtime_ms, tail);
	/* The bar takes what the width leaves: 10 to 30 cells. */
	int room = (int)(width < 40 ? 40 : width) - (int)strlen(head) - (int)strlen(rest) - 5;
	unsigned cells = room < 10 ? 10 : room > 30 ? 30 : (unsigned)room, full = pct * cells / 100;
	char bar[32];
	for (unsigned i = 0; i < cells; i++)
		bar[i] = i < full ? '#' : '-';
	bar[cells] = '\0';
	snprintf(buf, len, "%s [%s] %s", head, bar, rest);
	return buf;
}

char *mig_summary_json(const struct mig_summary *s)
{
	json_t *j = json_pack("{s:s,s:I,s:I,s:i,s:i}", "result", s->result, "total_ms",
			      (json_int_t)s->total_ms, "bytes_sent", (json_int_t)s->bytes_sent,
			      "rounds", (int)s->rounds, "throttle_pct", (int)s->throttle_pct);
	if (!j)
		return NULL;
	json_object_set_new(j, "downtime_ms",
			    s->downtime_ms < 0 ? json_null() : json_real(s->downtime_ms));
	json_object_set_new(j, "handover", s->handover ? json_string(s->handover) : json_null());
	json_object_set_new(j, "error", s->error ? json_string(s->error) : json_null());
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	return text;
}
