/* One microVM: assembly from a struct vm_config, the run, the teardown.
 * The vmm thread (main's) builds everything, then waits for a stop while
 * the vCPU threads run; only this file's caller (main) exits the process. */
#ifndef EMBER_VM_H
#define EMBER_VM_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config/config.h"
#include "jail/jail.h"
#include "base/bus.h"
#include "base/evloop.h"
#include "base/guest_mem.h"
#include "monitor/legacy.h"
#include "monitor/boot/loader.h"
#include "vcpu/vcpu.h"

struct snap_reader;
struct hvt_guest;

#define VM_ERR_MAX 512

struct snap_stream;

/* A restore instead of a boot: set vm->restore before vm_build(). */
struct vm_restore {
	const char *state_path; /* the state file (a stream: the name vm_stream_config kept) */
	const char *mem_path;	/* its memory file (NULL for a stream) */
	bool copy_mem;		/* read the memory in (the file may go) rather than map it */
	bool paused;		/* vm_start() leaves every vCPU parked (vm_resume() to go) */
	/* A stream (ember run --restore -): its state is read already
	 * (vm_stream_config), its memory follows; NULL for files. */
	struct snap_stream *stream;
};

struct vm_stats {
	struct timespec t_start;	/* vm_build() entered */
	struct timespec t_running;	/* vCPU threads started */
	struct timespec t_first_output; /* the guest's first serial byte */
	struct timespec t_stop;		/* the stop was requested */
	atomic_bool have_first_output;
};

struct vm {
	const struct vm_config *cfg;
	int kvm_fd, vm_fd;
	size_t run_size;
	struct gmem mem;
	struct bus pio, mmio;
	struct vcpu vcpus[CFG_MAX_VCPUS];
	unsigned nr_vcpus;
	bool has_irqchip;
	struct load_result boot;
	uint64_t initrd_gpa, initrd_size;
	int serial_fd; /* owned when not stdout */

	struct hvt_guest *hvt; /* Solo5 hvt guests only */
	/* The vmm thread's event loop (vm_build makes it): virtio devices and
	 * their backends.  Without sources the boot vCPU runs on the main
	 * thread instead (vm_run's fast path). */
	struct evloop ev;
	struct vdevs *vdevs; /* virtio devices (monitor/vdevs.c) */
	struct uart com1;
	struct i8042 kbd;
	struct exit_port exitp;

	/* Stop: the first vm_stop() wins and sets exit_code and reason. */
	atomic_int stopping;
	int exit_code;
	char stop_reason[256];
	/* CLOCK_MONOTONIC; 0 = no timeout.  vm_run()/vm_start() set it from
	 * cfg->timeout_ms unless the caller did (after vm_build(), to count
	 * start-up in: `ember run`). */
	uint64_t deadline_ns;
	timer_t timeout_timer;
	bool timed;    /* timeout_timer exists */
	bool threaded; /* vm_start(): vCPU 0 has a thread, main serves vm->ev */
	bool paused;   /* vm_pause() */
	/* vm_start(): the CPUs vCPU 0's thread takes back once it runs (it
	 * is created on the starting thread's CPU); count 0: none to take */
	cpu_set_t vcpu0_cpus;
	/* vm_start_on(): vCPU 0 runs on this thread made ahead */
	struct vm_vcpu0_thread *vcpu0_thread;

	/* The drop phase (vm_run): the seccomp mode, each thread's filter
	 * (built once, loaded by every vCPU thread itself), and what the
	 * teardown child needs, made before the drop. */
	enum jail_seccomp_mode seccomp;
	struct jail_filter vmm_filter, vcpu_filter;
	void *teardown_stack; /* NULL: the kernel tears down at exit */
	int teardown_pipe[2];

	const struct vm_restore *restore; /* NULL: boot the kernel */
	struct snap_reader *snap;	  /* the state file, during a restore */
	bool restore_hvt;		  /* the snapshot is of a Solo5 hvt guest */
	struct kvm_cpuid2 *guest_cpuid;	  /* what every vCPU's CPUID was made from */
	bool track_dirty; /* memory slots log dirty pages (diff snapshots) */
	/* What a diff snapshot builds on (vm_snapshot.c): each page's hash as
	 * of the last whole snapshot (or the restore), and their sum; NULL
	 * when there is no such base (no snapshot yet, or the last failed). */
	uint64_t *mem_terms;
	uint64_t mem_hash_sum;
	bool dry_run;
	bool verbose;
	const char *cpuid_cache; /* NULL: always ask KVM */
	bool cpuid_cache_hit;
	struct vm_stats stats;
};

/* Build the VM from cfg: read and load the kernel (and initrd), write boot
 * structures, then (unless vm->dry_run) create the KVM VM, memory slots,
 * irqchip when needed, vCPUs and devices.  Nothing runs yet.  On failure
 * returns an EXIT_* code (EXIT_CONFIG for bad input, EXIT_HOST for host
 * trouble) with the reason in err; vm_destroy() is still safe. */
__attribute__((warn_unused_result)) int vm_build(struct vm *vm, const struct vm_config *cfg,
						 char *err, size_t errlen);

/* Run the guest until it stops or the timeout passes: the boot vCPU on the
 * calling thread, the others on their own threads.  First the drop phase
 * (docs/jail.md): capabilities go, and every thread loads its seccomp
 * filter (vm->seccomp) before its first KVM_RUN; from then on the process
 * makes only the syscalls jail/seccomp.c allows.  Returns ember's exit
 * code (see monitor/exitcodes.h); the reason is in vm->stop_reason. */
int vm_run(struct vm *vm);

/* vCPU 0's thread made ahead of vm_start_on() (the API, before
 * InstanceStart or a snapshot load), while nothing waits: it drops its
 * own capabilities, loads the vcpu filter and waits; the start then only
 * wakes it.  Owned by the caller; lives until the process ends or the VM
 * it ran stops (vm_wait joins it). */
struct vm_vcpu0_thread {
	pthread_t thread;
	pthread_mutex_t lock; /* guards state and vm */
	pthread_cond_t cv;
	struct jail_filter filter; /* the vcpu role's, loaded by the thread */
	int state;		   /* 0 setting up, 1 waiting, < 0 -errno: it ended */
	struct vm *vm;		   /* set by vm_start_on(): run this VM's vCPU 0 */
};

/* Make t's thread (seccomp: the mode its filter takes).  0 or -errno. */
__attribute__((warn_unused_result)) int vm_vcpu0_thread_make(struct vm_vcpu0_thread *t,
							     enum jail_seccomp_mode seccomp);

/* The same run in two halves, for callers that keep the calling thread
 * (the API's vmm thread).  vm_start(): the drop phase, then every vCPU on
 * its own thread (vCPU 0 too); returns at once, 0 once they run (the guest
 * may have stopped itself already: vm_wait() returns how) or an EXIT_*
 * code when the start failed, with the reason in vm->stop_reason.  The
 * calling thread is now the vmm thread under the vmm filter.  vm_wait():
 * serve vm->ev (virtio notifications, backends, timers, and whatever the
 * caller added) on the calling thread until the VM stops; join the vCPU
 * threads; return ember's exit code. */
__attribute__((warn_unused_result)) int vm_start(struct vm *vm);
/* vm_start(), with vCPU 0 on t's thread when it is waiting (t NULL, or
 * not ready: a new thread as vm_start()). */
__attribute__((warn_unused_result)) int vm_start_on(struct vm *vm, struct vm_vcpu0_thread *t);
int vm_wait(struct vm *vm);

/* Park every vCPU at a clean exit point (out of KVM_RUN, its exit fully
 * handled) and return when all are parked; vm_resume() lets them go on.
 * The vmm thread only.  0, -EALREADY (already paused / not paused), or
 * -ESHUTDOWN when the VM is stopping. */
__attribute__((warn_unused_result)) int vm_pause(struct vm *vm);
__attribute__((warn_unused_result)) int vm_resume(struct vm *vm);

/* > 0 when the VM must stop now: it is stopping already, or its --timeout
 * has passed (then this stops it with EXIT_TIMEOUT).  Any thread; for
 * code that waits on the guest's behalf (hvt POLL) after a signal. */
int vm_check_stop(struct vm *vm);

/* Stop the VM (any thread): first caller sets code and reason; all vCPUs
 * are kicked. */
void vm_stop(struct vm *vm, int code, const char *why);

/* Snapshots (monitor/vm_snapshot.c; restores monitor/vm_restore.c,
 * streams monitor/vm_stream.c).
 *
 * Write a snapshot of the paused VM (vm_pause) from the vmm thread: the
 * state file (configuration, devices, vCPUs, VM state; CRC-sealed) and
 * the memory file (sparse; with diff, only the pages dirtied since the
 * previous snapshot, which needs vm->track_dirty).  Each file goes to a
 * temp name, is fsynced and renamed, the memory file first; a crash at
 * any point leaves the previous snapshot or the new one whole (see
 * docs/snapshots.md).  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int vm_snapshot_create(struct vm *vm, const char *state_path,
							   const char *mem_path, bool diff,
							   char *err, size_t errlen);

/* Dirty page tracking (diff snapshots, migration) on or off while the VM
 * runs or is paused (`ember run --track-dirty` has it on from the start):
 * guest memory's slots switch KVM's log (gmem_log_dirty), nothing is
 * rebuilt or allocated.  On, the first diff needs a full snapshot first
 * (there is no base yet); off drops the base.  The vmm thread.  0 or
 * -errno (the slots as they were). */
__attribute__((warn_unused_result)) int vm_track_dirty(struct vm *vm, bool on);

/* Write a snapshot of the paused VM as one stream into fd (a pipe, a
 * socket, a file; blocking or not; not closed): the stream's header, the
 * state file, then every non-zero page of RAM and an end record with the
 * memory's hash (snapshot/snapshot.h, "streams").  Leaves dirty tracking
 * as it was: a stream is no base for diff snapshots.  From the vmm
 * thread.  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int vm_snapshot_stream(struct vm *vm, int fd, char *err,
							   size_t errlen);

/* The name a restore from a stream gives its state: what messages call
 * it, and vm_restore.state_path. */
#define VM_STREAM_NAME "stream"

/* Read a stream's header and state file from s (stdin for `ember run
 * --restore -`) and check its records into cfg, as vm_snapshot_config()
 * does for a file; the memory is read later, by vm_build() with
 * restore->stream = s.  0, or -errno with the reason ("stream: byte N:
 * ...") in err. */
__attribute__((warn_unused_result)) int vm_stream_config(struct snap_stream *s,
							 struct vm_config *cfg, char *err,
							 size_t errlen);

/* The configuration a state file was taken with, into cfg: a restore
 * applies its overrides (another tap, disk path, vsock socket, name) on
 * top and hands the result to vm_build() with vm->restore set.  Refuses
 * (-EINVAL, reason in err) a file that is truncated, corrupt, of another
 * format version or architecture. */
__attribute__((warn_unused_result)) int vm_snapshot_config(const char *state_path,
							   struct vm_config *cfg, char *err,
							   size_t errlen);

/* The host resources a snapshot's configuration names, which a restore
 * would open (drive files, a serial output file, the vsock socket it
 * binds) or attach to (taps).  A snapshot is untrusted input — a crafted
 * one could name any file its loader may write — so each must be
 * confirmed by whoever loads it: given again (an override, to the same
 * value or another) or all at once (all). */
struct vm_restore_paths {
	bool all;
	bool serial, vsock;
	bool drive[CFG_MAX_BLOCKS], net[CFG_MAX_NETS];
};

/* 0 when every host resource cfg names is confirmed in ok; else -EPERM
 * with the unconfirmed ones listed in err ("drive \"root\" (/srv/a.img),
 * serial output (/tmp/out)"), for the caller to say how to confirm them
 * in its own spelling. */
__attribute__((warn_unused_result)) int vm_snapshot_check_paths(const struct vm_config *cfg,
								const struct vm_restore_paths *ok,
								char *err, size_t errlen);

/* The restore's steps, in vm_build() (vm.c) order; each returns 0 or an
 * EXIT_* code with the reason in err.  open: read and check the state
 * file (vCPU count, memory size, irqchip, hvt); memory: map the memory
 * file and check it is the state file's; cpuid: the guest's saved CPUID
 * if this host has all of it (host: KVM's supported set); state: overlay
 * the VM, vCPU and device state once all are built; hvt: a Solo5
 * guest's manifest; close: drop the state file (safe twice). */
int vm_restore_open(struct vm *vm, char *err, size_t errlen);
int vm_restore_memory(struct vm *vm, char *err, size_t errlen);
int vm_restore_cpuid(struct vm *vm, const struct kvm_cpuid2 *host, char *err, size_t errlen);
int vm_restore_state(struct vm *vm, char *err, size_t errlen);
int vm_restore_hvt(struct vm *vm, struct hvt_guest *g, char *err, size_t errlen);
void vm_restore_close(struct vm *vm);

/* Called just before the process exits: hand the KVM objects to a child
 * process that outlives ember briefly, so the exit status reaches our
 * parent without waiting for KVM's teardown (16-24 ms with an irqchip,
 * ~0.4 ms without, on these hosts).  The child closes its stdio at once,
 * so readers of ember's output see EOF when ember exits.  Only after
 * vm_run(), whose drop phase made the child's stack and pipe.  Best
 * effort: on any failure the kernel tears down at exit as usual. */
void vm_detach_teardown(struct vm *vm);

/* Release everything vm_build() acquired. */
void vm_destroy(struct vm *vm);

#endif
