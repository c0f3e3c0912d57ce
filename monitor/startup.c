/* The start-up timeout (startup.h).  File-scope state because a signal
 * handler reads it: the phase is one atomic pointer, the message's head
 * is written before the timer is armed and only read after. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "monitor/exitcodes.h"
#include "monitor/startup.h"

#define STARTUP_SIGNAL SIGALRM

static _Atomic(const char *) phase = "starting";
static char head[96]; /* "ember: timeout after 1 s during start-up (" */
static size_t head_len;
static timer_t timer;
static bool armed;

/* Async-signal-safe: write(2) and _exit(2) only. */
static void on_timeout(int sig)
{
	char msg[sizeof(head) + 96];
	const char *p = atomic_load(&phase);
	size_t n = head_len, plen = strnlen(p, 80);
	memcpy(msg, head, n);
	memcpy(msg + n, p, plen);
	n += plen;
	memcpy(msg + n, ")\n", 2);
	n += 2;
	(void)!write(STDERR_FILENO, msg, n);
	_exit(EXIT_TIMEOUT);
}

void startup_phase(const char *what)
{
	atomic_store(&phase, what);
}

int startup_timeout_arm(uint64_t deadline_ns, uint64_t timeout_ms)
{
	if (!armed) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_timeout;
		sigemptyset(&sa.sa_mask);
		if (sigaction(STARTUP_SIGNAL, &sa, NULL) < 0)
			return -errno;
		struct sigevent sev;
		memset(&sev, 0, sizeof(sev));
		sev.sigev_notify = SIGEV_THREAD_ID;
		sev.sigev_signo = STARTUP_SIGNAL;
		sev._sigev_un._tid = gettid();
		if (timer_create(CLOCK_MONOTONIC, &sev, &timer) < 0)
			return -errno;
		armed = true;
	} else {
		/* Stopped while the handler's message changes. */
		struct itimerspec stop = {0};
		timer_settime(timer, 0, &stop, NULL);
	}
	int n = snprintf(head, sizeof(head), "ember: timeout after %.3g s during start-up (",
			 (double)timeout_ms / 1000.0);
	head_len = n > 0 && (size_t)n < sizeof(head) ? (size_t)n : 0;
	struct itimerspec its = {
	    .it_value = {.tv_sec = (time_t)(deadline_ns / 1000000000ULL),
			 .tv_nsec = (long)(deadline_ns % 1000000000ULL)},
	};
	if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
		its.it_value.tv_nsec = 1; /* zero would disarm it */
	if (timer_settime(timer, TIMER_ABSTIME, &its, NULL) < 0) {
		int e = -errno;
		startup_timeout_disarm();
		return e;
	}
	return 0;
}

void startup_timeout_disarm(void)
{
	if (armed)
		timer_delete(timer);
	armed = false;
}
