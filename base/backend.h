/* Host-side device backends, apart from the guest-facing frontends (hvt
 * hypercalls today, virtio devices later), so both share one
 * implementation of "a disk file" and "a tap". */
#ifndef EMBER_BACKEND_H
#define EMBER_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BLK_SECTOR 512

struct blk_mirror;

struct blk_backend {
	int fd;
	uint64_t capacity; /* bytes, a multiple of BLK_SECTOR */
	bool read_only;
	/* A drive being moved (base/blk_mirror.h): writes below its watermark
	 * go to the destination too.  NULL otherwise.  Set and cleared by the
	 * vmm thread where no write is in flight (a virtio device is served on
	 * the vmm thread; an hvt guest's vCPU is paused). */
	struct blk_mirror *mirror;
};

/* Open a raw disk: an image file or a block device (host_open(): a FIFO
 * or anything else is refused, never waited on).  Its size must be a
 * non-zero multiple of 512.  0 or -errno with the reason in err (naming
 * the path). */
__attribute__((warn_unused_result)) int blk_open(struct blk_backend *b, const char *path,
						 bool read_only, char *err, size_t errlen);

/* Whole transfers at byte offset off; the caller has checked the range
 * against capacity.  0 or -errno (-EROFS for a write to a read-only disk).
 * A write (and a flush) reaches a mirror's destination too, as
 * blk_mirror_wrote (blk_mirror_flush) says. */
__attribute__((warn_unused_result)) int blk_read(struct blk_backend *b, uint64_t off, void *buf,
						 size_t len);
__attribute__((warn_unused_result)) int blk_write(struct blk_backend *b, uint64_t off,
						  const void *buf, size_t len);
__attribute__((warn_unused_result)) int blk_flush(struct blk_backend *b);

/* True when [off, off+len) is inside the disk and both are multiples of
 * block_size; overflow-safe. */
bool blk_range_ok(const struct blk_backend *b, uint64_t off, uint64_t len, uint64_t block_size);

void blk_close(struct blk_backend *b);

#define TAP_MTU 1500
#define TAP_HLEN 14 /* Ethernet header */

struct tap_backend {
	int fd; /* non-blocking */
	char name[16];
};

/* Attach to host tap interface `name` (IFF_TAP | IFF_NO_PI) through
 * /dev/net/tun.  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int tap_open(struct tap_backend *t, const char *name, char *err,
						 size_t errlen);

/* One frame.  read: bytes read, -EAGAIN when none is queued, or -errno.
 * write: 0 or -errno. */
ssize_t tap_read(struct tap_backend *t, void *buf, size_t len);
__attribute__((warn_unused_result)) int tap_write(struct tap_backend *t, const void *buf,
						  size_t len);

void tap_close(struct tap_backend *t);

/* The MTU of host interface `name` (SIOCGIFMTU).  0 or -errno. */
__attribute__((warn_unused_result)) int tap_mtu(const char *name, unsigned *mtu);

/* A random locally administered unicast MAC address (as solo5-hvt and
 * Firecracker pick one when none is given). */
void tap_random_mac(uint8_t mac[6]);

#endif
