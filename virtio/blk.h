/* virtio-blk (virtio 1.2 §5.2) over a raw disk file (base/backend.h).
 * The vmm thread serves requests with positioned vector I/O straight into
 * guest RAM; with `direct` the file is opened O_DIRECT and requests go
 * through an aligned bounce buffer (guest buffers need not be aligned). */
#ifndef EMBER_VIRTIO_BLK_H
#define EMBER_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>

#include "virtio/ratelimit.h"
#include "virtio/virtio.h"

struct vblk_params {
	const char *id;	  /* the drive's: its name, what GET_ID answers (cut to 20 bytes) */
	const char *path; /* a raw image file or a block device */
	bool read_only, direct;
	const struct rl_cfg *rate; /* NULL or all zero: no limit */
};

/* Open p->path (read-only, O_DIRECT as asked), set the limiter up and
 * hand the device out ("virtio-block <id>"; offers RO or DISCARD and
 * WRITE_ZEROES, FLUSH, SEG_MAX).  Its counters are Firecracker's block
 * metrics; set_limits takes a alone.  0 or -errno with the reason in
 * err, naming the device and the file. */
__attribute__((warn_unused_result)) int vblk_create(const struct vblk_params *p,
						    struct virtio_impl *out, char *err,
						    size_t errlen);

struct blk_backend;

/* The disk behind d, or NULL when d is not a virtio-blk device; *direct
 * says whether it is O_DIRECT.  For a drive move (monitor/drive_move.c):
 * the vmm thread, which serves d, may attach a mirror to it and switch its
 * fd between two requests; the capacity, read-only flag and rate limiter
 * stay the device's. */
struct blk_backend *vblk_backend(struct virtio_dev *d, bool *direct);

#endif
