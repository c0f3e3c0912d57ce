/* Private to jail/: the allowlist table and its compilation to BPF with
 * libseccomp.  Linked only into the build-time generator
 * (jail/gen_seccomp.c) and the unit tests, never into ember. */
#ifndef EMBER_JAIL_SECCOMP_RULES_H
#define EMBER_JAIL_SECCOMP_RULES_H

#include <stdbool.h>
#include <stdint.h>

#include "jail/jail.h"

/* Placeholder for ember's pid in the generated filters (tgkill's tgid);
 * above pid_max (2^22), so it can be no real pid.  jail_filter_build()
 * replaces it in every BPF compare with getpid(). */
#define JAIL_PID_PLACEHOLDER 0x7e3b0001u

/* The names of role's allowed syscalls (up to max), and their number. */
unsigned rules_names(enum jail_role role, const char **names, unsigned max);

/* Compile role's allowlist: a syscall outside it kills the process, or is
 * logged (log); tgkill's tgid must equal self.  0 or -errno. */
int rules_build(struct jail_filter *f, enum jail_role role, bool log, uint32_t self);

#endif
