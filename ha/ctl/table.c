/* emberctl's human output (ha/ctl/ctl.h): aligned tables, durations and
 * sizes as people read them, the VM table, the event line. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/ctl/ctl.h"

int ctl_table_init(struct ctl_table *t, const char *const *headers, size_t ncols)
{
	t->ncols = ncols;
	t->nrows = 0;
	t->cells = NULL;
	return ctl_table_add(t, headers);
}

int ctl_table_add(struct ctl_table *t, const char *const *cells)
{
	char **c = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*c));
	if (!c)
		return -ENOMEM;
	t->cells = c;
	char **row = c + t->nrows * t->ncols;
	for (size_t i = 0; i < t->ncols; i++) {
		row[i] = strdup(cells[i] ? cells[i] : "-");
		if (!row[i]) {
			while (i--)
				free(row[i]);
			return -ENOMEM;
		}
	}
	t->nrows++;
	return 0;
}

/* Columns count characters, not bytes: a VM's reason may hold UTF-8. */
static size_t width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

void ctl_table_print(const struct ctl_table *t, FILE *f)
{
	size_t w[32] = {0};
	size_t nc = t->ncols < 32 ? t->ncols : 32;
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < nc; c++) {
			size_t x = width(t->cells[r * t->ncols + c]);
			w[c] = x > w[c] ? x : w[c];
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < nc; c++) {
			const char *s = t->cells[r * t->ncols + c];
			if (c + 1 == nc) {
				fprintf(f, "%s\n", s);
				break;
			}
			fprintf(f, "%s%*s", s, (int)(w[c] - width(s) + 2), "");
		}
	}
}

void ctl_table_free(struct ctl_table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->nrows = 0;
}

void ctl_fmt_duration(uint64_t ms, char *buf, size_t len)
{
	uint64_t s = ms / 1000;
	if (s < 60)
		snprintf(buf, len, "%" PRIu64 "s", s);
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s / 3600 % 24);
}

void ctl_fmt_bytes(uint64_t b, char *buf, size_t len)
{
	static const char units[] = "KMGTPE";
	if (b < 1024) {
		snprintf(buf, len, "%" PRIu64 "B", b);
		return;
	}
	double v = (double)b;
	int u = -1;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (v == (double)(uint64_t)v || v >= 100)
		snprintf(buf, len, "%.0f%c", v, units[u]);
	else
		snprintf(buf, len, "%.1f%c", v, units[u]);
}

/* An integer field as text ("-" when null or absent). */
static void int_cell(const json_t *o, const char *key, char *buf, size_t len)
{
	json_t *v = json_object_get(o, key);
	if (json_is_integer(v))
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		snprintf(buf, len, "-");
}

int ctl_vms_table(const json_t *vms, uint64_t now_ms, struct ctl_table *t)
{
	static const char *const head[] = {"NAME",     "STATE",	 "HOST",     "PID",
					   "RESTARTS", "UPTIME", "SNAPSHOT", "REASON"};
	if (ctl_table_init(t, head, 8))
		return -ENOMEM;
	size_t i;
	json_t *vm;
	json_array_foreach(vms, i, vm)
	{
		char pid[24], restarts[24], up[24] = "-", snap[32] = "-";
		int_cell(vm, "pid", pid, sizeof(pid));
		int_cell(vm, "restarts", restarts, sizeof(restarts));
		const char *state = json_string_value(json_object_get(vm, "state"));
		json_t *u = json_object_get(vm, "uptime_ms");
		if (json_is_integer(u) && state && !strcmp(state, "running"))
			ctl_fmt_duration((uint64_t)json_integer_value(u), up, sizeof(up));
		json_t *at = json_object_get(json_object_get(vm, "snapshot"), "at_ms");
		if (json_is_integer(at)) {
			/* at_ms: emberd's CLOCK_MONOTONIC ms; now_ms the same clock */
			uint64_t a = (uint64_t)json_integer_value(at);
			char d[24];
			ctl_fmt_duration(now_ms > a ? now_ms - a : 0, d, sizeof(d));
			snprintf(snap, sizeof(snap), "%s ago", d);
		}
		const char *row[] = {json_string_value(json_object_get(vm, "name")),
				     state,
				     json_string_value(json_object_get(vm, "host")),
				     pid,
				     restarts,
				     up,
				     snap,
				     json_string_value(json_object_get(vm, "reason"))};
		if (ctl_table_add(t, row)) {
			ctl_table_free(t);
			return -ENOMEM;
		}
	}
	return 0;
}

void ctl_print_event(const json_t *ev, FILE *f)
{
	const char *time = json_string_value(json_object_get(ev, "time"));
	const char *vm = json_string_value(json_object_get(ev, "vm"));
	const char *kind = json_string_value(json_object_get(ev, "kind"));
	const char *detail = json_string_value(json_object_get(ev, "detail"));
	fprintf(f, "%s  %-12s  %-10s  %s\n", time ? time : "-", vm ? vm : "(host)",
		kind ? kind : "-", detail ? detail : "");
}
