/* The VM's virtio devices (see monitor/vdevs.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/exitcodes.h"
#include "monitor/layout.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"

enum vkind { V_BLOCK, V_NET, V_VSOCK, V_RNG };

struct vdev {
	struct virtio_dev dev;
	enum vkind kind;
	union {
		struct virtio_blk blk;
		struct virtio_net net;
		struct virtio_rng rng;
		struct virtio_vsock *vsock;
	} u;
	bool open; /* the backend is open: close it */
};

struct vdevs {
	unsigned nr;
	struct vdev d[VDEVS_MAX];
};

unsigned vdevs_count(const struct vm_config *cfg, bool hvt)
{
	if (hvt)
		return 0;
	return cfg->nr_blocks + cfg->nr_nets + cfg->vsock.enabled + cfg->rng.enabled;
}

static uint64_t slot_base(unsigned i)
{
	return LAYOUT_VIRTIO_MMIO + (uint64_t)i * VIRTIO_MMIO_SIZE;
}

size_t vdevs_cmdline(const struct vm_config *cfg, bool hvt, char *buf, size_t len, size_t size)
{
	unsigned n = vdevs_count(cfg, hvt);
	for (unsigned i = 0; i < n; i++) {
		int w = snprintf(buf + len, size - len, "%svirtio_mmio.device=4K@0x%" PRIx64 ":%u",
				 len ? " " : "", slot_base(i), VDEVS_FIRST_GSI + i);
		if (w < 0 || (size_t)w >= size - len)
			return (size_t)-1;
		len += (size_t)w;
	}
	return len;
}

unsigned vdevs_acpi(const struct vm_config *cfg, bool hvt, struct acpi_mmio_dev *out)
{
	unsigned n = vdevs_count(cfg, hvt);
	n = n > VDEVS_MAX ? VDEVS_MAX : n;
	for (unsigned i = 0; i < n; i++)
		out[i] = (struct acpi_mmio_dev){slot_base(i), VIRTIO_MMIO_SIZE, VDEVS_FIRST_GSI + i};
	return n;
}

static void to_rl(const struct cfg_rate *c, struct rl_cfg *r)
{
	r->bytes = (struct rl_bucket_cfg){c->bw_size, c->bw_burst, c->bw_refill_ms};
	r->ops = (struct rl_bucket_cfg){c->ops_size, c->ops_burst, c->ops_refill_ms};
}

/* Open device i's backend from the configuration.  0 or -errno, err set. */
static int open_backend(struct vm *vm, struct vdev *v, unsigned i, char *name, size_t namelen,
			const struct virtio_dev_ops **ops, uint64_t *features, char *err,
			size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	struct rl_cfg a, b;
	int r;

	if (i < cfg->nr_blocks) {
		const struct cfg_block *c = &cfg->blocks[i];
		to_rl(&c->rate, &a);
		v->kind = V_BLOCK;
		snprintf(name, namelen, "virtio-block %s", c->name);
		r = vblk_open(&v->u.blk, c->path, c->read_only, c->direct, c->name, &a, err, errlen);
		*ops = &vblk_ops;
		*features = r ? 0 : vblk_features(&v->u.blk);
		return r;
	}
	i -= cfg->nr_blocks;
	if (i < cfg->nr_nets) {
		const struct cfg_net *c = &cfg->nets[i];
		to_rl(&c->rx_rate, &a);
		to_rl(&c->tx_rate, &b);
		v->kind = V_NET;
		snprintf(name, namelen, "virtio-net %s", c->name);
		r = vnet_open(&v->u.net, c->tap, c->has_mac ? c->mac : NULL, &a, &b, err, errlen);
		*ops = &vnet_ops;
		*features = r ? 0 : vnet_features(&v->u.net);
		return r;
	}
	i -= cfg->nr_nets;
	if (i == 0 && cfg->vsock.enabled) {
		v->kind = V_VSOCK;
		snprintf(name, namelen, "virtio-vsock");
		*ops = &vsock_ops;
		*features = 0;
		return vsock_create(&v->u.vsock, cfg->vsock.cid, cfg->vsock.uds, err, errlen);
	}
	to_rl(&cfg->rng.rate, &a);
	v->kind = V_RNG;
	snprintf(name, namelen, "virtio-rng");
	vrng_init(&v->u.rng, &a);
	*ops = &vrng_ops;
	*features = 0;
	return 0;
}

int vdevs_build(struct vm *vm, char *err, size_t errlen)
{
	unsigned n = vdevs_count(vm->cfg, vm->hvt != NULL);
	if (!n)
		return 0;
	if (n > VDEVS_MAX) {
		snprintf(err, errlen, "%u virtio devices: at most %u (one per free IOAPIC line)", n,
			 VDEVS_MAX);
		return EXIT_CONFIG;
	}
	vm->vdevs = calloc(1, sizeof(*vm->vdevs));
	if (!vm->vdevs) {
		snprintf(err, errlen, "virtio devices: out of memory");
		return EXIT_HOST;
	}
	for (unsigned i = 0; i < n; i++) {
		struct vdev *v = &vm->vdevs->d[i];
		const struct virtio_dev_ops *ops;
		uint64_t features;
		char name[VIRTIO_NAME_MAX], why[VM_ERR_MAX];

		vm->vdevs->nr = i + 1;
		int r = open_backend(vm, v, i, name, sizeof(name), &ops, &features, why,
				     sizeof(why));
		if (r) {
			snprintf(err, errlen, "%s: %s", name, why);
			return r == -ENOMEM ? EXIT_HOST : EXIT_CONFIG;
		}
		v->open = true;
		void *priv = v->kind == V_VSOCK ? (void *)v->u.vsock : (void *)&v->u;
		r = virtio_dev_init(&v->dev, ops, priv, name, features, slot_base(i),
				    VDEVS_FIRST_GSI + i, vm->vm_fd, &vm->mem, &vm->ev, why,
				    sizeof(why));
		if (!r)
			r = bus_register(&vm->mmio, slot_base(i), VIRTIO_MMIO_SIZE, virtio_mmio_access,
					 &v->dev, v->dev.name);
		if (r) {
			snprintf(err, errlen, "%s", why);
			return EXIT_HOST;
		}
		v->dev.verbose = vm->verbose;
	}
	return 0;
}

void vdevs_destroy(struct vm *vm)
{
	if (!vm->vdevs)
		return;
	for (unsigned i = 0; i < vm->vdevs->nr; i++) {
		struct vdev *v = &vm->vdevs->d[i];
		virtio_dev_fini(&v->dev);
		if (!v->open)
			continue;
		switch (v->kind) {
		case V_BLOCK:
			vblk_close(&v->u.blk);
			break;
		case V_NET:
			vnet_close(&v->u.net);
			break;
		case V_VSOCK:
			vsock_destroy(v->u.vsock);
			break;
		case V_RNG:
			vrng_close(&v->u.rng);
			break;
		}
	}
	free(vm->vdevs);
	vm->vdevs = NULL;
}

int vdevs_set_limits(struct vm *vm, bool net, unsigned index, const struct cfg_rate *a,
		     const struct cfg_rate *b)
{
	unsigned i = net ? vm->cfg->nr_blocks + index : index;
	if (!vm->vdevs || i >= vm->vdevs->nr ||
	    (net ? index >= vm->cfg->nr_nets : index >= vm->cfg->nr_blocks))
		return -ENOENT;
	struct vdev *v = &vm->vdevs->d[i];
	struct rl_cfg ra, rb;
	to_rl(a, &ra);
	pthread_mutex_lock(&v->dev.lock);
	if (net) {
		to_rl(b, &rb);
		vlimit_update(&v->u.net.rx_limit, &ra);
		vlimit_update(&v->u.net.tx_limit, &rb);
	} else {
		vlimit_update(&v->u.blk.limit, &ra);
	}
	/* Requests held back under the old limits get their chance now. */
	if (virtio_live(&v->dev))
		for (unsigned q = 0; q < v->dev.ops->nr_queues; q++)
			v->dev.ops->notify(&v->dev, q);
	pthread_mutex_unlock(&v->dev.lock);
	return 0;
}

struct virtio_dev *vdevs_get(struct vm *vm, unsigned i)
{
	return vm->vdevs && i < vm->vdevs->nr ? &vm->vdevs->d[i].dev : NULL;
}

void vdevs_counters(struct virtio_dev *d,
		    void (*fn)(void *opaque, const char *name, uint64_t value), void *opaque)
{
	struct vdev *v = (struct vdev *)d; /* dev is the first member */
	pthread_mutex_lock(&d->lock);
	switch (v->kind) {
	case V_BLOCK: {
		const struct blk_stats *s = &v->u.blk.stats;
		fn(opaque, "read_count", s->read_ops);
		fn(opaque, "write_count", s->write_ops);
		fn(opaque, "flush_count", s->flush_ops);
		fn(opaque, "read_bytes", s->read_bytes);
		fn(opaque, "write_bytes", s->write_bytes);
		fn(opaque, "io_errors", s->io_errors);
		fn(opaque, "rate_limiter_throttled_events", v->u.blk.limit.throttled);
		break;
	}
	case V_NET: {
		const struct net_stats *s = &v->u.net.stats;
		fn(opaque, "rx_packets_count", s->rx_frames);
		fn(opaque, "rx_bytes_count", s->rx_bytes);
		fn(opaque, "tx_packets_count", s->tx_frames);
		fn(opaque, "tx_bytes_count", s->tx_bytes);
		fn(opaque, "rx_fails", s->rx_too_big);
		fn(opaque, "tx_fails", s->tx_malformed + s->tx_errors);
		fn(opaque, "rx_rate_limiter_throttled", v->u.net.rx_limit.throttled);
		fn(opaque, "tx_rate_limiter_throttled", v->u.net.tx_limit.throttled);
		break;
	}
	case V_RNG:
		fn(opaque, "entropy_bytes", v->u.rng.bytes);
		fn(opaque, "entropy_event_count", v->u.rng.requests);
		fn(opaque, "entropy_rate_limiter_throttled", v->u.rng.limit.throttled);
		break;
	case V_VSOCK: {
		/* Firecracker's vsock metric names, then ember's own. */
		const struct vsock_stats *s = vsock_stats(v->u.vsock);
		fn(opaque, "activate_fails", s->activate_fails);
		fn(opaque, "rx_queue_event_fails", s->rx_queue_event_fails);
		fn(opaque, "tx_queue_event_fails", s->tx_queue_event_fails);
		fn(opaque, "ev_queue_event_fails", s->ev_queue_event_fails);
		fn(opaque, "muxer_event_fails", s->muxer_event_fails);
		fn(opaque, "conn_event_fails", s->conn_event_fails);
		fn(opaque, "rx_queue_event_count", s->rx_queue_event_count);
		fn(opaque, "tx_queue_event_count", s->tx_queue_event_count);
		fn(opaque, "rx_bytes_count", s->rx_bytes_count);
		fn(opaque, "tx_bytes_count", s->tx_bytes_count);
		fn(opaque, "rx_packets_count", s->rx_packets_count);
		fn(opaque, "tx_packets_count", s->tx_packets_count);
		fn(opaque, "conns_added", s->conns_added);
		fn(opaque, "conns_killed", s->conns_killed);
		fn(opaque, "conns_removed", s->conns_removed);
		fn(opaque, "tx_flush_fails", s->tx_flush_fails);
		fn(opaque, "tx_write_fails", s->tx_write_fails);
		fn(opaque, "rx_read_fails", s->rx_read_fails);
		fn(opaque, "conns_refused", s->conns_refused);
		fn(opaque, "guest_errors", s->guest_errors);
		fn(opaque, "rst_dropped", s->rst_dropped);
		fn(opaque, "transport_resets", s->transport_resets);
		break;
	}
	}
	fn(opaque, "device_needs_reset", d->broken);
	fn(opaque, "unhandled_accesses", d->unhandled);
	pthread_mutex_unlock(&d->lock);
}
