/* Virtio devices over MMIO (virtio 1.2 §4.2, register layout version 2,
 * VIRTIO_F_VERSION_1 required).  The transport here owns the registers,
 * feature negotiation, the queues' setup, the ioeventfd that carries each
 * queue's notification to the vmm thread's event loop and the irqfd that
 * carries the device's interrupt to the in-kernel irqchip.  A device is
 * one file with one ops table (struct virtio_dev_ops); it never knows it
 * sits on MMIO.  A device's state is its own: its constructor (vblk_create,
 * vnet_create, vsock_create, vrng_create) makes it from device-neutral
 * parameters and hands back a struct virtio_impl for virtio_dev_init();
 * its destroy op releases it.  The monitor sees only the ops.
 *
 * Threads: register accesses arrive on vCPU threads; notifications,
 * backend events and timers on the vmm thread.  Both take dev->lock, so a
 * device's ops always run under it and never concurrently.  A device's
 * ops (activate, notify, reset) run on the vmm thread only: the transport
 * hands DRIVER_OK and reset over to it, so only that thread ever touches
 * backend fds.  (So a device's scratch buffers are plain statics: one
 * thread uses them, and thread-local ones would be set up, and their
 * pages touched, in every thread.) */
#ifndef EMBER_VIRTIO_H
#define EMBER_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/evloop.h"
#include "base/guest_mem.h"
#include "virtio/virtqueue.h"

/* §5 device ids */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

/* §6 reserved feature bits */
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33

/* §2.1 device status */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* §4.2.2 InterruptStatus bits */
#define VIRTIO_INT_USED 1
#define VIRTIO_INT_CONFIG 2

#define VIRTIO_MMIO_SIZE 0x1000 /* one 4 KiB slot per device */
#define VIRTIO_MAX_QUEUES 4
#define VIRTIO_NAME_MAX 80

struct virtio_dev;
struct rl_cfg; /* virtio/ratelimit.h */

/* One counter a device reports: its name and its total since the device
 * was made. */
typedef void virtio_counter_fn(void *opaque, const char *name, uint64_t value);

struct virtio_dev_ops {
	const char *kind;    /* "block", "net", "vsock", "rng": for messages */
	const char *metrics; /* Firecracker's metrics group: "block", "net", "vsock", "entropy" */
	uint32_t device_id;  /* VIRTIO_ID_* */
	unsigned nr_queues;  /* <= VIRTIO_MAX_QUEUES */
	/* Device-specific configuration space (§4.2.2 offset 0x100 on):
	 * read len (1, 2, 4 or 8) bytes at off; bytes past the config read
	 * as 0.  Optional. */
	void (*config_read)(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len);
	/* At the end of virtio_dev_init(), before the drop phase: acquire
	 * what serving will need and the sandbox will not allow later
	 * (timerfds).  0 or -errno (the VM does not start).  Optional. */
	int (*realize)(struct virtio_dev *d);
	/* The driver set DRIVER_OK: start serving (watch backends).  0 or
	 * -errno (the device is then marked NEEDS_RESET).  Optional. */
	int (*activate)(struct virtio_dev *d);
	/* Queue q has new buffers (vmm thread).  Required. */
	void (*notify)(struct virtio_dev *d, unsigned q);
	/* The driver reset the device: stop serving, drop in-flight state;
	 * the transport resets queues and registers itself.  Optional. */
	void (*reset)(struct virtio_dev *d);
	/* Snapshots (the VM paused, under d->lock): the device's own state
	 * beyond the transport's (limiters...), at most max bytes into buf;
	 * the length, or -errno.  Optional: no state of its own. */
	int (*save)(struct virtio_dev *d, void *buf, size_t max);
	/* Overlay what save() wrote on a freshly built, already activated
	 * device, before the VM runs.  0, or -EINVAL for a record that is not
	 * this device's (the snapshot is refused).  Optional. */
	int (*restore)(struct virtio_dev *d, const void *buf, size_t len);
	/* Release what the constructor made: close the backends, free
	 * d->priv.  After virtio_dev_fini(d) (nothing of the device is
	 * watched any more), never concurrently with another op.
	 * Required. */
	void (*destroy)(struct virtio_dev *d);
	/* The device's counters: fn once per counter, in a fixed order, under
	 * Firecracker's metric names where it has them (read_bytes,
	 * rx_packets_count...).  Under d->lock (virtio_dev_counters() takes
	 * it and adds the transport's own).  Optional. */
	void (*counters)(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque);
	/* New rate limits on the running device (the API's PATCH), as
	 * rl_update() takes them (a bucket whose settings are unchanged keeps
	 * its state): a is the device's only limiter, or net's rx; b is net's
	 * tx (NULL for a device with one limiter).  Requests held back under
	 * the old limits are served again at once.  Under d->lock, vmm
	 * thread.  0 or -errno.  Optional: NULL when the device's limits
	 * cannot change (the caller answers -EOPNOTSUPP). */
	int (*set_limits)(struct virtio_dev *d, const struct rl_cfg *a, const struct rl_cfg *b);
	/* The VM is about to move to another host (paused, its state not
	 * yet taken): make what the device wrote durable where that host
	 * reads it (blk: fdatasync of the disk).  Under d->lock, vmm thread.
	 * 0 or -errno (the migration fails, the VM runs on).  Optional. */
	int (*flush)(struct virtio_dev *d);
	/* The VM runs on another host (or process) now: tell the network
	 * where the guest is (net: a gratuitous RARP from its MAC through the
	 * tap, so switches learn the new port).  Under d->lock, any thread;
	 * best effort.  Optional. */
	void (*announce)(struct virtio_dev *d);
};

/* What a device's constructor makes, for virtio_dev_init(): its ops, its
 * own state (opaque to everyone else), the features it offers and its
 * name for messages and metrics ("virtio-block drive0": the word after
 * the space is the id in the metrics' group name, "block_drive0"). */
struct virtio_impl {
	const struct virtio_dev_ops *ops;
	void *priv;
	uint64_t features;
	char name[VIRTIO_NAME_MAX];
};

/* The transport's registers: fixed-width, the snapshot record of the
 * device's common part (the queues have their own). */
struct virtio_mmio_state {
	uint64_t driver_features;
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint32_t queue_sel;
	uint32_t status;
	uint32_t interrupt_status;
	uint32_t config_generation;
};
_Static_assert(sizeof(struct virtio_mmio_state) == 32, "a snapshot record");

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *priv; /* the device's own state */
	char name[VIRTIO_NAME_MAX]; /* "virtio-block drive0": messages */
	uint64_t features;	    /* offered; VIRTIO_F_VERSION_1 always */
	uint64_t base;		    /* MMIO slot's guest-physical address */
	uint32_t gsi;		    /* its interrupt line */

	struct virtio_mmio_state st;
	struct vq vq[VIRTIO_MAX_QUEUES];
	pthread_mutex_t lock;

	const struct gmem *mem;
	struct evloop *ev; /* the vmm thread's */
	int vm_fd;	   /* -1: no KVM (unit tests): no ioeventfd/irqfd */
	int irq_fd;	   /* irqfd on gsi */
	int notify_fd[VIRTIO_MAX_QUEUES];
	struct ev_source notify_src[VIRTIO_MAX_QUEUES];
	bool broken; /* NEEDS_RESET set and logged; cleared by reset */
	/* Set on a vCPU thread, done on the vmm thread (virtio/mmio.c). */
	bool reset_pending, activate_pending;
	bool verbose;
	uint64_t unhandled; /* accesses refused, counted (metrics) */
};

/* The transport's part of a device's snapshot: which device it was, what
 * was negotiated, the registers and every queue.  Fixed-width. */
struct virtio_dev_state {
	uint32_t device_id, nr_queues;
	uint64_t features; /* offered: a restored device must offer the same */
	struct virtio_mmio_state st;
	struct vq_state vq[VIRTIO_MAX_QUEUES];
	uint32_t broken, reserved;
};
_Static_assert(sizeof(struct virtio_dev_state) == 48 + 32 * VIRTIO_MAX_QUEUES + 8,
	       "a snapshot record");

/* Save d's transport state (the VM paused; takes d->lock). */
void virtio_dev_save(struct virtio_dev *d, struct virtio_dev_state *s);

/* Overlay a saved transport state on a freshly built d (before the VM
 * runs): the same device kind, queue count and offered features (else
 * -EINVAL: "offered features 0x.. differ from the snapshot's 0x.." — a
 * drive made read-only, say); ready queues are mapped again with their
 * cursors as saved, and a device the driver had started is activated.
 * 0 or -errno with the reason in err. */
/* Have the vmm thread run what a restore left pending (the activation's
 * sweep of the queues): a post-copy target's restore leaves it until its
 * RAM can be read (gmem's partial).  Any thread; takes no lock. */
void virtio_dev_kick(struct virtio_dev *d);

__attribute__((warn_unused_result)) int virtio_dev_restore(struct virtio_dev *d,
							   const struct virtio_dev_state *s,
							   char *err, size_t errlen);

/* Set up d: ops, priv, name and offered features (VIRTIO_F_VERSION_1 is
 * added), slot base and gsi; with vm_fd >= 0 one ioeventfd per queue on
 * QueueNotify (datamatch = queue index) and an irqfd on gsi, each
 * notification watched on ev.  Register virtio_mmio_access() on the MMIO
 * bus at base, VIRTIO_MMIO_SIZE bytes, opaque d.  0, or -errno with the
 * reason in err. */
__attribute__((warn_unused_result)) int virtio_dev_init(struct virtio_dev *d,
							const struct virtio_dev_ops *ops,
							void *priv, const char *name,
							uint64_t features, uint64_t base,
							uint32_t gsi, int vm_fd,
							const struct gmem *mem, struct evloop *ev,
							char *err, size_t errlen);

/* Close the eventfds; the device's own state stays (its destroy op
 * releases it). */
void virtio_dev_fini(struct virtio_dev *d);

/* d's counters (metrics): the device's own (its counters op), then the
 * transport's ("device_needs_reset", "unhandled_accesses"); fn once per
 * counter.  Takes d->lock. */
void virtio_dev_counters(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque);

/* The MMIO bus handler (base/bus.h signature): the §4.2.2 registers.
 * A guest's bad access (wrong width, a write to a read-only register, a
 * value out of range) is logged and ignored: it never stops the VM. */
int virtio_mmio_access(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		       bool is_write);

/* Interrupt the driver: set `why` (VIRTIO_INT_*) in InterruptStatus and
 * signal the irqfd.  Under d->lock. */
void virtio_interrupt(struct virtio_dev *d, uint32_t why);

/* After pushing used buffers on queue q: interrupt unless the driver
 * asked not to be (§2.7.7).  Under d->lock. */
void virtio_queue_done(struct virtio_dev *d, unsigned q);

/* The driver broke the device (a bad queue, a request it cannot mean):
 * set DEVICE_NEEDS_RESET, send a configuration interrupt and log the
 * reason once, naming the device.  The device serves nothing until the
 * driver resets it; the VM and other devices go on.  Under d->lock. */
void virtio_fail(struct virtio_dev *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* d is DRIVER_OK and not broken: queues may be served. */
bool virtio_live(const struct virtio_dev *d);

#endif
