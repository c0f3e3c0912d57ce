/* An active, write-blocking mirror of a raw disk (QEMU's write-blocking
 * mirror, Storage vMotion's mirror driver): a background copy walks the
 * source from its start to its end in large sequential steps, skipping
 * holes (SEEK_DATA / SEEK_HOLE) and chunks of zeroes, and every write a
 * frontend makes to the region already copied is made to the destination
 * too, synchronously, before the write completes.  The copy therefore
 * always converges, however fast the guest writes.
 *
 * The copy is sequential, so "already copied" is one watermark: bytes
 * [0, copied) of the destination equal the source's.  A frontend writes the
 * source first, then calls blk_mirror_wrote() (blk_write() does): under the
 * mirror's lock the part of the write below the watermark goes to the
 * destination too.  A copy step holds the same lock from its read of the
 * source until the watermark has moved past what it wrote, so a write
 * racing with it (an hvt vCPU thread) either lands in the source before the
 * step reads it, or finds the watermark past it and is mirrored.  Reads
 * need nothing: the source is authoritative and complete until the pivot.
 *
 * A failure on the destination (ENOSPC, EIO) never fails the guest's
 * write: it is kept in err, mirroring stops, and the move ends failed. */
#ifndef EMBER_BLK_MIRROR_H
#define EMBER_BLK_MIRROR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct blk_backend;

#define BLK_MIRROR_ERR_MAX 256

struct blk_mirror {
	pthread_mutex_t lock;	      /* copy steps and mirrored writes */
	int src_fd, dst_fd;	      /* the source is the backend's; not owned */
	uint64_t size;		      /* the source's size, bytes */
	uint64_t copied;	      /* the watermark: [0, copied) is in the destination */
	uint64_t data_bytes;	      /* data the copy read (holes are free) */
	uint64_t mirrored;	      /* bytes of guest writes also made to the destination */
	int err;		      /* the first failure (-errno), sticky; 0 while healthy */
	/* Tracking mode (dst_fd -1, blk_mirror_init_track): a write below
	 * the watermark sets the bits of its blocks (BLK_TRACK_BLOCK bytes
	 * each) instead of reaching a destination; a live migration sends
	 * them again (monitor/migrate/mig_disk.c).  NULL otherwise. */
	uint64_t *dirty;
	uint64_t dirty_next; /* where blk_mirror_take_dirty looks first */
	char why[BLK_MIRROR_ERR_MAX]; /* what failed: "writing the destination at 4096" */
};

/* A span of the disk: [off, off + len). */
struct blk_span {
	uint64_t off, len;
};

/* The part of the write [off, off + len) that lies below the watermark
 * copied (what must be mirrored); len 0 when none does.  Pure. */
struct blk_span blk_mirror_clip(uint64_t copied, uint64_t off, uint64_t len);

/* One copy step's plan, from the watermark pos of a disk of size bytes,
 * given where the next data starts (data_off: SEEK_DATA's answer from pos,
 * or -1 when there is none) and where that data ends (hole_off: SEEK_HOLE's
 * answer from data_off): skip the hole up to the data, then copy at most
 * chunk bytes of it.  Returns the span to copy (len 0: the disk is done
 * once the watermark moves to off); the watermark then moves to off+len.
 * Pure. */
struct blk_span blk_mirror_plan(uint64_t pos, uint64_t size, int64_t data_off, int64_t hole_off,
				uint64_t chunk);

/* Set m up to mirror src_fd (size bytes) into dst_fd: the destination is
 * emptied and sized (ftruncate to 0, then to size: all one hole), the
 * watermark is 0.  0 or -errno with the reason in m->why. */
__attribute__((warn_unused_result)) int blk_mirror_init(struct blk_mirror *m, int src_fd,
							int dst_fd, uint64_t size);

/* The block size of tracking mode: a guest's 4 KiB write marks one. */
#define BLK_TRACK_BLOCK 4096u

/* Set m up to track src_fd (size bytes) for a copy that goes elsewhere
 * (a migration stream): no destination, a dirty bitmap of size's blocks,
 * all clear, the watermark at 0.  0 or -ENOMEM. */
__attribute__((warn_unused_result)) int blk_mirror_init_track(struct blk_mirror *m, int src_fd,
							      uint64_t size);

/* Tracking mode's copy step: the next data from the watermark (holes
 * skipped) read into buf (at most chunk bytes) and the watermark moved
 * past it, under the lock, so a racing write is either in what was read
 * or marked dirty.  *span is what was read (len 0: only a hole skipped,
 * or *done), *zero whether it is all zeroes.  Returns 0 or -errno (kept
 * in m->err with the reason). */
__attribute__((warn_unused_result)) int blk_mirror_read_step(struct blk_mirror *m, uint8_t *buf,
							     size_t chunk, struct blk_span *span,
							     bool *zero, bool *done);

/* Tracking mode: the next run of dirty blocks (from where the last call
 * stopped, wrapping once), at most max bytes, cleared and read into buf
 * under the lock (a write racing it marks its block again).  *span is
 * the run (len 0: nothing is dirty), *zero whether it is all zeroes.
 * 0 or -errno (kept in m->err). */
__attribute__((warn_unused_result)) int blk_mirror_take_dirty(struct blk_mirror *m, uint8_t *buf,
							      size_t max, struct blk_span *span,
							      bool *zero);

/* Tracking mode: the bytes of the blocks marked dirty now. */
uint64_t blk_mirror_dirty_bytes(struct blk_mirror *m);

/* Stop m for good (a writer sees err and does nothing more): -ECANCELED
 * unless it failed already; a tracking bitmap is freed.  The mirror
 * itself stays valid memory: a writer may still hold its pointer. */
void blk_mirror_stop(struct blk_mirror *m);

/* One copy step: the next data from the watermark (holes skipped, a chunk
 * of zeroes read but not written), at most chunk bytes through buf (chunk
 * bytes long).  Returns the bytes of data read (0 when the step only
 * skipped a hole), 0 with *done once the watermark is at the end, or
 * -errno (also kept in m->err, the reason in m->why). */
__attribute__((warn_unused_result)) int64_t blk_mirror_step(struct blk_mirror *m, uint8_t *buf,
							    size_t chunk, bool *done);

/* After a write of iov (n segments) at off has reached the source: the
 * part below the watermark goes to the destination too.  Never fails the
 * caller: a failure is kept in m->err (and mirroring stops). */
void blk_mirror_wrote(struct blk_mirror *m, uint64_t off, const struct iovec *iov, int n);

/* After fallocate(mode, off, len) (a punched hole, zeroed range) on the
 * source: the same on the destination below the watermark. */
void blk_mirror_fallocated(struct blk_mirror *m, int mode, uint64_t off, uint64_t len);

/* After the source's fdatasync: the destination's too (a guest's flush
 * covers both copies).  Failures as blk_mirror_wrote. */
void blk_mirror_flush(struct blk_mirror *m);

/* The first failure (0 when none), the reason copied into why. */
int blk_mirror_error(struct blk_mirror *m, char *why, size_t len);

void blk_mirror_fini(struct blk_mirror *m);

#endif
