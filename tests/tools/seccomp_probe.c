/* Test-only: load one role's seccomp filter (jail/) on this process, then
 * do one thing, so tests/integration/test_seccomp.py can see what the
 * filter lets through and what kills the process (SIGSYS).
 *
 *   seccomp_probe [--drop-caps] ROLE MODE ACTION
 *   ROLE: vmm | vcpu | api    MODE: enforce | log | off
 *
 * Every action writes one line on stdout before its test syscall
 * ("<action>: calling") and one after it ("<action>: survived"), then
 * leaves with the exit syscall its role allows (exit_group for vmm, exit
 * for the others), status 0.  Killed by the filter, the process dies of
 * SIGSYS after the first line only.  Action "time" prints how long the
 * drop takes, in microseconds.  `seccomp_probe --kills` exits 0 when this
 * build's ENFORCE kills, 1 when it only logs (sanitizer builds). */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "jail/jail.h"

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

static enum jail_role role;

static void say(const char *action, const char *what)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "%s: %s\n", action, what);
	if (write(STDOUT_FILENO, line, (size_t)n) < 0)
		return;
}

/* Leave through the syscall the role allows; no atexit, no stdio. */
static _Noreturn void leave(int code)
{
	if (role == JAIL_ROLE_VMM)
		syscall(SYS_exit_group, code);
	syscall(SYS_exit, code);
	for (;;)
		;
}

static void on_signal(int sig)
{
	(void)sig;
}

static double us_since(const struct timespec *a)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) * 1e6 + (double)(b.tv_nsec - a->tv_nsec) / 1e3;
}

static int usage(void)
{
	fprintf(stderr, "usage: seccomp_probe [--drop-caps] vmm|vcpu|api enforce|log|off ACTION\n"
			"actions: allowed forbidden open ioctl kvm-ioctl kvm-memslot kvm-create\n"
			"         kick signal clone-fork\n"
			"         clone-vm x32 madvise wait time\n");
	return 2;
}

/* The clone-vm child: leaves at once. */
static int child_exit(void *arg)
{
	(void)arg;
	syscall(SYS_exit_group, 0);
	return 0;
}

int main(int argc, char **argv)
{
	bool drop = false;
	enum jail_seccomp_mode mode;
	if (argc == 2 && strcmp(argv[1], "--kills") == 0)
		return jail_seccomp_kills() ? 0 : 1;
	if (argc > 1 && strcmp(argv[1], "--drop-caps") == 0) {
		drop = true;
		argc--;
		argv++;
	}
	if (argc != 4 || jail_seccomp_mode_parse(argv[2], &mode))
		return usage();
	const char *action = argv[3];
	for (role = 0; role < JAIL_ROLE_COUNT; role++)
		if (strcmp(jail_role_name(role), argv[1]) == 0)
			break;
	if (role == JAIL_ROLE_COUNT)
		return usage();

	/* A SIGSYS death must not leave core files behind in the tests. */
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	signal(JAIL_KICK_SIGNAL, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IONBF, 0);

	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (drop) {
		int r = jail_drop_caps();
		if (r) {
			fprintf(stderr, "seccomp_probe: jail_drop_caps: %s\n", strerror(-r));
			return 1;
		}
	}
	double t_caps = us_since(&t0);
	struct jail_filter f;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = jail_filter_build(&f, role, mode);
	double t_build = us_since(&t0);
	if (r) {
		fprintf(stderr, "seccomp_probe: jail_filter_build: %s\n", strerror(-r));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = jail_filter_apply(&f);
	double t_apply = us_since(&t0);
	if (r) {
		fprintf(stderr, "seccomp_probe: jail_filter_apply: %s\n", strerror(-r));
		return 1;
	}

	char buf[160];
	say(action, "calling");
	if (strcmp(action, "allowed") == 0) {
		/* what every role may do: write, read (EOF here), futex wake */
		int dummy = 0;
		if (read(STDIN_FILENO, buf, 0) < 0 || syscall(SYS_futex, &dummy, 1, 1, 0, 0, 0) < 0)
			say(action, "an allowed call failed");
	} else if (strcmp(action, "forbidden") == 0) {
		syscall(SYS_getppid); /* in no role's list */
	} else if (strcmp(action, "open") == 0) {
		syscall(SYS_openat, AT_FDCWD, "/", 0);
	} else if (strcmp(action, "ioctl") == 0) {
		struct termios t;
		ioctl(STDIN_FILENO, TCGETS, &t); /* not a KVM request */
	} else if (strcmp(action, "kvm-ioctl") == 0) {
		ioctl(-1, KVM_RUN, 0); /* allowed request, bad fd: EBADF */
	} else if (strcmp(action, "kvm-memslot") == 0) {
		ioctl(-1, KVM_SET_USER_MEMORY_REGION, 0); /* vm_track_dirty's; EBADF */
	} else if (strcmp(action, "kvm-create") == 0) {
		ioctl(-1, KVM_CREATE_VCPU, 0); /* builds the VM: never after the drop */
	} else if (strcmp(action, "kick") == 0) {
		syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), JAIL_KICK_SIGNAL);
	} else if (strcmp(action, "signal") == 0) {
		syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGTERM);
	} else if (strcmp(action, "clone-fork") == 0) {
		/* a plain fork: no CLONE_VM */
		long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0, 0, 0, 0);
		if (pid == 0)
			syscall(SYS_exit_group, 0);
	} else if (strcmp(action, "clone-vm") == 0) {
		/* the teardown child's flags, on a stack of its own, through
		 * glibc's clone() as ember's: a raw syscall() would return
		 * in the child onto an empty stack (a rare hang under ASan) */
		static char stack[16 * 1024] __attribute__((aligned(16)));
		clone(child_exit, stack + sizeof(stack), CLONE_VM, NULL);
	} else if (strcmp(action, "x32") == 0) {
		syscall(__X32_SYSCALL_BIT | SYS_getpid);
	} else if (strcmp(action, "madvise") == 0) {
		static char page[4096] __attribute__((aligned(4096)));
		syscall(SYS_madvise, page, sizeof(page), MADV_DONTNEED);
	} else if (strcmp(action, "wait") == 0) {
		/* hold still while the test reads /proc/PID/status */
		while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
			;
	} else if (strcmp(action, "time") == 0) {
		snprintf(buf, sizeof(buf), "caps %.1f build %.1f apply %.1f insns %u", t_caps,
			 t_build, t_apply, f.len);
		say(action, buf);
	} else {
		say(action, "unknown action");
		leave(2);
	}
	say(action, "survived");
	leave(0);
}
