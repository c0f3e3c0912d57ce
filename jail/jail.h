/* The sandbox inside ember: one drop phase after every resource is
 * acquired and before the first guest instruction.  Capabilities go
 * (jail_drop_caps), then each thread loads the seccomp allowlist of its
 * role (jail_seccomp, or jail_filter_build once + jail_filter_apply per
 * thread).  Filters are per thread (no TSYNC): a thread created after its
 * creator loaded a filter inherits that filter.  See docs/jail.md for
 * each role's allowlist and who needs every entry.
 *
 * jail/ knows nothing of the monitor; ember-jailer (jail/jailer.c) is a
 * separate program with its own private header (jail/jailer.h). */
#ifndef EMBER_JAIL_H
#define EMBER_JAIL_H

#include <signal.h>
#include <stdbool.h>

/* A thread's role decides its allowlist. */
enum jail_role {
	JAIL_ROLE_VMM,	/* the main thread: vmm work after the drop, and vCPU 0's loop */
	JAIL_ROLE_VCPU, /* a thread started for vCPU 1..n: KVM_RUN and its exits */
	JAIL_ROLE_API,	/* the API thread (later issue): accept/read/write/epoll on a socket */
	JAIL_ROLE_MIG,	/* the migration thread: a stream fd, guest RAM, KVM's GETs */
	JAIL_ROLE_COUNT,
};

enum jail_seccomp_mode {
	JAIL_SECCOMP_ENFORCE, /* anything else kills the process (SECCOMP_RET_KILL_PROCESS);
			       * sanitizer builds log instead (docs/jail.md) */
	JAIL_SECCOMP_LOG,     /* anything else is allowed and logged by the kernel (audit) */
	JAIL_SECCOMP_OFF,     /* no filter: debugging only */
};

/* The only signal the filters let a thread send (tgkill to its own
 * process): the vCPU kick.  Must equal vcpu/vcpu.h's VCPU_KICK_SIGNAL;
 * the monitor checks that with a _Static_assert. */
#define JAIL_KICK_SIGNAL SIGUSR1

/* A compiled allowlist (classic BPF), built once and loaded by any number
 * of threads.  Fields are private to jail/. */
struct jail_filter {
	unsigned short len; /* instructions; 0 = no filter (mode OFF) */
	void *insns;	    /* struct sock_filter[len], malloc'd */
	bool log;	    /* built for JAIL_SECCOMP_LOG */
};

/* Keep malloc off mmap from now on, process-wide: every thread on the main
 * arena, grown with brk, and no mmap'd large blocks (mallopt).  The
 * filters allow brk, not mmap; call it before any thread that mallocs
 * after loading its filter exists. */
void jail_malloc_on_brk(void);

/* Drop every capability of the process for good: permitted, effective,
 * inheritable and ambient sets cleared, the bounding set emptied, and
 * PR_SET_NO_NEW_PRIVS set (libcap-ng, then prctl).  Call it on the main
 * thread before any other thread exists: capabilities are per thread and
 * new threads copy their creator's.  Without CAP_SETPCAP (ember started
 * unprivileged, e.g. by ember-jailer, which empties the bounding set
 * itself before it changes uid) a bounding set that is not already empty
 * stays as it is; that is not an error.  0 or -errno. */
__attribute__((warn_unused_result)) int jail_drop_caps(void);

/* Empty the bounding set (needs CAP_SETPCAP).  0, or -errno with the set
 * possibly part-emptied. */
__attribute__((warn_unused_result)) int jail_drop_bounding(void);

/* Build the filter of `role` for `mode` into *f (mode OFF gives an empty
 * filter that jail_filter_apply() skips).  Arguments that name this
 * process (tgkill's tgid) take the caller's getpid(), so build in the
 * process that applies it.  Does not load anything.  0 or -errno
 * (-EINVAL: bad role or mode, -ENOMEM). */
__attribute__((warn_unused_result)) int
jail_filter_build(struct jail_filter *f, enum jail_role role, enum jail_seccomp_mode mode);

/* Load f on the calling thread only, setting PR_SET_NO_NEW_PRIVS first.
 * One prctl and one seccomp(2) call, no allocation: safe on a freshly
 * started thread.  Final: no allowlist has prctl or seccomp, so a filtered
 * thread can load nothing more.  0 (also for an empty filter) or -errno. */
__attribute__((warn_unused_result)) int jail_filter_apply(const struct jail_filter *f);

/* Release what jail_filter_build() allocated; safe on a zeroed struct. */
void jail_filter_free(struct jail_filter *f);

/* Build and load `role`'s filter on the calling thread in one call.
 * 0 or -errno. */
__attribute__((warn_unused_result)) int jail_seccomp(enum jail_role role,
						     enum jail_seccomp_mode mode);

/* Whether ENFORCE kills in this build: false in sanitizer builds, whose
 * runtime makes syscalls of its own (there ENFORCE logs instead). */
bool jail_seccomp_kills(void);

/* "enforce", "log" or "off" -> *mode.  0 or -EINVAL. */
__attribute__((warn_unused_result)) int jail_seccomp_mode_parse(const char *s,
								enum jail_seccomp_mode *mode);

/* "vmm", "vcpu", "api", "mig"; NULL for anything else. */
const char *jail_role_name(enum jail_role role);

/* The syscall names `role` allows, in table order: up to max of them into
 * names[], and their count as the result (for docs, tests, and the
 * <= 20 per role budget). */
unsigned jail_role_syscalls(enum jail_role role, const char **names, unsigned max);

#endif
