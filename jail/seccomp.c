/* Per-role seccomp filters at run time: the BPF was generated at build
 * time from the allowlist table in jail/seccomp_rules.c (one comment per
 * syscall there and in docs/jail.md); here it is copied, ember's pid put
 * into the tgkill check, and loaded.  No libseccomp in ember: building
 * the filter at every start cost 50-60 us and a third of a MiB. */
#include <errno.h>
#include <malloc.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jail/jail.h"
#include "jail/seccomp_rules.h"
#include "seccomp_filters.h" /* generated: build/gen/ */

/* Sanitizer builds (make asan): the runtime makes syscalls of its own
 * (munmap and sigaltstack as threads end, LSan's exit-time scan clones
 * and ptraces the process), so there ENFORCE only logs.  Release builds
 * always kill. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif
#ifdef SANITIZER_BUILD
#define ENFORCE_KILLS false
#else
#define ENFORCE_KILLS true
#endif

const char *jail_role_name(enum jail_role role)
{
	switch (role) {
	case JAIL_ROLE_VMM:
		return "vmm";
	case JAIL_ROLE_VCPU:
		return "vcpu";
	case JAIL_ROLE_API:
		return "api";
	case JAIL_ROLE_MIG:
		return "mig";
	default:
		return NULL;
	}
}

unsigned jail_role_syscalls(enum jail_role role, const char **names, unsigned max)
{
	if ((unsigned)role >= JAIL_ROLE_COUNT)
		return 0;
	unsigned n = generated_filters[role].nr_names;
	for (unsigned i = 0; names && i < n && i < max; i++)
		names[i] = generated_filters[role].names[i];
	return n;
}

bool jail_seccomp_kills(void)
{
	return ENFORCE_KILLS;
}

int jail_seccomp_mode_parse(const char *s, enum jail_seccomp_mode *mode)
{
	if (strcmp(s, "enforce") == 0)
		*mode = JAIL_SECCOMP_ENFORCE;
	else if (strcmp(s, "log") == 0)
		*mode = JAIL_SECCOMP_LOG;
	else if (strcmp(s, "off") == 0)
		*mode = JAIL_SECCOMP_OFF;
	else
		return -EINVAL;
	return 0;
}

int jail_filter_build(struct jail_filter *f, enum jail_role role, enum jail_seccomp_mode mode)
{
	memset(f, 0, sizeof(*f));
	if ((unsigned)role >= JAIL_ROLE_COUNT)
		return -EINVAL;
	if (mode == JAIL_SECCOMP_OFF)
		return 0;
	if (mode != JAIL_SECCOMP_ENFORCE && mode != JAIL_SECCOMP_LOG)
		return -EINVAL;
	bool log = mode == JAIL_SECCOMP_LOG || !ENFORCE_KILLS;
	const struct sock_filter *src = log ? generated_filters[role].log : generated_filters[role].kill;
	unsigned short len = log ? generated_filters[role].log_len : generated_filters[role].kill_len;
	struct sock_filter *insns = malloc(len * sizeof(*insns));
	if (!insns)
		return -ENOMEM;
	memcpy(insns, src, len * sizeof(*insns));
	/* The one value known only now: our pid, in tgkill's tgid check. */
	uint32_t self = (uint32_t)getpid();
	for (unsigned i = 0; i < len; i++)
		if (BPF_CLASS(insns[i].code) == BPF_JMP && BPF_SRC(insns[i].code) == BPF_K &&
		    insns[i].k == JAIL_PID_PLACEHOLDER)
			insns[i].k = self;
	f->insns = insns;
	f->len = len;
	f->log = mode == JAIL_SECCOMP_LOG;
	return 0;
}

int jail_filter_apply(const struct jail_filter *f)
{
	if (f->len == 0)
		return 0;
	/* Required for an unprivileged thread to load a filter; harmless
	 * (and already set by jail_drop_caps) otherwise. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	struct sock_fprog prog = {.len = f->len, .filter = f->insns};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return -errno;
	return 0;
}

void jail_filter_free(struct jail_filter *f)
{
	free(f->insns);
	f->insns = NULL;
	f->len = 0;
}

int jail_seccomp(enum jail_role role, enum jail_seccomp_mode mode)
{
	struct jail_filter f;
	int r = jail_filter_build(&f, role, mode);
	if (r)
		return r;
	r = jail_filter_apply(&f);
	jail_filter_free(&f);
	return r;
}

void jail_malloc_on_brk(void)
{
	mallopt(M_ARENA_MAX, 1);
	mallopt(M_MMAP_MAX, 0);
}
