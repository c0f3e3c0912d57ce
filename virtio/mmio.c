/* The virtio-mmio transport (virtio 1.2 §4.2), register layout version 2.
 * Registers are reached from vCPU threads (MMIO exits); queue
 * notifications arrive through ioeventfds on the vmm thread's loop, and
 * the device's interrupt leaves through an irqfd.  See virtio/virtio.h. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "virtio/virtio.h"

/* §4.2.2 register offsets */
enum {
	REG_MAGIC = 0x000,
	REG_VERSION = 0x004,
	REG_DEVICE_ID = 0x008,
	REG_VENDOR_ID = 0x00c,
	REG_DEVICE_FEATURES = 0x010,
	REG_DEVICE_FEATURES_SEL = 0x014,
	REG_DRIVER_FEATURES = 0x020,
	REG_DRIVER_FEATURES_SEL = 0x024,
	REG_QUEUE_SEL = 0x030,
	REG_QUEUE_NUM_MAX = 0x034,
	REG_QUEUE_NUM = 0x038,
	REG_QUEUE_READY = 0x044,
	REG_QUEUE_NOTIFY = 0x050,
	REG_INTERRUPT_STATUS = 0x060,
	REG_INTERRUPT_ACK = 0x064,
	REG_STATUS = 0x070,
	REG_QUEUE_DESC_LOW = 0x080,
	REG_QUEUE_DESC_HIGH = 0x084,
	REG_QUEUE_DRIVER_LOW = 0x090,
	REG_QUEUE_DRIVER_HIGH = 0x094,
	REG_QUEUE_DEVICE_LOW = 0x0a0,
	REG_QUEUE_DEVICE_HIGH = 0x0a4,
	REG_SHM_SEL = 0x0ac,
	REG_SHM_LEN_LOW = 0x0b0,
	REG_SHM_LEN_HIGH = 0x0b4,
	REG_SHM_BASE_LOW = 0x0b8,
	REG_SHM_BASE_HIGH = 0x0bc,
	REG_CONFIG_GENERATION = 0x0fc,
	REG_CONFIG = 0x100,
};

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_MMIO_VERSION 2
#define EMBER_VENDOR_ID 0x52424d45 /* "EMBR" */

static void logf_dev(struct virtio_dev *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void logf_dev(struct virtio_dev *d, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ember: %s: %s\n", d->name, msg);
}

static void notified(struct ev_source *src, uint32_t events);

static int realize(struct virtio_dev *d, char *err, size_t errlen)
{
	int r = d->ops->realize ? d->ops->realize(d) : 0;
	if (r)
		snprintf(err, errlen, "%s: %s", d->name, strerror(-r));
	return r;
}

int virtio_dev_init(struct virtio_dev *d, const struct virtio_dev_ops *ops, void *priv,
		    const char *name, uint64_t features, uint64_t base, uint32_t gsi, int vm_fd,
		    const struct gmem *mem, struct evloop *ev, char *err, size_t errlen)
{
	memset(d, 0, sizeof(*d));
	d->ops = ops;
	d->priv = priv;
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->features = features | (1ULL << VIRTIO_F_VERSION_1);
	d->base = base;
	d->gsi = gsi;
	d->mem = mem;
	d->ev = ev;
	d->vm_fd = vm_fd;
	d->irq_fd = -1;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		d->notify_fd[q] = -1;
		d->vq[q].mem = mem;
	}
	pthread_mutex_init(&d->lock, NULL);
	if (ops->nr_queues > VIRTIO_MAX_QUEUES) {
		snprintf(err, errlen, "%s: %u queues (at most %u)", name, ops->nr_queues,
			 VIRTIO_MAX_QUEUES);
		return -EINVAL;
	}
	if (vm_fd < 0)
		return realize(d, err, errlen);

	d->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct kvm_irqfd irqfd = {.fd = (uint32_t)d->irq_fd, .gsi = gsi};
	if (d->irq_fd < 0 || ioctl(vm_fd, KVM_IRQFD, &irqfd) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot attach its interrupt (GSI %u): %s", name, gsi,
			 strerror(e));
		return -e;
	}
	for (unsigned q = 0; q < ops->nr_queues; q++) {
		d->notify_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		/* A 4-byte write of q to QueueNotify signals the eventfd in the
		 * kernel, no exit to ember (KVM API §4.59 KVM_IOEVENTFD). */
		struct kvm_ioeventfd io = {
		    .datamatch = q,
		    .addr = base + REG_QUEUE_NOTIFY,
		    .len = 4,
		    .fd = d->notify_fd[q],
		    .flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
		};
		int r = d->notify_fd[q] < 0 ? -errno : 0;
		if (!r && ioctl(vm_fd, KVM_IOEVENTFD, &io) < 0)
			r = -errno;
		if (!r)
			r = ev_add(ev, &d->notify_src[q], d->notify_fd[q], EPOLLIN, notified, d);
		if (r) {
			snprintf(err, errlen, "%s: cannot set up queue %u's notification: %s", name,
				 q, strerror(-r));
			return r;
		}
	}
	return realize(d, err, errlen);
}

void virtio_dev_fini(struct virtio_dev *d)
{
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		if (d->ev)
			ev_del(d->ev, &d->notify_src[q]);
		if (d->notify_fd[q] >= 0)
			close(d->notify_fd[q]);
		d->notify_fd[q] = -1;
	}
	if (d->irq_fd >= 0)
		close(d->irq_fd);
	d->irq_fd = -1;
}

void virtio_dev_counters(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque)
{
	pthread_mutex_lock(&d->lock);
	if (d->ops->counters)
		d->ops->counters(d, fn, opaque);
	fn(opaque, "device_needs_reset", d->broken);
	fn(opaque, "unhandled_accesses", d->unhandled);
	pthread_mutex_unlock(&d->lock);
}

bool virtio_live(const struct virtio_dev *d)
{
	/* DRIVER_OK without FEATURES_OK (which we may have refused) is no
	 * driver at all (§3.1.1). */
	const uint32_t on = VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	return (d->st.status & on) == on && !d->broken;
}

void virtio_interrupt(struct virtio_dev *d, uint32_t why)
{
	__atomic_or_fetch(&d->st.interrupt_status, why, __ATOMIC_SEQ_CST);
	uint64_t one = 1;
	if (d->irq_fd >= 0)
		(void)!write(d->irq_fd, &one, sizeof(one));
}

void virtio_queue_done(struct virtio_dev *d, unsigned q)
{
	if (!vq_no_interrupt(&d->vq[q]))
		virtio_interrupt(d, VIRTIO_INT_USED);
}

void virtio_fail(struct virtio_dev *d, const char *fmt, ...)
{
	if (d->broken)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	d->broken = true;
	d->st.status |= VIRTIO_STATUS_NEEDS_RESET;
	logf_dev(d, "%s; device needs reset (the guest must reset it)", msg);
	virtio_interrupt(d, VIRTIO_INT_CONFIG);
}

/* A queue notification: from the ioeventfd (vmm thread), or a write the
 * kernel did not match (another width) handled the same way. */
static void queue_notify(struct virtio_dev *d, uint32_t q)
{
	if (q >= d->ops->nr_queues || !d->vq[q].s.ready) {
		if (d->verbose || !d->unhandled)
			logf_dev(d, "notify on queue %u, which is %s; ignored", q,
				 q >= d->ops->nr_queues ? "not a queue of this device"
							: "not ready");
		d->unhandled++;
		return;
	}
	if (virtio_live(d))
		d->ops->notify(d, q);
}

/* Device work that the vCPU thread hands to the vmm thread: the device's
 * own reset and activation (they may close or watch backend fds, which
 * only the vmm thread may), then buffers made available meanwhile. */
static void run_pending(struct virtio_dev *d)
{
	if (d->reset_pending) {
		d->reset_pending = false;
		if (d->ops->reset)
			d->ops->reset(d);
	}
	if (d->activate_pending) {
		d->activate_pending = false;
		if (!virtio_live(d))
			return;
		int r = d->ops->activate ? d->ops->activate(d) : 0;
		if (r)
			virtio_fail(d, "cannot start serving: %s", strerror(-r));
		for (unsigned q = 0; q < d->ops->nr_queues && virtio_live(d); q++)
			if (d->vq[q].s.ready && vq_has_avail(&d->vq[q]))
				d->ops->notify(d, q);
	}
}

/* Wake the vmm thread for run_pending(); without KVM (unit tests) run it
 * here. */
static void kick_vmm(struct virtio_dev *d)
{
	uint64_t one = 1;
	if (d->notify_fd[0] < 0)
		run_pending(d);
	else
		(void)!write(d->notify_fd[0], &one, sizeof(one));
}

void virtio_dev_kick(struct virtio_dev *d)
{
	kick_vmm(d);
}

static void notified(struct ev_source *src, uint32_t events)
{
	struct virtio_dev *d = src->opaque;
	uint64_t n;
	if (read(src->fd, &n, sizeof(n)) != sizeof(n))
		return;
	unsigned q = (unsigned)(src - d->notify_src);
	pthread_mutex_lock(&d->lock);
	if (d->reset_pending || d->activate_pending)
		run_pending(d);
	else
		queue_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

static void reset(struct virtio_dev *d)
{
	d->reset_pending = true;
	d->activate_pending = false;
	kick_vmm(d);
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		vq_reset(&d->vq[q]);
	uint32_t gen = d->st.config_generation;
	memset(&d->st, 0, sizeof(d->st));
	d->st.config_generation = gen;
	d->broken = false;
}

/* §2.2.2 / §3.1.1: FEATURES_OK only for a subset of what we offered that
 * includes VERSION_1 (legacy drivers are refused). */
static void set_status(struct virtio_dev *d, uint32_t v)
{
	uint32_t old = d->st.status;
	if (v == 0) {
		reset(d);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		uint64_t f = d->st.driver_features;
		if (!(f & (1ULL << VIRTIO_F_VERSION_1)) || (f & ~d->features)) {
			logf_dev(d, "driver features 0x%llx refused (offered 0x%llx; VERSION_1 is "
				    "required)", (unsigned long long)f,
				 (unsigned long long)d->features);
			v &= ~(uint32_t)VIRTIO_STATUS_FEATURES_OK;
		}
	}
	/* The device's NEEDS_RESET bit stays until a reset. */
	d->st.status = v | (old & VIRTIO_STATUS_NEEDS_RESET);
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) &&
	    (v & VIRTIO_STATUS_FEATURES_OK) && !d->broken) {
		d->activate_pending = true;
		kick_vmm(d);
	}
}

static struct vq *cur_queue(struct virtio_dev *d)
{
	return d->st.queue_sel < d->ops->nr_queues ? &d->vq[d->st.queue_sel] : NULL;
}

static void set_half(uint64_t *v, bool high, uint32_t x)
{
	*v = high ? (*v & 0xffffffffULL) | ((uint64_t)x << 32) : (*v & ~0xffffffffULL) | x;
}

static uint32_t read_reg(struct virtio_dev *d, uint64_t off)
{
	struct vq *q = cur_queue(d);
	switch (off) {
	case REG_MAGIC:
		return VIRTIO_MMIO_MAGIC;
	case REG_VERSION:
		return VIRTIO_MMIO_VERSION;
	case REG_DEVICE_ID:
		return d->ops->device_id;
	case REG_VENDOR_ID:
		return EMBER_VENDOR_ID;
	case REG_DEVICE_FEATURES:
		return d->st.device_features_sel == 0   ? (uint32_t)d->features
		       : d->st.device_features_sel == 1 ? (uint32_t)(d->features >> 32)
							: 0;
	case REG_QUEUE_NUM_MAX:
		return q ? VQ_MAX_SIZE : 0;
	case REG_QUEUE_READY:
		return q ? q->s.ready : 0;
	case REG_INTERRUPT_STATUS:
		return __atomic_load_n(&d->st.interrupt_status, __ATOMIC_SEQ_CST);
	case REG_STATUS:
		return d->st.status;
	case REG_SHM_LEN_LOW:
	case REG_SHM_LEN_HIGH:
		return 0xffffffff; /* §4.2.2: no shared memory region */
	case REG_CONFIG_GENERATION:
		return d->st.config_generation;
	}
	d->unhandled++;
	if (d->verbose)
		logf_dev(d, "read of register 0x%03llx ignored", (unsigned long long)off);
	return 0;
}

static void write_queue_reg(struct virtio_dev *d, uint64_t off, uint32_t v)
{
	struct vq *q = cur_queue(d);
	if (!q) {
		d->unhandled++;
		if (d->verbose)
			logf_dev(d, "write to register 0x%03llx for queue %u, which does not "
				    "exist; ignored", (unsigned long long)off, d->st.queue_sel);
		return;
	}
	if (off == REG_QUEUE_READY) {
		if (!v) {
			vq_reset(q);
			return;
		}
		if (q->s.ready)
			return;
		char why[VQ_ERR_MAX];
		if (vq_enable(q, d->mem, why, sizeof(why))) {
			virtio_fail(d, "queue %u: %s", d->st.queue_sel, why);
			return;
		}
		q->s.ready = 1;
		return;
	}
	/* §4.2.2: the queue's configuration may change only while it is not
	 * ready. */
	if (q->s.ready) {
		d->unhandled++;
		logf_dev(d, "queue %u: register 0x%03llx written while the queue is ready; "
			    "ignored", d->st.queue_sel, (unsigned long long)off);
		return;
	}
	switch (off) {
	case REG_QUEUE_NUM:
		q->s.num = v > 0xffff ? 0 : (uint16_t)v; /* checked at QueueReady */
		break;
	case REG_QUEUE_DESC_LOW:
	case REG_QUEUE_DESC_HIGH:
		set_half(&q->s.desc, off == REG_QUEUE_DESC_HIGH, v);
		break;
	case REG_QUEUE_DRIVER_LOW:
	case REG_QUEUE_DRIVER_HIGH:
		set_half(&q->s.avail, off == REG_QUEUE_DRIVER_HIGH, v);
		break;
	case REG_QUEUE_DEVICE_LOW:
	case REG_QUEUE_DEVICE_HIGH:
		set_half(&q->s.used, off == REG_QUEUE_DEVICE_HIGH, v);
		break;
	}
}

static void write_reg(struct virtio_dev *d, uint64_t off, uint32_t v)
{
	switch (off) {
	case REG_DEVICE_FEATURES_SEL:
		d->st.device_features_sel = v;
		return;
	case REG_DRIVER_FEATURES:
		/* §3.1.1: features are set before FEATURES_OK, not after. */
		if (d->st.status & VIRTIO_STATUS_FEATURES_OK)
			break;
		if (d->st.driver_features_sel < 2)
			set_half(&d->st.driver_features, d->st.driver_features_sel == 1, v);
		return;
	case REG_DRIVER_FEATURES_SEL:
		d->st.driver_features_sel = v;
		return;
	case REG_QUEUE_SEL:
		d->st.queue_sel = v;
		return;
	case REG_QUEUE_NUM:
	case REG_QUEUE_READY:
	case REG_QUEUE_DESC_LOW:
	case REG_QUEUE_DESC_HIGH:
	case REG_QUEUE_DRIVER_LOW:
	case REG_QUEUE_DRIVER_HIGH:
	case REG_QUEUE_DEVICE_LOW:
	case REG_QUEUE_DEVICE_HIGH:
		write_queue_reg(d, off, v);
		return;
	case REG_QUEUE_NOTIFY:
		/* The ioeventfd took the 4-byte writes of a queue's index; what
		 * reaches here names no queue of ours (or KVM has no ioeventfd). */
		if (v < d->ops->nr_queues && d->notify_fd[v] >= 0) {
			uint64_t one = 1;
			(void)!write(d->notify_fd[v], &one, sizeof(one));
		} else {
			queue_notify(d, v);
		}
		return;
	case REG_INTERRUPT_ACK:
		__atomic_and_fetch(&d->st.interrupt_status, ~v, __ATOMIC_SEQ_CST);
		return;
	case REG_STATUS:
		set_status(d, v);
		return;
	case REG_SHM_SEL:
		return;
	}
	d->unhandled++;
	if (d->verbose)
		logf_dev(d, "write of 0x%x to register 0x%03llx ignored", v,
			 (unsigned long long)off);
}

int virtio_mmio_access(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		       bool is_write)
{
	struct virtio_dev *d = opaque;
	pthread_mutex_lock(&d->lock);
	if (offset >= REG_CONFIG) {
		/* Device-specific configuration: any width (§4.2.2.2). */
		if (!is_write) {
			memset(data, 0, len);
			if (d->ops->config_read)
				d->ops->config_read(d, (uint32_t)(offset - REG_CONFIG), data, len);
		} else {
			d->unhandled++;
		}
	} else if (len != 4 || (offset & 3)) {
		/* §4.2.2.2: the common registers are 32-bit and aligned. */
		d->unhandled++;
		if (d->verbose || d->unhandled == 1)
			logf_dev(d, "%u-byte %s at register 0x%03llx (must be 4-byte, aligned); "
				    "ignored", len, is_write ? "write" : "read",
				 (unsigned long long)offset);
		if (!is_write)
			memset(data, 0xff, len);
	} else if (is_write) {
		uint32_t v;
		memcpy(&v, data, 4);
		write_reg(d, offset, v);
	} else {
		uint32_t v = read_reg(d, offset);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

void virtio_dev_save(struct virtio_dev *d, struct virtio_dev_state *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&d->lock);
	s->device_id = d->ops->device_id;
	s->nr_queues = d->ops->nr_queues;
	s->features = d->features;
	s->st = d->st;
	for (unsigned q = 0; q < d->ops->nr_queues; q++)
		s->vq[q] = d->vq[q].s;
	s->broken = d->broken;
	pthread_mutex_unlock(&d->lock);
}

int virtio_dev_restore(struct virtio_dev *d, const struct virtio_dev_state *s, char *err,
		       size_t errlen)
{
	if (s->device_id != d->ops->device_id || s->nr_queues != d->ops->nr_queues) {
		snprintf(err, errlen, "%s: the snapshot has a device of id %u with %u queues here",
			 d->name, s->device_id, s->nr_queues);
		return -EINVAL;
	}
	if (s->features != d->features) {
		snprintf(err, errlen,
			 "%s: offered features 0x%llx differ from the snapshot's 0x%llx (was the "
			 "device configured differently?)",
			 d->name, (unsigned long long)d->features, (unsigned long long)s->features);
		return -EINVAL;
	}
	if (s->st.driver_features & ~d->features) {
		snprintf(err, errlen, "%s: the snapshot's driver features are not a subset of the "
				      "offered ones", d->name);
		return -EINVAL;
	}
	/* The rest as a driver could have left it (§4.2.2): known status
	 * bits, the two interrupt bits, queues ready or not. */
	const uint32_t status_bits = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				     VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK |
				     VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED;
	bool ready_ok = true;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		ready_ok &= s->vq[q].ready <= 1 && (q < d->ops->nr_queues || !s->vq[q].ready);
	if ((s->st.status & ~status_bits) || (s->st.interrupt_status & ~3u) || s->broken > 1 ||
	    !ready_ok) {
		snprintf(err, errlen,
			 "%s: the snapshot's transport state is not one a driver can reach "
			 "(status 0x%x, interrupt status 0x%x)",
			 d->name, s->st.status, s->st.interrupt_status);
		return -EINVAL;
	}
	pthread_mutex_lock(&d->lock);
	d->st = s->st;
	d->broken = s->broken != 0;
	int r = 0;
	for (unsigned q = 0; q < d->ops->nr_queues && !r; q++) {
		char why[VQ_ERR_MAX];
		d->vq[q].s = s->vq[q];
		if (!s->vq[q].ready)
			continue;
		r = vq_map(&d->vq[q], d->mem, why, sizeof(why));
		if (r)
			snprintf(err, errlen, "%s: queue %u: %s", d->name, q, why);
	}
	/* A started device serves again; buffers it had not taken yet are
	 * taken on the next notification (or the activation's sweep). */
	if (!r && virtio_live(d)) {
		d->activate_pending = true;
		if (!d->mem->partial) /* else virtio_dev_kick, once RAM can be read */
			run_pending(d);
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}
