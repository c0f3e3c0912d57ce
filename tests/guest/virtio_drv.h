/* A small polling virtio-mmio driver for the test guests: virtio 1.2
 * §4.2 (MMIO transport, register layout version 2 only), §3.1.1 (driver
 * initialisation) and §2.7 (split virtqueues, no indirect descriptors, no
 * event index).  Interrupts stay off: requests complete by polling the used
 * ring with a TSC deadline.  One device is driven at a time (the queue
 * memory is a static pool); buffers are static arrays in the image, whose
 * addresses are guest-physical (identity mapping). */
#ifndef GUEST_VIRTIO_DRV_H
#define GUEST_VIRTIO_DRV_H

#include "lib.h"

/* §4.2.2 registers */
#define VIRTIO_MMIO_MAGIC 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC_VALUE 0x74726976 /* "virt" */

/* §2.1 device status */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_F_VERSION_1 32

/* §5 device ids */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

/* §2.7.5 descriptor flags */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

/* Every queue this driver sets up has this size (a power of 2, well under
 * the QueueNumMax of 256 ember offers). */
#define VQ_NUM 16
#define VDEV_MAX_QUEUES 4

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct vring_avail {
	u16 flags;
	u16 idx;
	u16 ring[VQ_NUM];
	u16 used_event;
};

struct vring_used_elem {
	u32 id;
	u32 len;
};

struct vring_used {
	u16 flags;
	u16 idx;
	struct vring_used_elem ring[VQ_NUM];
	u16 avail_event;
};

struct vq {
	unsigned index;           /* the device's queue number */
	volatile struct vring_desc *desc;
	volatile struct vring_avail *avail;
	volatile struct vring_used *used;
	u16 avail_idx;            /* next free avail slot (free-running) */
	u16 last_used;            /* used entries consumed so far */
};

struct vdev {
	u64 base;
	u32 size;
	u32 irq;
	u32 id;                   /* device id, 0 for an empty slot */
	u32 version;
	u64 features;             /* offered by the device */
	u64 accepted;             /* what we negotiated */
	struct vq vq[VDEV_MAX_QUEUES];
	unsigned nqueues;
};

/* One buffer of a chain, as vq_add takes it. */
struct vbuf {
	u64 addr;
	u32 len;
	int writable;             /* device-writable (VRING_DESC_F_WRITE) */
};

/* ---- discovery ---- */

#define VDEV_MAX 32
/* Parses every `virtio_mmio.device=SIZE@ADDR:IRQ` on the command line
 * (SIZE decimal with an optional K/M suffix, or 0x-hex) into devs and reads
 * magic, version and device id of each.  Returns how many were found;
 * prints a line for each malformed entry or bad magic and skips it. */
unsigned vdev_discover(struct vdev *devs, unsigned max);
/* "net", "block", "rng", "vsock" or "unknown". */
const char *vdev_name(u32 id);

/* ---- registers ---- */

u32 vdev_read(const struct vdev *d, u32 off);
void vdev_write(const struct vdev *d, u32 off, u32 v);
/* Device config space (§4.2.2: at 0x100, any width), read under the
 * config generation (§2.5.1): 8-bit, 32-bit, and 64-bit as two 32-bit. */
u8 vdev_config8(const struct vdev *d, u32 off);
u32 vdev_config32(const struct vdev *d, u32 off);
u64 vdev_config64(const struct vdev *d, u32 off);

/* ---- initialisation (§3.1.1) ---- */

/* Reset, ACKNOWLEDGE, DRIVER, features: accepts VERSION_1 plus those of
 * `wanted` the device offers, FEATURES_OK (and checks it stuck).  Prints a
 * line and returns -1 on failure.  Queues and DRIVER_OK follow. */
int vdev_begin(struct vdev *d, u64 wanted);
/* Sets up queue `index` (size VQ_NUM) in pool slot `slot` with fresh
 * rings, and QueueReady=1.  desc_override, if nonzero, is written as the
 * descriptor table's address instead (the hostile `ringoob` case); then the
 * return value is QueueReady read back, else 0, or -1 with a line printed. */
int vdev_setup_queue(struct vdev *d, unsigned slot, unsigned index, u64 desc_override);
void vdev_driver_ok(struct vdev *d);
/* Status=0, and a wait (bounded) until it reads back 0 (§4.2.3.1). */
void vdev_reset(struct vdev *d);
/* All of the above for the common case: queues 0..nq-1 in slots 0..nq-1. */
int vdev_init(struct vdev *d, u64 wanted, unsigned nq);

/* ---- queues ---- */

/* Writes the chain bufs[0..n) into descriptors head..head+n-1 (mod
 * VQ_NUM), puts head in the avail ring and publishes it; no notify. */
void vq_add(struct vq *q, unsigned head, const struct vbuf *bufs, unsigned n);
/* Publishes the avail slots written so far (after a barrier). */
void vq_publish(struct vq *q);
void vq_notify(struct vdev *d, struct vq *q);
/* Takes the next used element if there is one: 1 and *id, *len, else 0. */
int vq_poll(struct vq *q, u32 *id, u32 *len);
/* vq_poll until something is used or `ms` milliseconds pass: 0, or -1. */
int vq_wait(struct vq *q, u32 *id, u32 *len, unsigned ms);
/* Checks InterruptStatus bit 0 (used buffer) and acknowledges what is set;
 * prints a line when the bit is missing.  Returns the status read. */
u32 vdev_ack_interrupt(struct vdev *d, const char *who);
/* vq_add + notify + vq_wait + interrupt check; -1 (line printed) on
 * timeout, else the used length. */
long vq_request(struct vdev *d, struct vq *q, const struct vbuf *bufs, unsigned n,
		const char *who);

/* ---- time ---- */

u64 tsc_deadline(unsigned ms);
int tsc_passed(u64 deadline);

#endif
