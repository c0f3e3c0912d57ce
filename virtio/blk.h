/* virtio-blk (virtio 1.2 §5.2) over a raw disk file (monitor/backend.h).
 * The vmm thread serves requests with positioned vector I/O straight into
 * guest RAM; with `direct` the file is opened O_DIRECT and requests go
 * through an aligned bounce buffer (guest buffers need not be aligned). */
#ifndef EMBER_VIRTIO_BLK_H
#define EMBER_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "monitor/backend.h"
#include "monitor/evloop.h"
#include "virtio/limiter.h"
#include "virtio/virtio.h"

#define VIRTIO_BLK_ID_BYTES 20 /* §5.2.6: GET_ID's answer */

struct blk_stats {
	uint64_t read_ops, write_ops, flush_ops, read_bytes, write_bytes;
	uint64_t discard_ops, discard_bytes; /* DISCARD and WRITE_ZEROES */
	uint64_t io_errors, unsupported;
};

struct virtio_blk {
	struct blk_backend be;
	char id[VIRTIO_BLK_ID_BYTES + 1];
	struct vlimit limit;
	uint8_t *bounce; /* O_DIRECT only */
	struct blk_stats stats;
	struct virtio_dev *dev;
};

/* Open path (read-only, O_DIRECT as asked) and set the limiter up.  id is
 * what GET_ID answers (cut to 20 bytes).  0 or -errno with the reason in
 * err, naming the file. */
__attribute__((warn_unused_result)) int vblk_open(struct virtio_blk *b, const char *path,
						  bool read_only, bool direct, const char *id,
						  const struct rl_cfg *rate, char *err,
						  size_t errlen);

/* The features to offer for b (RO, FLUSH, SEG_MAX). */
uint64_t vblk_features(const struct virtio_blk *b);

extern const struct virtio_dev_ops vblk_ops; /* priv: struct virtio_blk */

void vblk_close(struct virtio_blk *b);

#endif
