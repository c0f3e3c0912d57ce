/* Split virtqueues (virtio 1.2 §2.7), device side.  The walker trusts
 * nothing in guest memory: every index, length, flag and address the
 * driver wrote is checked before use, and a broken queue is reported with
 * a message instead of being followed.  Pure logic over struct gmem: the
 * fuzz target and the unit tests drive it without KVM. */
#ifndef EMBER_VIRTQUEUE_H
#define EMBER_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/guest_mem.h"

#define VQ_MAX_SIZE 256 /* QueueNumMax of every ember queue */
#define VQ_ERR_MAX 160

/* §2.7.5 descriptor flags */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
/* §2.7.7 / §2.7.10 */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

/* The queue's registers as the driver set them and the device's two
 * cursors: fixed-width, the queue's snapshot record. */
struct vq_state {
	uint64_t desc;	/* QueueDesc: descriptor table GPA (16-byte aligned) */
	uint64_t avail; /* QueueDriver: available ring GPA (2-byte aligned) */
	uint64_t used;	/* QueueDevice: used ring GPA (4-byte aligned) */
	uint16_t num;	/* QueueNum: a power of 2, 1..VQ_MAX_SIZE */
	uint16_t ready; /* QueueReady */
	uint16_t next_avail; /* next avail->ring slot to take */
	uint16_t next_used;  /* next used->ring slot to fill (= used->idx) */
};
_Static_assert(sizeof(struct vq_state) == 32, "vq_state is a snapshot record");

struct vq {
	struct vq_state s;
	const struct gmem *mem;
	/* Host pointers to the rings, set by vq_enable(). */
	void *desc_host, *avail_host, *used_host;
};

/* One buffer segment in host memory, inside guest RAM. */
struct vq_seg {
	uint8_t *p;
	uint32_t len;
};

/* A descriptor chain: the driver-readable segments first (out), then the
 * device-writable ones (in), as §2.7.4.2 requires. */
struct vq_chain {
	uint16_t head;
	uint16_t nr_out, nr_in;
	uint32_t out_len, in_len; /* byte totals */
	struct vq_seg seg[VQ_MAX_SIZE];
};

/* The driver set QueueReady: check the configured size and ring
 * addresses (alignment, wholly inside RAM) and map them.  0, or -EINVAL
 * with the reason in err. */
__attribute__((warn_unused_result)) int vq_enable(struct vq *q, const struct gmem *mem,
						  char *err, size_t errlen);

/* The checks and mapping of vq_enable() without touching the cursors or
 * the used ring: a queue restored from a snapshot. */
__attribute__((warn_unused_result)) int vq_map(struct vq *q, const struct gmem *mem, char *err,
					       size_t errlen);

/* Forget the rings and cursors (device reset or queue disabled). */
void vq_reset(struct vq *q);

/* Take the next available chain into *c.  1: got one; 0: the ring is
 * empty; -EINVAL: the driver broke the queue (avail index ran more than
 * num ahead, a head or next index out of range, a chain that loops or is
 * longer than num, an indirect descriptor, a zero or overflowing length,
 * a buffer outside RAM, a readable descriptor after a writable one): err
 * says which, naming the descriptor and guest address.  After an error
 * the queue must not be used until reset. */
__attribute__((warn_unused_result)) int vq_pop(struct vq *q, struct vq_chain *c, char *err,
					       size_t errlen);

/* Give the chain vq_pop() just returned back to the ring, untouched (a
 * rate limiter said not yet). */
void vq_unpop(struct vq *q);

/* Hand chain c (from vq_pop) back with `written` bytes in its writable
 * part.  Its writable segments are marked dirty again (see vq_pop). */
void vq_push(struct vq *q, const struct vq_chain *c, uint32_t written);

/* Chains are waiting (cheap; no validation). */
bool vq_has_avail(const struct vq *q);

/* The driver asked for no interrupt (avail flags, §2.7.7). */
bool vq_no_interrupt(const struct vq *q);

/* Copy out of the chain's readable part, from byte off; returns the bytes
 * copied (less than len at the end of the readable part). */
size_t vq_read(const struct vq_chain *c, size_t off, void *dst, size_t len);

/* Copy into the chain's writable part, at byte off; returns the bytes
 * copied (less than len when the writable part is shorter). */
size_t vq_write(const struct vq_chain *c, size_t off, const void *src, size_t len);

#endif
