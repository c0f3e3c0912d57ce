/* Moving a running VM's drive to another file (docs/storage-migration.md):
 * a background copy on the vmm thread's event loop, an active mirror of
 * the guest's writes (base/blk_mirror.h), then a pivot: the drive's
 * backend switches to the new file between two requests.  Until the pivot
 * the source is the authoritative, complete disk; a cancel or any failure
 * leaves the VM on it.  The jailed ember opens nothing: the destination
 * comes as a file descriptor (the API's SCM_RIGHTS).
 *
 * One move at a time per VM; its report stays readable (GET) until the
 * next one starts.  Virtio drives and Solo5 hvt block devices both; a
 * drive's read-only flag and rate limiter are the device's and stay. */
#ifndef EMBER_DRIVE_MOVE_H
#define EMBER_DRIVE_MOVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/blk_mirror.h"
#include "base/evloop.h"
#include "config/config.h"

struct vm;
struct blk_backend;

enum dmove_phase {
	DMOVE_NONE, /* no move yet */
	DMOVE_COPYING,
	DMOVE_MIRRORING, /* copied; the destination synced before the pivot */
	DMOVE_PIVOTING,
	DMOVE_COMPLETED,
	DMOVE_CANCELLED,
	DMOVE_FAILED,
};

/* "copying", "mirroring", ... as the API spells them ("none" for NONE). */
const char *dmove_phase_name(enum dmove_phase p);

#define DMOVE_ERR_MAX 1024

/* The extended attribute a controller may set on a destination it made:
 * ember removes it before the pivot (a failure to do so fails the move),
 * so a file that still has it never became the drive.  A controller that
 * lost ember (kill -9) may then remove the file; one without the attribute
 * may be the drive's only up-to-date copy. */
#define DMOVE_XATTR "user.ember.move-incomplete"

/* What GET /drives/{id}/move reports. */
struct dmove_report {
	enum dmove_phase phase;
	char drive[CFG_NAME_MAX + 1];
	char path[CFG_PATH_MAX]; /* the destination */
	uint64_t size;		 /* the drive's, bytes */
	uint64_t copied;	 /* the watermark: bytes gone through, holes included */
	uint64_t data_bytes;	 /* data the copy read */
	uint64_t mirrored;	 /* guest writes mirrored to the destination */
	uint64_t max_bandwidth;	 /* bytes/s of data the copy reads; 0: no limit */
	uint64_t elapsed_ns;	 /* since the start (to the end once it ended) */
	uint64_t pivot_ns;	 /* the pivot's pause (completed moves) */
	char error[DMOVE_ERR_MAX];
};

/* The pivot's news for the caller's own view of the configuration (the
 * API's accepted objects): drive index (its place in cfg->blocks) is now
 * at path.  The vmm thread. */
typedef void (*dmove_pivoted_fn)(void *opaque, unsigned index, const char *path);

struct dmove {
	pthread_mutex_t lock; /* guards rep: the vmm thread writes, any thread reads */
	struct dmove_report rep;
	/* the vmm thread's */
	struct vm *vm;
	struct vm_config *cfg; /* vm->cfg: its drive path changes at the pivot */
	dmove_pivoted_fn pivoted;
	void *opaque;
	struct ev_timer timer;
	bool ready, active;
	struct blk_mirror mirror;
	struct blk_backend *be;
	bool hvt;
	unsigned index;
	int dst_fd;
	uint8_t *buf;
	size_t chunk;
	uint64_t t0;
};

/* Before the drop phase (the timer's timerfd): m serves moves of vm's
 * drives from vm->ev; cfg is vm's configuration, which the pivot
 * updates.  0 or -errno. */
__attribute__((warn_unused_result)) int dmove_init(struct dmove *m, struct vm *vm,
						   struct vm_config *cfg, dmove_pivoted_fn fn,
						   void *opaque);

/* Start moving drive (its configured name) into fd, a regular file the
 * caller opened for writing at path (what the configuration names after
 * the pivot); max_bandwidth bytes/s of data (0: as fast as it goes).  fd
 * is taken either way.  The vmm thread.  0; -EBUSY while another move
 * runs; -ENOENT for no such drive; -EINVAL for a destination that cannot
 * be one (not a regular file, the drive's own file), an O_DIRECT drive;
 * another -errno from the destination; the reason in err, naming the
 * drive and the path. */
__attribute__((warn_unused_result)) int dmove_start(struct dmove *m, const char *drive, int fd,
						    const char *path, uint64_t max_bandwidth,
						    char *err, size_t errlen);

/* Cancel the running move of drive: the mirror stops, the destination's
 * fd is closed, the VM goes on on the source; the move ends cancelled.
 * The vmm thread.  0, -ENOENT when drive has no running move (err says
 * whether it ended, and how). */
__attribute__((warn_unused_result)) int dmove_cancel(struct dmove *m, const char *drive, char *err,
						     size_t errlen);

/* The current report (any thread). */
void dmove_report(struct dmove *m, struct dmove_report *out);

/* Drive (its configured name in c, vm's configuration) as its backend,
 * the one its guest's writes go through (a virtio-blk device's, or an
 * hvt guest's block device; *hvt says which), its place in c->blocks in
 * *index; NULL with err naming the drive when there is no such drive or
 * it is O_DIRECT (a copy's buffer would need aligned I/O).  Also what a
 * live migration with disks copies (monitor/migrate/mig_disk.c).  The
 * vmm thread. */
struct blk_backend *dmove_backend(struct vm *vm, const struct vm_config *c, const char *drive,
				  unsigned *index, bool *hvt, char *err, size_t errlen);

/* Release everything (a running move is cancelled).  The vmm thread. */
void dmove_fini(struct dmove *m);

#endif
