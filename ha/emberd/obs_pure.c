/* Observability's pure parts (obs.h): /proc parsing, the EWMA, and the
 * Prometheus text exposition format 0.0.4 ("Exposition formats" in
 * Prometheus' docs).  No I/O: tests/unit/test_ha_obs.c drives them. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/obs.h"

int ed_obs_stat_ticks(const char *stat, uint64_t *ticks)
{
	/* "pid (comm) state ppid ...": comm may hold ") (", so the fields
	 * start after the last ')'; utime and stime are fields 14 and 15
	 * (proc(5)), i.e. the 12th and 13th after it. */
	const char *p = stat ? strrchr(stat, ')') : NULL;
	if (!p)
		return -EINVAL;
	p++;
	uint64_t v[2];
	for (int field = 3; field <= 15; field++) {
		while (*p == ' ')
			p++;
		if (!*p || *p == '\n')
			return -EINVAL;
		const char *start = p;
		while (*p && *p != ' ' && *p != '\n')
			p++;
		if (field < 14)
			continue;
		char *end;
		errno = 0;
		unsigned long long x = strtoull(start, &end, 10);
		if (errno || end != p || *start == '-')
			return -EINVAL;
		v[field - 14] = x;
	}
	*ticks = v[0] + v[1];
	return 0;
}

int ed_obs_status_rss(const char *status, uint64_t *bytes)
{
	*bytes = 0;
	for (const char *l = status; l && *l;) {
		if (!strncmp(l, "VmRSS:", 6)) {
			char *end;
			errno = 0;
			unsigned long long kb = strtoull(l + 6, &end, 10);
			while (*end == ' ' || *end == '\t')
				end++;
			if (errno || end == l + 6 || strncmp(end, "kB", 2))
				return -EINVAL;
			*bytes = (uint64_t)kb * 1024;
			return 0;
		}
		const char *nl = strchr(l, '\n');
		l = nl ? nl + 1 : NULL;
	}
	return 0;
}

double ed_obs_ewma(double prev, double sample, uint64_t dt_ms, uint64_t tau_ms, bool first)
{
	if (first || !tau_ms)
		return sample;
	double a = 1.0 - exp(-(double)dt_ms / (double)tau_ms);
	return prev + a * (sample - prev);
}

/* ---- Prometheus text ---- */

static void put(struct ed_prom *p, const char *s, size_t n)
{
	if (p->oom)
		return;
	if (p->len + n + 1 > p->cap) {
		size_t cap = p->cap ? p->cap : 4096;
		while (cap < p->len + n + 1)
			cap *= 2;
		char *b = realloc(p->buf, cap);
		if (!b) {
			p->oom = true;
			return;
		}
		p->buf = b;
		p->cap = cap;
	}
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
}

static void puts_(struct ed_prom *p, const char *s)
{
	put(p, s, strlen(s));
}

int ed_prom_escape(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	for (const char *s = in; *s; s++) {
		const char *rep = *s == '\\'   ? "\\\\"
				  : *s == '"'  ? "\\\""
				  : *s == '\n' ? "\\n"
					       : NULL;
		size_t n = rep ? 2 : 1;
		if (o + n >= outlen) {
			if (outlen)
				out[0] = '\0';
			return -ENOSPC;
		}
		if (rep)
			memcpy(out + o, rep, 2);
		else
			out[o] = *s;
		o += n;
	}
	if (!outlen)
		return -ENOSPC;
	out[o] = '\0';
	return 0;
}

void ed_prom_family(struct ed_prom *p, const char *name, const char *type, const char *help)
{
	puts_(p, "# HELP ");
	puts_(p, name);
	put(p, " ", 1);
	/* HELP escapes only \\ and newlines */
	for (const char *s = help; *s; s++)
		if (*s == '\\')
			put(p, "\\\\", 2);
		else if (*s == '\n')
			put(p, "\\n", 2);
		else
			put(p, s, 1);
	puts_(p, "\n# TYPE ");
	puts_(p, name);
	put(p, " ", 1);
	puts_(p, type);
	put(p, "\n", 1);
}

void ed_prom_sample(struct ed_prom *p, const char *name, const char *const labels[][2],
		    size_t nlabels, double value)
{
	puts_(p, name);
	for (size_t i = 0; i < nlabels; i++) {
		char esc[3 * ED_ERR_MAX];
		if (ed_prom_escape(labels[i][1], esc, sizeof(esc)))
			snprintf(esc, sizeof(esc), "(too long)");
		puts_(p, i ? "," : "{");
		puts_(p, labels[i][0]);
		puts_(p, "=\"");
		puts_(p, esc);
		put(p, "\"", 1);
	}
	if (nlabels)
		put(p, "}", 1);
	char num[64];
	if (isnan(value))
		snprintf(num, sizeof(num), " NaN\n");
	else if (value == floor(value) && fabs(value) < 9e15)
		snprintf(num, sizeof(num), " %" PRId64 "\n", (int64_t)value);
	else
		snprintf(num, sizeof(num), " %.9g\n", value);
	puts_(p, num);
}

void ed_prom_free(struct ed_prom *p)
{
	free(p->buf);
	*p = (struct ed_prom){0};
}
