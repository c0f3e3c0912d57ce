/* The seccomp allowlists, as a table, compiled to BPF with libseccomp at
 * build time (jail/gen_seccomp.c writes build/gen/seccomp_filters.h).
 * One table: each allowed syscall once, the roles that may make it, an
 * argument check, and a comment saying who needs it.  Measured with
 * strace -f on every guest kind (hello, smp, --timeout, triple fault,
 * hvt) and checked by running the integration tests in LOG mode.
 * Syscalls made only before the drop (open, mmap of guest RAM,
 * KVM_CREATE_*, timer_create, pthread_create...) are not here: that is
 * the point of the drop phase.
 *
 * Built at build time, not in ember: libseccomp's filter generation cost
 * 50-60 us and a third of a MiB of heap on every start. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/userfaultfd.h>

#include "jail/jail.h"
#include "jail/seccomp_rules.h"

#define VMM (1u << JAIL_ROLE_VMM)
#define VCPU (1u << JAIL_ROLE_VCPU)
#define API (1u << JAIL_ROLE_API)
/* The migration thread (monitor/migrate/): reads and writes the stream
 * fd its controller passed, copies guest RAM, fetches dirty pages and,
 * the VM frozen by the vmm thread, saves its state (KVM's GETs). */
#define MIG (1u << JAIL_ROLE_MIG)

enum arg_check {
	ARG_ANY,
	ARG_KVM_IOCTL, /* request is one of kvm_ioctls[] */
	ARG_OWN_KILL,  /* tgid is this process, signal is the kick or SIGABRT */
	ARG_CLONE_VM,  /* flags are exactly CLONE_VM (no thread, no new namespace) */
	ARG_MADV_FREE, /* advice is MADV_DONTNEED */
	ARG_OPEN_SNAPSHOT, /* flags create a new temp file, or open a folder to sync it: nothing
			    * that exists can be read or written */
	ARG_AF_UNIX,   /* domain (argument 0) is AF_UNIX */
};

struct allow {
	int nr;
	const char *name;
	unsigned roles;
	enum arg_check check;
};

/* clang-format off */
#define ALLOW(sys, roles, check) {SCMP_SYS(sys), #sys, roles, check}
/* clang-format on */

static const struct allow allowlist[] = {
    /* vcpu_run: KVM_RUN; vm_irq: KVM_IRQ_LINE (the UART's interrupt);
     * vcpu_dump: KVM_GET_REGS/KVM_GET_SREGS after a fault; snapshots;
     * vm_track_dirty (the requests and roles: kvm_ioctls[]) */
    ALLOW(ioctl, VMM | VCPU | MIG, ARG_KVM_IOCTL),
    /* uart: guest serial output; hvt: PUTS, NET_WRITE (tap), ring I/O's
     * writes (tap) and its kick to itself (eventfd); stderr
     * messages (vcpu_dump, the stop reason, --stats); API replies, and
     * the API mailbox's eventfds (a call waits; a long job is done);
     * virtio-vsock: bytes to host sockets; mig: the migration stream */
    ALLOW(write, VMM | VCPU | API | MIG, ARG_ANY),
    /* hvt: NET_READ (tap), ring I/O's reads (tap) and its kick (eventfd,
     * vmm); the teardown child waits on its pipe (vmm);
     * API requests and mailbox eventfds; virtio-vsock: bytes from host
     * sockets */
    ALLOW(read, VMM | VCPU | API | MIG, ARG_ANY),
    /* hvt: BLOCK_READ; mig: /proc/self/pagemap (opened at start-up), which pages of RAM
     * were never touched (sent as nothing, never read) */
    ALLOW(pread64, VMM | VCPU | MIG, ARG_ANY),
    /* virtio-blk: a request's segments straight into guest RAM */
    ALLOW(preadv, VMM, ARG_ANY),
    ALLOW(pwritev, VMM, ARG_ANY),
    /* virtio-blk: FLUSH; mig: a disk copied with the VM, synced at its end
     * (DSKE) on the target */
    ALLOW(fdatasync, VMM | MIG, ARG_ANY),
    /* snapshots (vm_snapshot.c, snapshot/): the state and memory files
     * are created under a temp name, sized, written, synced and renamed
     * over the old ones; the folder is opened to sync the rename; a failed
     * write removes its temp file; a diff checks its holes with lseek */
    ALLOW(openat, VMM, ARG_OPEN_SNAPSHOT),
    ALLOW(ftruncate, VMM, ARG_ANY),
    ALLOW(fsync, VMM, ARG_ANY),
    ALLOW(rename, VMM, ARG_ANY),
    ALLOW(unlink, VMM, ARG_ANY),
    /* mig: the source's disk copy finds data past holes (SEEK_DATA) */
    ALLOW(lseek, VMM | MIG, ARG_ANY),
    /* snapshots: the new memory file's identity (device, inode), which
     * the state file records */
    ALLOW(newfstatat, VMM, ARG_ANY),
    /* virtio-blk: DISCARD and WRITE_ZEROES (punch a hole / zero a range);
     * mig: a copied disk's zeroed blocks punched on the target */
    ALLOW(fallocate, VMM | MIG, ARG_ANY),
    /* drive moves (base/blk_mirror.c): the destination's writeback is
     * started after each copy step and waited for a little behind it, so
     * the pivot's fdatasync has little left to do (the fd came with the
     * API request; nothing is opened); mig: a disk copied with the VM,
     * its writeback started as each extent lands on the target */
    ALLOW(sync_file_range, VMM | MIG, ARG_ANY),
    /* drive moves: the destination's "incomplete" mark (DMOVE_XATTR) is
     * removed from its fd before the pivot */
    ALLOW(fremovexattr, VMM, ARG_ANY),
    /* virtio-rng: the guest's entropy */
    ALLOW(getrandom, VMM, ARG_ANY),
    /* migration: max_bandwidth paces the stream (a sleep between records) */
    ALLOW(clock_nanosleep, MIG, ARG_ANY),
    /* virtio rate limiters: the retry timer (a timerfd); the metrics
     * timer (API mode); the API's connection clocks; virtio-vsock:
     * its connection deadlines */
    ALLOW(timerfd_settime, VMM | API, ARG_ANY),
    /* hvt: BLOCK_WRITE; mig: a copied disk's extents into its
     * destination on the target (the fd the vmm thread opened) */
    ALLOW(pwrite64, VMM | VCPU | MIG, ARG_ANY),
    /* hvt: POLL waits for a tap to become readable; a stream (snapshot,
     * migration) waits on a non-blocking fd that is full or empty */
    ALLOW(ppoll, VMM | VCPU | MIG, ARG_ANY),
    /* the --timeout deadline, hvt WALLTIME and POLL: normally the vDSO,
     * a real syscall when the clocksource has no vDSO support */
    ALLOW(clock_gettime, VMM | VCPU | API | MIG, ARG_ANY),
    /* return from the kick handler (SIGUSR1 pulls KVM_RUN out) */
    ALLOW(rt_sigreturn, VMM | VCPU | API | MIG, ARG_ANY),
    /* glibc: pthread_kill blocks signals around tgkill; a thread blocks
     * them before it exits */
    ALLOW(rt_sigprocmask, VMM | VCPU | API | MIG, ARG_ANY),
    /* vcpu_kick (pthread_kill) from vm_stop, on any thread; abort() */
    /* mig: SIGABRT when post-copy's source is lost (mig_post_recv.c) */
    ALLOW(tgkill, VMM | VCPU | MIG, ARG_OWN_KILL),
    /* glibc: pthread_kill asks for the tgid */
    ALLOW(getpid, VMM | VCPU, ARG_ANY),
    /* glibc: pthread_kill of the calling thread itself (vm_stop on vCPU 0) */
    ALLOW(gettid, VMM | VCPU, ARG_ANY),
    /* pthread_join (vmm), contended stdio and UART locks (everyone) */
    ALLOW(futex, VMM | VCPU | API | MIG, ARG_ANY),
    /* glibc: a finished thread gives back its stack's pages */
    ALLOW(madvise, VCPU | API | MIG, ARG_MADV_FREE),
    /* a vCPU (or API) thread returns */
    ALLOW(exit, VCPU | API | MIG, ARG_ANY),
    /* ember exits; so does the teardown child */
    ALLOW(exit_group, VMM, ARG_ANY),
    /* vm_run drops the --timeout timer once vCPU 0 returns */
    ALLOW(timer_delete, VMM, ARG_ANY),
    /* vm_detach_teardown: the child that holds the KVM fds (CLONE_VM only) */
    ALLOW(clone, VMM, ARG_CLONE_VM),
    /* vm_detach_teardown and its child close pipe ends and stdio; the API
     * closes connections */
    ALLOW(close, VMM | API | MIG, ARG_ANY),
    /* API: connections from the listening socket; virtio-vsock: host
     * connections on its uds */
    ALLOW(accept4, VMM | API, ARG_ANY),
    /* API: a request's bytes and the one file descriptor that may come
     * with them (SCM_RIGHTS: a snapshot stream's pipe or socket);
     * migration, same host (mode local): the target receives the
     * source's RAM memfd with a record (SCM_RIGHTS) */
    ALLOW(recvmsg, API | MIG, ARG_ANY),
    /* migration, same host: the source sends its RAM's memfd so */
    ALLOW(sendmsg, MIG, ARG_ANY),
    /* virtio-vsock: a guest's connection to <uds>_PORT (unix sockets only) */
    ALLOW(socket, VMM, ARG_AF_UNIX),
    /* virtio-vsock: the same connection (AF_UNIX: it completes at once) */
    ALLOW(connect, VMM, ARG_ANY),
    /* virtio-vsock: the guest's SHUTDOWN(SEND) passed on as SHUT_WR */
    ALLOW(shutdown, VMM, ARG_ANY),
    /* malloc after the drop (the API's request bodies, JSON and replies;
     * a snapshot's state file): the drop phase keeps every thread on the
     * main arena and out of mmap (mallopt in vm_run.c and api_main.c),
     * so the heap only grows and shrinks with brk */
    ALLOW(brk, VMM | API | MIG, ARG_ANY),
    /* the vmm thread's event loop (virtio queues and backends); the
     * API's waits for its socket */
    ALLOW(epoll_wait, VMM | API, ARG_ANY),
    /* virtio-net pauses and resumes reading its tap; virtio-vsock
     * watches its host sockets; the API adds and removes the accepted
     * connection */
    ALLOW(epoll_ctl, VMM | API, ARG_ANY),
};

/* The KVM requests a thread may make after the drop, and which roles;
 * everything that builds the VM (CREATE_*, SET_*) happened before it. */
static const struct {
	unsigned long req;
	unsigned roles;
} kvm_ioctls[] = {
    {KVM_RUN, VMM | VCPU},	 /* vcpu_run */
    {KVM_IRQ_LINE, VMM | VCPU},	 /* vm_irq: the UART's interrupt (irqchip only) */
    {KVM_GET_REGS, VMM | VCPU | MIG},	 /* vcpu_dump after a triple fault or KVM error */
    {KVM_GET_SREGS, VMM | VCPU | MIG}, /* vcpu_dump; vcpu_save_state (snapshots) */
    /* Snapshots, from the vmm thread with every vCPU parked: vcpu_save_state;
     * a migration's state, from its thread while the vmm thread holds
     * the VM frozen (monitor/migrate/) */
    {KVM_GET_MP_STATE, VMM | VCPU | MIG},    /* the vCPU's run state (halted, waiting for SIPI) */
    {KVM_GET_XSAVE, VMM | VCPU | MIG},       /* FPU, SSE, AVX registers */
    {KVM_GET_XCRS, VMM | VCPU | MIG},	       /* XCR0 */
    {KVM_GET_DEBUGREGS, VMM | VCPU | MIG},   /* DR0-DR3, DR6, DR7 */
    {KVM_GET_LAPIC, VMM | VCPU | MIG},       /* the in-kernel LAPIC's registers (irqchip only) */
    {KVM_GET_TSC_KHZ, VMM | VCPU | MIG},     /* the guest's TSC frequency, checked at restore */
    {KVM_GET_MSRS, VMM | VCPU | MIG},	       /* the MSRs vcpu_state_init listed */
    {KVM_GET_VCPU_EVENTS, VMM | VCPU | MIG}, /* pending exceptions, interrupts, NMIs */
    {KVM_GET_CPUID2, VMM | VCPU | MIG},      /* vcpu_get_cpuid: the CPUID the guest was given */
    /* Snapshots: vcpu_vm_save, and diff snapshots' dirty pages */
    {KVM_GET_CLOCK, VMM | VCPU | MIG},     /* kvmclock */
    {KVM_GET_IRQCHIP, VMM | VCPU | MIG},   /* the PICs and the IOAPIC (irqchip only) */
    {KVM_GET_PIT2, VMM | VCPU | MIG},	     /* the PIT (irqchip only) */
    {KVM_GET_DIRTY_LOG, VMM | VCPU | MIG}, /* pages written since the last snapshot (track_dirty) */
    /* vm_track_dirty: the one SET, the vmm thread's only: migration turns
     * dirty logging on only while it runs, so an existing slot's flags
     * change at run time (gmem_log_dirty, KVM API 4.35) */
    {KVM_SET_USER_MEMORY_REGION, VMM},
    /* Not KVM's: post-copy's userfaultfd (monitor/migrate/mig_post_recv.c),
     * the fd made before any sandbox, on the migration thread only */
    {UFFDIO_REGISTER, MIG},   /* guest RAM, for missing pages, before GOGO */
    {UFFDIO_UNREGISTER, MIG}, /* every page in */
    {UFFDIO_COPY, MIG},	      /* a page that came: installed, its waiters woken */
    {UFFDIO_ZEROPAGE, MIG},   /* a page that is zero */
    {UFFDIO_WAKE, MIG},	      /* waiters on a page in already */
};

unsigned rules_names(enum jail_role role, const char **names, unsigned max)
{
	unsigned n = 0;
	for (size_t i = 0; i < sizeof(allowlist) / sizeof(allowlist[0]); i++) {
		if (!(allowlist[i].roles & (1u << role)))
			continue;
		if (names && n < max)
			names[n] = allowlist[i].name;
		n++;
	}
	return n;
}

/* libseccomp returns -errno; keep only values that mean something. */
static int scmp_err(int r)
{
	return r < 0 && r > -4096 ? r : -EINVAL;
}

/* Argument `arg` equals v (libseccomp's SCMP_An macros leave a field
 * out, which clang's -Wextra reports). */
static struct scmp_arg_cmp eq(unsigned arg, scmp_datum_t v)
{
	return (struct scmp_arg_cmp){.arg = arg, .op = SCMP_CMP_EQ, .datum_a = v, .datum_b = 0};
}

static int add_rule(scmp_filter_ctx ctx, const struct allow *a, unsigned role, uint32_t self)
{
	int r = 0;
	switch (a->check) {
	case ARG_ANY:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 0);
	case ARG_KVM_IOCTL:
		for (size_t i = 0; i < sizeof(kvm_ioctls) / sizeof(kvm_ioctls[0]) && !r; i++)
			if (kvm_ioctls[i].roles & role)
				r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 1,
						     eq(1, kvm_ioctls[i].req));
		return r;
	case ARG_OWN_KILL:
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 2, eq(0, (scmp_datum_t)self),
				     eq(2, JAIL_KICK_SIGNAL));
		return r ? r
			 : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 2,
					    eq(0, (scmp_datum_t)self), eq(2, SIGABRT));
	case ARG_CLONE_VM:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 1, eq(0, CLONE_VM));
	case ARG_MADV_FREE:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 1, eq(2, MADV_DONTNEED));
	case ARG_OPEN_SNAPSHOT:
		/* snapshot/format.c: snap_tmp_open() and snap_sync_dir() */
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 1,
				     eq(2, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW));
		return r ? r
			 : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 1,
					    eq(2, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	case ARG_AF_UNIX:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, a->nr, 1, eq(0, AF_UNIX));
	}
	return -EINVAL;
}

/* libseccomp 2.5 exports BPF only to an fd: a memfd, read back. */
static int export_bpf(scmp_filter_ctx ctx, struct jail_filter *f)
{
	int fd = memfd_create("ember-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = seccomp_export_bpf(ctx, fd);
	off_t size = r == 0 ? lseek(fd, 0, SEEK_END) : -1;
	if (r == 0 && (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
		       size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS))
		r = -E2BIG;
	void *buf = r == 0 ? malloc((size_t)size) : NULL;
	if (r == 0 && !buf)
		r = -ENOMEM;
	if (r == 0 && pread(fd, buf, (size_t)size, 0) != size)
		r = -EIO;
	close(fd);
	if (r) {
		free(buf);
		return scmp_err(r);
	}
	f->insns = buf;
	f->len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
	return 0;
}

int rules_build(struct jail_filter *f, enum jail_role role, bool log, uint32_t self)
{
	memset(f, 0, sizeof(*f));
	if ((unsigned)role >= JAIL_ROLE_COUNT)
		return -EINVAL;

	/* Level 3 (Linux 4.14: RET_LOG, RET_KILL_PROCESS) is all we use;
	 * saying so spares libseccomp eight probing syscalls. */
	if (seccomp_api_set(3))
		return -ENOSYS;
	uint32_t deny = log ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
	scmp_filter_ctx ctx = seccomp_init(deny);
	if (!ctx)
		return -ENOMEM;
	/* A foreign ABI (i386 int 0x80, x32) is never ember's: same fate.
	 * Binary-tree dispatch keeps KVM_RUN's path short. */
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, deny);
	if (!r)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	for (size_t i = 0; i < sizeof(allowlist) / sizeof(allowlist[0]) && !r; i++)
		if (allowlist[i].roles & (1u << role))
			r = add_rule(ctx, &allowlist[i], 1u << role, self);
	if (!r)
		r = export_bpf(ctx, f);
	seccomp_release(ctx);
	if (r)
		return scmp_err(r);
	f->log = log;
	return 0;
}

