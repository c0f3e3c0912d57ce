/* Events: a ring of the last ED_EVENTS_MAX with increasing seq (GET
 * /events), each appended as one JSON line to STATE/events.log (no fsync:
 * a record, not a commit) and written to stderr with journald's "<N>"
 * priority prefix (sd-daemon(3)). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ha/emberd/local.h"

#define ED_EVENTS_MAX 4096

struct event {
	uint64_t seq, mono_us;
	struct timespec time;
	char vm[ED_NAME_MAX + 1];
	bool has_vm;
	char kind[24];
	char detail[ED_ERR_MAX];
};

struct watch {
	void (*fn)(void *);
	void *arg;
	struct watch *next;
};

struct ed_events {
	struct event *ring; /* seq n at ring[(n - 1) % ED_EVENTS_MAX] */
	uint64_t last;	    /* the newest seq, 0: none yet */
	int log_fd;
	char host[ED_NAME_MAX + 1];
	struct watch *watches;
};

void ed_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

int ed_events_new(struct ed_events **ep, const char *log_path, const char *host)
{
	struct ed_events *e = calloc(1, sizeof(*e));
	if (!e || !(e->ring = calloc(ED_EVENTS_MAX, sizeof(*e->ring)))) {
		free(e);
		return -ENOMEM;
	}
	snprintf(e->host, sizeof(e->host), "%s", host);
	e->log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (e->log_fd < 0) {
		int r = -errno;
		free(e->ring);
		free(e);
		return r;
	}
	*ep = e;
	return 0;
}

void ed_events_free(struct ed_events *e)
{
	if (!e)
		return;
	while (e->watches) {
		struct watch *w = e->watches;
		e->watches = w->next;
		free(w);
	}
	close(e->log_fd);
	free(e->ring);
	free(e);
}

static json_t *event_json(const struct ed_events *e, const struct event *ev)
{
	struct tm tm;
	char t[40];
	gmtime_r(&ev->time.tv_sec, &tm);
	size_t n = strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(t + n, sizeof(t) - n, ".%03ldZ", ev->time.tv_nsec / 1000000);
	/* mono_ms/mono_us: emberd's CLOCK_MONOTONIC, for intervals between events */
	return json_pack("{s:I, s:s, s:I, s:I, s:s, s:o, s:s, s:s}", "seq", (json_int_t)ev->seq,
			 "time", t, "mono_ms", (json_int_t)(ev->mono_us / 1000), "mono_us",
			 (json_int_t)ev->mono_us, "host", e->host, "vm",
			 ev->has_vm ? json_string(ev->vm) : json_null(), "kind", ev->kind, "detail",
			 ev->detail);
}

/* journald's levels: a VM that failed or a fenced host needs a human. */
static int priority(const char *kind)
{
	if (!strcmp(kind, "failed") || !strcmp(kind, "config-error"))
		return LOG_ERR;
	if (!strcmp(kind, "fenced") || !strcmp(kind, "exited") || !strcmp(kind, "snapshot-failed"))
		return LOG_WARNING;
	return LOG_INFO;
}

void ed_event(struct ed_host *h, const char *vm, const char *kind, const char *fmt, ...)
{
	struct ed_events *e = ed_host_events(h);
	struct event *ev = &e->ring[e->last % ED_EVENTS_MAX];
	memset(ev, 0, sizeof(*ev));
	ev->seq = ++e->last;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ev->mono_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	clock_gettime(CLOCK_REALTIME, &ev->time);
	if (vm) {
		ev->has_vm = true;
		snprintf(ev->vm, sizeof(ev->vm), "%s", vm);
	}
	snprintf(ev->kind, sizeof(ev->kind), "%s", kind);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ev->detail, sizeof(ev->detail), fmt, ap);
	va_end(ap);

	fprintf(stderr, "<%d>emberd: %s%s%s: %s\n", priority(kind), vm ? vm : "", vm ? ": " : "",
		kind, ev->detail);
	json_t *j = event_json(e, ev);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (s) {
		size_t n = strlen(s);
		s[n] = '\n'; /* json_dumps leaves room for its NUL: replace it */
		if (write(e->log_fd, s, n + 1) < 0) {
			/* a full disk loses log lines, never the event */
		}
		free(s);
	}
	json_decref(j);
	/* watchers may unwatch themselves: walk a copy of the next pointer */
	for (struct watch *w = e->watches, *next; w; w = next) {
		next = w->next;
		w->fn(w->arg);
	}
}

json_t *ed_events_since(struct ed_host *h, uint64_t since, uint64_t *next)
{
	struct ed_events *e = ed_host_events(h);
	json_t *a = json_array();
	uint64_t first = e->last > ED_EVENTS_MAX ? e->last - ED_EVENTS_MAX + 1 : 1;
	if (since + 1 > first)
		first = since + 1;
	for (uint64_t s = first; a && s <= e->last; s++)
		json_array_append_new(a, event_json(e, &e->ring[(s - 1) % ED_EVENTS_MAX]));
	*next = e->last > since ? e->last : since;
	return a;
}

int ed_events_watch(struct ed_host *h, void (*fn)(void *), void *arg)
{
	struct ed_events *e = ed_host_events(h);
	struct watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct watch){.fn = fn, .arg = arg, .next = e->watches};
	e->watches = w;
	return 0;
}

void ed_events_unwatch(struct ed_host *h, void (*fn)(void *), void *arg)
{
	struct ed_events *e = ed_host_events(h);
	for (struct watch **p = &e->watches; *p; p = &(*p)->next)
		if ((*p)->fn == fn && (*p)->arg == arg) {
			struct watch *w = *p;
			*p = w->next;
			free(w);
			return;
		}
}
