/* Live migration, the VMM's side (docs/migration.md): pre-copy of guest
 * RAM over a stream fd the controller passed (the jailed VMM opens
 * nothing), a downtime budget, auto-converge by vCPU throttling, then
 * stop-and-copy and the two-phase hand-over (REDY, GOGO) so the VM never
 * runs in two places.  The records are snapshot/'s (snap_mig_*).
 *
 * Threads: the migration runs on its own thread (made before anything is
 * sandboxed, under the mig seccomp role), never on the vmm thread, whose
 * loop goes on serving devices and the API.  What only the vmm thread
 * may do it asks for through an eventfd on the VM's loop (mig_watch):
 * freezing the VM for the stop-and-copy (paused, and the vmm thread
 * itself held, so no device writes RAM behind the saved state), resuming
 * it, and the throttle's duty cycle (a timer).  The target's setup check
 * and build go to the owner's ops (the API), on the vmm thread too.
 *
 * The owner (monitor/api/) makes one struct mig per process. */
#ifndef EMBER_MIGRATE_H
#define EMBER_MIGRATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/evloop.h"
#include "base/blk_mirror.h"
#include "base/guest_mem.h"
#include "config/config.h"
#include "jail/jail.h"
#include "snapshot/snapshot.h"

struct vm;
struct snap_stream;
struct mig_post;

#define MIG_ERR_MAX 640

enum mig_role { MIG_ROLE_NONE, MIG_ROLE_SOURCE, MIG_ROLE_TARGET };

/* docs/migration.md, "Phases" (mig_phase_name gives the API's names). */
enum mig_phase {
	MIG_NONE,
	MIG_SETUP,
	MIG_PRECOPY,
	MIG_STOPCOPY,
	MIG_HANDOVER,
	MIG_COMPLETED,
	MIG_CANCELLED,
	MIG_FAILED,
	MIG_UNKNOWN, /* handover-unknown */
	MIG_RECEIVING,
	MIG_READY,
	MIG_RUNNING,
	MIG_POSTCOPY, /* both ends: the target runs, pages still come */
};

struct mig_params {
	uint64_t downtime_ms;	/* the stop-and-copy's budget */
	uint64_t max_bandwidth; /* bytes/s; 0: unlimited */
	uint64_t timeout_ms;	/* the whole migration; 0: none */
	bool throttle;		/* converge by throttling the vCPUs */
	/* The final pass hashes every page of RAM and resends any that
	 * differs from what was sent (true, the default: correct even where
	 * KVM's dirty log misses writes, as on this project's nested hosts;
	 * O(RAM) of downtime), or trusts the log and hashes only what it
	 * sent (false, "verify": "dirty": what QEMU does). */
	bool verify_all;
	/* Same host: RAM's memfd goes over the stream instead of its pages
	 * (docs/migration.md, "Same-host upgrade"); no pre-copy. */
	bool local;
	bool converge_postcopy; /* converge by switching to post-copy */
	bool postcopy;		/* "mode": "postcopy": switch after round 0 */
	bool postcopy_now;	/* "mode": "postcopy-now": before any round */
	/* Disks copied with the VM ("copy_storage"; docs/storage-migration.md,
	 * "Between hosts"): these drive ids, or every writable drive. */
	char copy[SNAP_MIG_DISKS_MAX][CFG_NAME_MAX + 1];
	unsigned nr_copy;
	bool copy_all;
};

/* A disk copied with the VM (mig_disk.c).  The source: the drive's
 * backend and the tracker of its writes (a blk_mirror in tracking mode;
 * kept in struct mig for the process's life: an hvt vCPU may still hold
 * its pointer after the migration ends).  The target: the destination. */
struct mig_disk {
	char id[CFG_NAME_MAX + 1];
	uint64_t size;
	struct blk_mirror track;     /* source */
	struct blk_backend *be;	     /* source; NULL: not attached */
	int fd;			     /* target: the destination, or -1 */
	char path[CFG_PATH_MAX];     /* target: the destination's path (messages) */
	uint64_t data_bytes;	     /* data sent (source) or written (target) */
	bool ended;		     /* target: DSKE came */
};

/* What the target asks of its owner, each waited for (the owner runs it
 * on the vmm thread).  0 or -errno with the reason in err. */
struct mig_target_ops {
	/* SETU's state file (CONF, CPID): check it against this host (the
	 * CPUID, the configuration with the owner's overrides) and map
	 * fresh RAM of its size into mem.  The reason goes back in NACK. */
	int (*setup)(void *opaque, const void *setu, size_t len, struct gmem *mem, char *err,
		     size_t errlen);
	/* STAT's state file: build the VM, paused, over mem (filled; taken
	 * over by the build; partial: post-copy's, pages still missing). */
	int (*build)(void *opaque, const void *state, size_t len, struct gmem *mem, bool partial,
		     char *err, size_t errlen);
	/* DSKB: the destination of drive id (size bytes) copied with the VM,
	 * opened for writing and sized (all one hole); its fd in *fd, its
	 * path in path.  Refused unless the receive asked for that drive's
	 * copy ("copy_storage") and gave it a path (drive_overrides). */
	int (*disk)(void *opaque, const char *id, uint64_t size, int *fd, char *path,
		    size_t pathlen, char *err, size_t errlen);
	/* MEMF (a same-host hand-over): fd, received with it, becomes the
	 * RAM setup mapped into mem (gmem_adopt_memfd: a memfd of that size
	 * or a refusal in err).  fd is taken either way. */
	int (*memfd)(void *opaque, int fd, struct gmem *mem, char *err, size_t errlen);
	/* GOGO: let the vCPUs run. */
	int (*go)(void *opaque, char *err, size_t errlen);
	/* The migration failed or was stopped here: the target process
	 * ends, non-zero, with why. */
	void (*fail)(void *opaque, const char *why);
};

/* What the source tells its owner (from the vmm thread): the VM paused
 * or running again, for GET /. */
struct mig_source_ops {
	void (*state)(void *opaque, bool paused);
};

/* GET /migration's numbers, a copy. */
struct mig_status {
	enum mig_role role;
	enum mig_phase phase;
	uint64_t round, bytes_sent, bytes_remaining, pages_sent;
	uint64_t dirty_rate_bps, bandwidth_bps, expected_downtime_us;
	unsigned throttle_pct;
	uint64_t total_ms;
	int64_t downtime_us; /* -1: not known (yet) */
	uint64_t pages_missing, faults_served; /* post-copy */
	uint64_t disk_total, disk_sent, disk_remaining; /* disks copied with the VM */
	char error[MIG_ERR_MAX]; /* "" for none */
};

struct mig {
	/* made by mig_init */
	pthread_t thread;
	pthread_mutex_t lock; /* the job and the fields below it */
	pthread_cond_t cv;
	struct jail_filter filter; /* the mig role's, loaded by the thread */
	int efd;		   /* requests to the vmm thread */
	int pagemap_fd;		   /* /proc/self/pagemap, or -1 (no /proc: a jail) */
	struct ev_source src;
	struct ev_timer throttle;
	struct evloop *ev; /* the loop src and throttle are on; NULL: none */
	bool throttle_on;  /* vmm thread: the vCPUs are held for this slice */
	const struct mig_target_ops *tops;
	const struct mig_source_ops *sops;
	void *opaque;

	/* the job (under lock) */
	int job; /* 0 none, 1 send, 2 receive */
	int fd;
	struct mig_params p;
	struct vm *vm;
	char error[MIG_ERR_MAX];
	int resolve; /* 0 none, 1 resume, 2 stop */
	/* the vmm thread's side (under lock) */
	int req;	 /* the request posted, 0 when none */
	bool req_done;	 /* its answer is in req_r */
	int req_r;
	bool frozen;	 /* the vmm thread is held (stop-and-copy) */
	bool stop_on_thaw; /* MIG_REQ_THAW then stops the VM (mig_thaw_stop) */
	bool was_paused; /* the VM was paused before the freeze */
	bool had_log;	 /* dirty logging was on before the migration */
	bool dead;	 /* the thread could not sandbox itself: no migrations */
	const char *stop_why; /* MIG_REQ_STOP's reason */
	int stop_code;	      /* and its exit status (0 unless post-copy failed) */

	_Atomic int role, phase;
	atomic_bool cancel;
	_Atomic uint64_t round, bytes_sent, bytes_remaining, pages_sent;
	_Atomic uint64_t dirty_rate_bps, bandwidth_bps, expected_downtime_us;
	atomic_uint throttle_pct;
	_Atomic uint64_t t_start_ns, t_end_ns;
	_Atomic int64_t downtime_us;
	/* Post-copy: pages the target still lacks (either end), the faults
	 * the target served (mig_post_recv.c) */
	_Atomic uint64_t pages_missing, faults_served;
	/* A userfaultfd made by mig_init before any sandbox (the target's
	 * post-copy; made without capabilities it would need
	 * UFFD_USER_MODE_ONLY, which misses KVM's own faults), or -errno */
	int uffd;
	int pid; /* this process's: lost() signals it (getpid is not in the role) */
	struct mig_post *post; /* the target's post-copy (mig_post_recv.c) */

	struct gmem mem; /* the target's RAM until the build takes it */

	/* Disks copied with the VM (mig_disk.c) */
	struct mig_disk disks[SNAP_MIG_DISKS_MAX];
	unsigned nr_disks;
	_Atomic uint64_t disk_total, disk_sent, disk_remaining;
	char disk_err[300]; /* mig_disk_attach's refusal */
};

/* Make the migration thread, once per process, before any thread is
 * sandboxed (it needs clone and mmap): it drops its capabilities, loads
 * the mig role's filter (mode) and waits for a job.  0 or -errno. */
__attribute__((warn_unused_result)) int mig_init(struct mig *m, enum jail_seccomp_mode mode,
						 const struct mig_source_ops *sops,
						 const struct mig_target_ops *tops, void *opaque);

/* Serve m's requests on vm's loop (and own its throttle timer): before
 * vm_start (the timer's fd is made here).  0 or -errno. */
__attribute__((warn_unused_result)) int mig_watch(struct mig *m, struct vm *vm);

/* Start sending vm (running or paused) into fd (taken: closed when the
 * migration ends).  0, or -EBUSY when a migration has begun already. */
__attribute__((warn_unused_result)) int mig_send(struct mig *m, struct vm *vm, int fd,
						 const struct mig_params *p, char *err,
						 size_t errlen);

/* Start receiving from fd (taken) into this process, which has no VM
 * yet.  0 or -EBUSY. */
__attribute__((warn_unused_result)) int mig_receive(struct mig *m, int fd, char *err,
						    size_t errlen);

/* Cancel the source's migration before the hand-over point: the VM runs
 * on as before (done in the background).  0, -ENOENT (none running),
 * -EBUSY (past the hand-over point, or not a source). */
__attribute__((warn_unused_result)) int mig_cancel(struct mig *m, char *err, size_t errlen);

/* Settle handover-unknown (source) or ready (target): resume, or stop.
 * 0 or -EBUSY (not in such a phase). */
__attribute__((warn_unused_result)) int mig_resolve(struct mig *m, bool resume, char *err,
						    size_t errlen);

/* Whether a migration holds the VM now (changes to it are refused). */
bool mig_busy(struct mig *m);

/* A copy of where the migration stands. */
void mig_get_status(struct mig *m, struct mig_status *st);

/* "none", "setup", "precopy", ... as the API names phases. */
const char *mig_phase_name(enum mig_phase p);

/* ---- private to monitor/migrate/ ---- */

enum { MIG_REQ_FREEZE = 1, MIG_REQ_THAW, MIG_REQ_RESUME, MIG_REQ_THROTTLE, MIG_REQ_LOG_ON, MIG_REQ_LOG_OFF,
       MIG_REQ_STOP, MIG_REQ_DISK_ON, MIG_REQ_DISK_OFF };

/* Post request req to the vmm thread and wait for its answer (0 or
 * -errno).  MIG_REQ_FREEZE returns once the VM is paused and the vmm
 * thread held; MIG_REQ_THAW lets it go; MIG_REQ_RESUME resumes the VM
 * unless it was paused before the migration; MIG_REQ_THROTTLE starts the
 * duty cycle at m->throttle_pct; MIG_REQ_LOG_ON turns dirty logging on
 * (vm_track_dirty) unless it was, MIG_REQ_LOG_OFF back off if it was
 * not; MIG_REQ_STOP stops the VM (exit 0, reason m->stop_why): vm_stop
 * kicks the vCPUs, which this thread's filter does not allow. */
int mig_vmm_request(struct mig *m, int req);

/* Let the frozen vmm thread go and have it stop the VM (exit 0, reason
 * m->stop_why) before it serves anything else: a same-host source hands
 * its RAM over, and no device of its may write it afterwards. */
void mig_thaw_stop(struct mig *m);

/* The same-host hand-over's pieces (mig_local.c).  The source: whether
 * vm's RAM can be handed over (0, or -EINVAL with why); MEMF with the
 * memfd.  The target: MEMF read, checked and its fd made m->mem (the
 * owner's memfd op).  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int mig_local_check(const struct vm *vm, char *err,
							size_t errlen);
__attribute__((warn_unused_result)) int mig_local_send_memf(struct mig *m,
							    struct snap_stream *s, char *err,
							    size_t errlen);
__attribute__((warn_unused_result)) int mig_local_recv_memf(struct mig *m,
							    struct snap_stream *s, char *err,
							    size_t errlen);

/* Disks copied with the VM (mig_disk.c; docs/storage-migration.md,
 * "Between hosts").  The source's sends go through io (its put, paced
 * and counted, and its cancel/timeout check). */
struct mig_disk_io {
	int (*put)(void *x, uint32_t type, uint64_t a, uint64_t b, const void *payload,
		   uint32_t len);
	int (*check)(void *x); /* 0, or -errno: cancelled or timed out */
	void *x;
	char *err; /* the reason of a failure of the disks' own */
	size_t errlen;
};
/* The vmm thread (MIG_REQ_DISK_ON): m->p's drives found and a tracker
 * attached to each (every guest write from now on marks its blocks).
 * 0 or -errno with the reason in m->disk_err. */
int mig_disk_attach(struct mig *m, struct vm *vm);
/* The vmm thread (MIG_REQ_DISK_OFF): the trackers detached and stopped. */
void mig_disk_detach(struct mig *m);
/* The source, after OKAY: DSKB for each disk, then every data extent
 * (holes and zeroes skipped: the target's file starts as one hole). */
__attribute__((warn_unused_result)) int mig_disk_send_bulk(struct mig *m,
							   const struct mig_disk_io *io);
/* The blocks the guest wrote since they were last sent (DSKD, or DSKZ
 * for zeroes); at most what was dirty when called unless final.  final
 * (the VM frozen): all of them, then DSKE for each disk. */
__attribute__((warn_unused_result)) int mig_disk_send_dirty(struct mig *m,
							    const struct mig_disk_io *io,
							    bool final);
/* The bytes the disks' trackers hold dirty now. */
uint64_t mig_disk_dirty(struct mig *m);
/* The target: a DSK* record rec (its payload still in s) applied.  0 or
 * -errno with the reason in err naming the drive, the file, the offset. */
__attribute__((warn_unused_result)) int mig_disk_recv(struct mig *m, struct snap_stream *s,
						      const struct snap_mig_rec *rec, char *err,
						      size_t errlen);
/* The target, at the end of a round (ROUN) while a disk is still open
 * (mig_disk_recv_open: one without DSKE): the disks synced so far, so
 * that DSKE's sync, in the downtime, has only the last blocks left; then
 * DSKS goes back (the source waits for it).  0 or -errno with err. */
bool mig_disk_recv_open(struct mig *m);
__attribute__((warn_unused_result)) int mig_disk_recv_sync(struct mig *m, char *err,
							   size_t errlen);
/* The target, at STAT: every disk complete (DSKE), or a refusal. */
__attribute__((warn_unused_result)) int mig_disk_recv_check(struct mig *m, char *err,
							    size_t errlen);
/* The target: the destinations' fds closed (the build opened its own). */
void mig_disk_recv_close(struct mig *m);

/* Set the phase (and, for a failure, the error). */
void mig_set_phase(struct mig *m, enum mig_phase p);
__attribute__((format(printf, 3, 4))) void mig_set_error(struct mig *m, enum mig_phase p,
							 const char *fmt, ...);

uint64_t mig_now_ns(void);

/* The source's end: phase completed, the figures on stderr ("ember:
 * migration completed<how>: ..."), and the VM stopped (exit 0). */
void mig_completed(struct mig *m, const char *how);

/* max_bandwidth (bw bytes/s, 0: none): sleep until bytes sent since t0
 * are due. */
void mig_pace(uint64_t t0, uint64_t bytes, uint64_t bw);

/* After a resolve that ends the process: wait briefly (100 ms) so the
 * API's 204 for it goes out first. */
void mig_reply_grace(void);

/* Post-copy, the source (mig_post_send.c): after GOGO went.  The VM is
 * paused here for good; s carries the pages bits names (a PREQ's first,
 * the rest in order) until the target's PFIN.  bits is consumed.  Ends
 * the process either way (stop_code EXIT_HOST on a failure). */
void mig_post_send(struct mig *m, struct snap_stream *s, struct vm *vm, uint64_t *bits);

/* Post-copy, the target (mig_post_recv.c).  mig_uffd_open: a
 * userfaultfd for mig_init (the fd, or -errno).  mig_post_arm, once the
 * VM is built (over RAM at base, size bytes) and paused: PCPY's bitmap
 * (rec, its payload still in s) read and checked, those pages dropped
 * from RAM and RAM registered with m->uffd, so that every access to a
 * missing page (a vCPU's, KVM's, ember's own) waits for this thread.
 * 0 or -errno with err. */
int mig_uffd_open(void);
__attribute__((warn_unused_result)) int mig_post_arm(struct mig *m, struct snap_stream *s,
						     const struct snap_mig_rec *rec, uint8_t *base,
						     uint64_t size, char *err, size_t errlen);
/* After GOGO, the VM running: serve faults and install pages until
 * none is missing, then PFIN.  Returns only then; a stream that fails
 * ends the process at once, loudly (the guest is lost: its missing
 * pages exist nowhere else), never letting it run on without them. */
void mig_post_serve(struct mig *m, struct snap_stream *s);

/* The two sides, on the migration thread; the fd is closed by the
 * caller. */
void mig_run_send(struct mig *m);
void mig_run_receive(struct mig *m);

#endif
