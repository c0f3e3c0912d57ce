/* One microVM: assembly from a struct vm_config, the run, the teardown.
 * The vmm thread (main's) builds everything, then waits for a stop while
 * the vCPU threads run; only this file's caller (main) exits the process. */
#ifndef EMBER_VM_H
#define EMBER_VM_H

#include <errno.h>
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

struct hvt_guest;
struct snap_reader;
struct snap_stream;
struct snap_writer;
struct vm;
struct vm_snapshot;

#define VM_ERR_MAX 512

/* ---- Parts (monitor/vm_parts.c) ----
 * Each part of a VM that holds state of its own (the KVM VM state, each
 * vCPU, the UART, each virtio device's transport and its own record, the
 * hvt frontend) registers one vm_part when it is built.  A snapshot is
 * the walk of that list (vm_state_save), a restore the normal build and
 * then one walk that overlays what was saved (vm_state_load).  A part's
 * record is one section of the state file: (tag, index). */

/* The largest record a part writes (a vCPU's: struct vcpu_state). */
#define VM_PART_RECORD_MAX 16384
/* The VM's machine (its KVM state, its vCPUs): restored before every
 * other part, so an interrupt a device raises as it is restored finds the
 * irqchip and the LAPICs as saved (KVM API §4: VM state, then vCPUs);
 * saved after them (the state file's order). */
#define VM_PART_MACHINE 1u
/* The record may be absent from a snapshot (a device's own record). */
#define VM_PART_OPTIONAL 2u

struct vm_part {
	uint32_t tag, index; /* the state file's section (SNAP_TAG) */
	uint32_t size;	     /* the record's fixed width; 0: any, up to VM_PART_RECORD_MAX */
	unsigned flags;	     /* VM_PART_* */
	void *opaque;	     /* the part's own (a vCPU, a device...) */
	/* Write the record (the VM paused) into buf, at most max bytes:
	 * its length, or -errno with the reason in err. */
	int (*save)(const struct vm_part *p, void *buf, size_t max, char *err, size_t errlen);
	/* Check rec (len bytes; NULL when an optional record is absent) and
	 * overlay it on the freshly built part, before the VM runs: 0,
	 * -EINVAL for a record that is not this part's (err says why, the
	 * caller names the snapshot), another -errno for host trouble. */
	int (*restore)(const struct vm_part *p, const void *rec, size_t len, char *err,
		       size_t errlen);
};

/* One per KVM VM state, vCPU, UART, two per virtio device, hvt. */
#define VM_PARTS_MAX (3 + CFG_MAX_VCPUS + 2 * 19)

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

	/* The parts that save and restore their own state, in the order
	 * they were built (vm_parts.c). */
	struct vm_part parts[VM_PARTS_MAX];
	unsigned nr_parts;
	bool restored;	   /* built from a snapshot, not booted */
	bool start_paused; /* vm_start() leaves every vCPU parked */
	struct kvm_cpuid2 *guest_cpuid; /* what every vCPU's CPUID was made from */
	bool track_dirty; /* memory slots log dirty pages (diff snapshots) */
	/* What a diff snapshot builds on (vm_snapshot.c): each page's hash as
	 * of the last whole snapshot (or the restore), and their sum; NULL
	 * when there is no such base (no snapshot yet, or the last failed). */
	uint64_t *mem_terms;
	uint64_t mem_hash_sum;
	/* Where snapshots, streams and loads say how far they are (the API's
	 * GET /); NULL: nowhere. */
	struct snap_progress *progress;
	/* dry_run, verbose, cpuid_cache, track_dirty, seccomp and progress
	 * are the build options' (vm_build copies them in). */
	bool dry_run;
	bool verbose;
	const char *cpuid_cache; /* NULL: always ask KVM */
	bool cpuid_cache_hit;
	struct vm_stats stats;
};

/* The host-side pieces of a VM that need no configuration, made ahead of
 * it (monitor/vm_prebuild.c): the API makes them while it waits for
 * InstanceStart or a snapshot load, so the start pays only for what the
 * configuration decides.  /dev/kvm, the KVM VM (no memory slots yet: they
 * still come before the irqchip), vCPU 0 with its kvm_run, the host's
 * supported CPUID and what vCPU state needs from KVM. */
struct vm_prebuilt {
	int kvm_fd, vm_fd; /* -1: not made */
	size_t run_size;
	int vcpu0_fd; /* -1: not made */
	struct kvm_run *vcpu0_run;
	struct kvm_cpuid2 *cpuid; /* NULL: not read */
	bool cpuid_hit;
};

/* Make what p holds (cpuid_cache as vm_build_opts's).  Best effort: what
 * fails is left unmade (-1 / NULL) and vm_build() makes it as usual;
 * returns 0 when everything was made, else the first -errno. */
int vm_prebuild(struct vm_prebuilt *p, const char *cpuid_cache);

/* Release what p still holds (vm_build() takes what it uses). */
void vm_prebuilt_free(struct vm_prebuilt *p);

/* What vm_build() takes besides the configuration.  Zeroed: a boot of
 * cfg's kernel, enforcing seccomp, asking KVM for its CPUID each time. */
struct vm_build_opts {
	bool dry_run;			/* load and check the guest only: no KVM */
	bool verbose;			/* log unhandled port and MMIO accesses */
	bool track_dirty;		/* memory slots log dirty pages (diff snapshots) */
	bool mem_shared; /* a boot's RAM in a memfd (gmem_init_shared): same-host upgrades */
	enum jail_seccomp_mode seccomp; /* the drop phase's (vm_run, vm_start) */
	const char *cpuid_cache;	/* KVM's supported CPUID cached here; NULL: none */
	/* A restore instead of a boot: the snapshot cfg came from
	 * (vm_snapshot_open*, the caller's to close once vm_build() has
	 * returned); NULL boots cfg's kernel. */
	struct vm_snapshot *snapshot;
	const char *mem_path; /* its memory file; NULL for a stream, whose memory follows */
	bool copy_mem;	      /* read the memory in (the file may go) rather than map it */
	bool paused;	      /* vm_start() leaves every vCPU parked (vm_resume() to go) */
	/* A restore whose RAM is here already, filled (a migration's target:
	 * vm_snapshot_open_mem): taken over by the build (*mem zeroed), its
	 * size and digest checked against the snapshot's.  NULL: the
	 * snapshot's memory file or stream. */
	struct gmem *mem;
	struct snap_progress *progress; /* vm->progress (may be NULL) */
	/* Made ahead (may be NULL): vm_build() takes over what it uses and
	 * leaves -1 / NULL in its place. */
	struct vm_prebuilt *pre;
};

/* Build the VM from cfg and o (copied in; vm is overwritten).  A boot:
 * read and load the kernel (and initrd), write boot structures.  A
 * restore: RAM, irqchip, CPUID and an hvt guest's manifest from the
 * snapshot, nothing loaded.  Then (unless o->dry_run) the KVM VM, memory
 * slots, irqchip when needed, vCPUs and devices, each registering its
 * parts; a restore ends with one overlay of the saved parts
 * (vm_state_load).  Nothing runs yet.  0; -EINVAL for bad input (the
 * configuration, the kernel, the snapshot: EXIT_CONFIG to users); another
 * -errno for host trouble (EXIT_HOST; a host call's own EINVAL is
 * reported as -EIO, see vm_host_err); the reason in err either way.
 * vm_destroy() is safe after a failure. */
__attribute__((warn_unused_result)) int vm_build(struct vm *vm, const struct vm_config *cfg,
						 const struct vm_build_opts *o, char *err,
						 size_t errlen);

/* A host call's failure r (-errno) as vm_build() and the parts return
 * it: never -EINVAL, which says "bad input" (KVM refusing an ioctl with
 * EINVAL is the host's trouble), nor 0. */
static inline int vm_host_err(int r)
{
	return r == -EINVAL || r >= 0 ? -EIO : r;
}

/* Register p (copied) as built.  The list keeps the build's order:
 * the KVM VM state, vCPUs 0..n-1, the UART, each virtio device (its
 * transport, then its own record), the hvt frontend.  0, -EEXIST for a
 * (tag, index) already there, -ENOSPC past VM_PARTS_MAX. */
__attribute__((warn_unused_result)) int vm_part_add(struct vm *vm, const struct vm_part *p);

/* Every part's record into w (begun with snap_w_init), the VM paused:
 * the devices first, then the machine (VM_PART_MACHINE), each in the
 * list's order, which is the state file's section order (UART, VDEV i and
 * VDVX i, HVTG, KVMS, VCPU i).  w's destination (a file, a pipe, a
 * socket) is the caller's.  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int vm_state_save(struct vm *vm, struct snap_writer *w,
						      char *err, size_t errlen);

/* Overlay the records in rd (a state file's or a stream's, checked by
 * snap_check_records) on the freshly built VM, walking the list in its
 * order (the machine first); before the drop phase (KVM's SET ioctls).
 * Refuses a missing record (unless optional), one of another size, and
 * a record of a part's kind that no part of this VM takes.  0; -EINVAL
 * with "NAME: why" in err (name names the snapshot); another -errno for
 * host trouble. */
__attribute__((warn_unused_result)) int vm_state_load(struct vm *vm, const struct snap_reader *rd,
						      const char *name, char *err, size_t errlen);

/* Run the guest until it stops or the timeout passes: the boot vCPU on the
 * calling thread, the others on their own threads.  First the drop phase
 * (docs/jail.md): capabilities go, and every thread loads its seccomp
 * filter (vm->seccomp) before its first KVM_RUN; from then on the process
 * makes only the syscalls jail/seccomp.c allows.  0 once the VM has
 * stopped, or -errno when it could not run; either way the VM is stopped,
 * with ember's exit code (monitor/exitcodes.h: the guest's status, a
 * timeout, a fault, the host's failure) in vm->exit_code and the reason
 * in vm->stop_reason. */
__attribute__((warn_unused_result)) int vm_run(struct vm *vm);

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
 * may have stopped itself already) or -errno when the start failed (the
 * VM is stopped: vm->exit_code, vm->stop_reason).  The calling thread is
 * now the vmm thread under the vmm filter.  vm_wait(): serve vm->ev
 * (virtio notifications, backends, timers, and whatever the caller added)
 * on the calling thread until the VM stops; join the vCPU threads; 0, or
 * -errno when the event loop failed; how the VM ended is in
 * vm->exit_code and vm->stop_reason, as for vm_run(). */
__attribute__((warn_unused_result)) int vm_start(struct vm *vm);
/* vm_start(), with vCPU 0 on t's thread when it is waiting (t NULL, or
 * not ready: a new thread as vm_start()). */
__attribute__((warn_unused_result)) int vm_start_on(struct vm *vm, struct vm_vcpu0_thread *t);
__attribute__((warn_unused_result)) int vm_wait(struct vm *vm);

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

/* What messages call a snapshot read from a stream. */
#define VM_STREAM_NAME "stream"

/* A snapshot opened for a restore (monitor/vm_restore.c): its state read
 * once and every record checked (snap_check_records), from a state file
 * or from a stream whose memory follows.  The caller holds it: takes the
 * configuration it was taken with, applies its overrides (another tap,
 * disk path, vsock socket, name) on top, passes it to vm_build() in
 * vm_build_opts.snapshot, and closes it. */

/* Open the state file at state_path, the configuration into cfg.
 * Refuses (-EINVAL; -errno for I/O; the reason in err) a file that is
 * truncated, corrupt, of another format version or architecture, or
 * whose records do not check. */
__attribute__((warn_unused_result)) int vm_snapshot_open(const char *state_path,
							 struct vm_config *cfg,
							 struct vm_snapshot **out, char *err,
							 size_t errlen);

/* The same from a stream's header and state (stdin for `ember run
 * --restore -`); its memory is read by vm_build(), from s, which must
 * outlive the snapshot.  Messages say "stream: byte N: ...". */
__attribute__((warn_unused_result)) int vm_snapshot_open_stream(struct snap_stream *s,
								struct vm_config *cfg,
								struct vm_snapshot **out,
								char *err, size_t errlen);

/* The same from a state file in memory (len bytes at buf, copied; name
 * is what messages call it): a migration's STAT, whose memory the
 * caller holds (vm_build_opts.mem). */
__attribute__((warn_unused_result)) int vm_snapshot_open_mem(const void *buf, size_t len,
							     const char *name,
							     struct vm_config *cfg,
							     struct vm_snapshot **out, char *err,
							     size_t errlen);

/* Release the snapshot; NULL is fine. */
void vm_snapshot_close(struct vm_snapshot *s);

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
