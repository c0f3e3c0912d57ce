/* The VM's virtio devices (see monitor/vdevs.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/snap_records.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"

/* What the configuration asks of a device, in the device's own (neutral)
 * terms: each make_*() turns config section i into its constructor's
 * parameters. */

static void to_rl(const struct cfg_rate *c, struct rl_cfg *r)
{
	r->bytes = (struct rl_bucket_cfg){c->bw_size, c->bw_burst, c->bw_refill_ms};
	r->ops = (struct rl_bucket_cfg){c->ops_size, c->ops_burst, c->ops_refill_ms};
}

static unsigned nr_blocks(const struct vm_config *cfg)
{
	return cfg->nr_blocks;
}

static int make_block(const struct vm_config *cfg, unsigned i, struct virtio_impl *out, char *err,
		      size_t errlen)
{
	const struct cfg_block *c = &cfg->blocks[i];
	struct rl_cfg rate;
	to_rl(&c->rate, &rate);
	const struct vblk_params p = {c->name, c->path, c->read_only, c->direct, &rate};
	return vblk_create(&p, out, err, errlen);
}

static unsigned nr_nets(const struct vm_config *cfg)
{
	return cfg->nr_nets;
}

static int make_net(const struct vm_config *cfg, unsigned i, struct virtio_impl *out, char *err,
		    size_t errlen)
{
	const struct cfg_net *c = &cfg->nets[i];
	struct rl_cfg rx, tx;
	to_rl(&c->rx_rate, &rx);
	to_rl(&c->tx_rate, &tx);
	const struct vnet_params p = {c->name, c->tap, c->has_mac ? c->mac : NULL, &rx, &tx};
	return vnet_create(&p, out, err, errlen);
}

static unsigned nr_vsocks(const struct vm_config *cfg)
{
	return cfg->vsock.enabled;
}

static int make_vsock(const struct vm_config *cfg, unsigned i, struct virtio_impl *out, char *err,
		      size_t errlen)
{
	const struct vsock_params p = {cfg->vsock.cid, cfg->vsock.uds};
	return vsock_create(&p, out, err, errlen);
}

static unsigned nr_rngs(const struct vm_config *cfg)
{
	return cfg->rng.enabled;
}

static int make_rng(const struct vm_config *cfg, unsigned i, struct virtio_impl *out, char *err,
		    size_t errlen)
{
	struct rl_cfg rate;
	to_rl(&cfg->rng.rate, &rate);
	const struct vrng_params p = {&rate};
	return vrng_create(&p, out, err, errlen);
}

/* The configuration's sections that make virtio devices, in the order the
 * guest finds them (the first drive is /dev/vda). */
enum { S_BLOCK, S_NET, S_VSOCK, S_RNG, NR_SECTIONS };
static const struct section {
	unsigned (*count)(const struct vm_config *cfg);
	int (*make)(const struct vm_config *cfg, unsigned i, struct virtio_impl *out, char *err,
		    size_t errlen);
} sections[NR_SECTIONS] = {
    [S_BLOCK] = {nr_blocks, make_block},
    [S_NET] = {nr_nets, make_net},
    [S_VSOCK] = {nr_vsocks, make_vsock},
    [S_RNG] = {nr_rngs, make_rng},
};

struct vdevs {
	unsigned nr; /* made: each has its own state and its transport (perhaps half set up) */
	struct virtio_dev d[VDEVS_MAX];
};

/* Where section k's devices start among the VM's. */
static unsigned first_of(const struct vm_config *cfg, unsigned k)
{
	unsigned n = 0;
	for (unsigned j = 0; j < k; j++)
		n += sections[j].count(cfg);
	return n;
}

unsigned vdevs_count(const struct vm_config *cfg, bool hvt)
{
	return hvt ? 0 : first_of(cfg, NR_SECTIONS);
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

_Static_assert(2 * VDEVS_MAX + 1 + CFG_MAX_VCPUS + 2 <= VM_PARTS_MAX, "every part has room");

/* ---- a device's two parts: its transport (with the queues) and its own
 * record (its ops' save and restore) ---- */

static int transport_save(const struct vm_part *p, void *buf, size_t max, char *err,
			  size_t errlen)
{
	virtio_dev_save(p->opaque, buf);
	return sizeof(struct virtio_dev_state);
}

static int transport_restore(const struct vm_part *p, const void *rec, size_t len, char *err,
			     size_t errlen)
{
	return virtio_dev_restore(p->opaque, rec, err, errlen) ? -EINVAL : 0;
}

static int own_save(const struct vm_part *p, void *buf, size_t max, char *err, size_t errlen)
{
	struct virtio_dev *d = p->opaque;
	pthread_mutex_lock(&d->lock);
	int n = d->ops->save(d, buf, max < SNAP_DEV_RECORD_MAX ? max : SNAP_DEV_RECORD_MAX);
	pthread_mutex_unlock(&d->lock);
	if (n < 0)
		snprintf(err, errlen, "%s: cannot save its state: %s", d->name, strerror(-n));
	return n;
}

static int own_restore(const struct vm_part *p, const void *rec, size_t len, char *err,
		       size_t errlen)
{
	struct virtio_dev *d = p->opaque;
	if (!rec || !d->ops->restore)
		return 0;
	pthread_mutex_lock(&d->lock);
	int r = d->ops->restore(d, rec, len);
	pthread_mutex_unlock(&d->lock);
	if (r)
		snprintf(err, errlen, "%s: its saved record does not fit this device", d->name);
	return r ? -EINVAL : 0;
}

static int add_parts(struct vm *vm, unsigned i, struct virtio_dev *d)
{
	int r = vm_part_add(vm, &(struct vm_part){TAG_VDEV, i, sizeof(struct virtio_dev_state), 0,
						  d, transport_save, transport_restore});
	if (!r && d->ops->save)
		r = vm_part_add(vm, &(struct vm_part){TAG_VDVX, i, 0, VM_PART_OPTIONAL, d, own_save,
						      own_restore});
	return r;
}

/* Device i (section k's j-th): made, then put on the transport in its
 * slot, its parts registered.  0, -EINVAL for a configuration its
 * constructor refuses (a missing disk, a tap that is down), or another
 * -errno for host trouble; the reason in err. */
static int build_one(struct vm *vm, unsigned i, const struct section *k, unsigned j, char *err,
		     size_t errlen)
{
	struct virtio_dev *d = &vm->vdevs->d[i];
	struct virtio_impl m;
	int r = k->make(vm->cfg, j, &m, err, errlen);
	if (r)
		return r == -ENOMEM ? r : -EINVAL;
	vm->vdevs->nr = i + 1; /* virtio_dev_init() sets d->ops first: destroy can find it */
	r = virtio_dev_init(d, m.ops, m.priv, m.name, m.features, slot_base(i), VDEVS_FIRST_GSI + i,
			    vm->vm_fd, &vm->mem, &vm->ev, err, errlen);
	if (r)
		return vm_host_err(r);
	r = bus_register(&vm->mmio, slot_base(i), VIRTIO_MMIO_SIZE, virtio_mmio_access, d, d->name);
	if (r) {
		snprintf(err, errlen, "%s: cannot register its MMIO slot: %s", d->name,
			 strerror(-r));
		return vm_host_err(r);
	}
	d->verbose = vm->verbose;
	r = add_parts(vm, i, d);
	if (r)
		snprintf(err, errlen, "%s: cannot register its parts: %s", d->name, strerror(-r));
	return r ? vm_host_err(r) : 0;
}

int vdevs_build(struct vm *vm, char *err, size_t errlen)
{
	unsigned n = vdevs_count(vm->cfg, vm->hvt != NULL);
	if (!n)
		return 0;
	if (n > VDEVS_MAX) {
		snprintf(err, errlen, "%u virtio devices: at most %u (one per free IOAPIC line)", n,
			 VDEVS_MAX);
		return -EINVAL;
	}
	vm->vdevs = calloc(1, sizeof(*vm->vdevs));
	if (!vm->vdevs) {
		snprintf(err, errlen, "virtio devices: out of memory");
		return -ENOMEM;
	}
	unsigned i = 0;
	for (const struct section *k = sections; k < sections + NR_SECTIONS; k++)
		for (unsigned j = 0; j < k->count(vm->cfg); j++, i++) {
			int r = build_one(vm, i, k, j, err, errlen);
			if (r)
				return r;
		}
	return 0;
}

void vdevs_destroy(struct vm *vm)
{
	if (!vm->vdevs)
		return;
	for (unsigned i = 0; i < vm->vdevs->nr; i++) {
		struct virtio_dev *d = &vm->vdevs->d[i];
		virtio_dev_fini(d);
		d->ops->destroy(d);
	}
	free(vm->vdevs);
	vm->vdevs = NULL;
}

int vdevs_set_limits(struct vm *vm, bool net, unsigned index, const struct cfg_rate *a,
		     const struct cfg_rate *b)
{
	unsigned k = net ? S_NET : S_BLOCK;
	if (!vm->vdevs || index >= sections[k].count(vm->cfg))
		return -ENOENT;
	unsigned i = first_of(vm->cfg, k) + index;
	if (i >= vm->vdevs->nr)
		return -ENOENT;
	struct virtio_dev *d = &vm->vdevs->d[i];
	if (!d->ops->set_limits)
		return -EOPNOTSUPP;
	struct rl_cfg ra, rb;
	to_rl(a, &ra);
	if (b)
		to_rl(b, &rb);
	pthread_mutex_lock(&d->lock);
	int r = d->ops->set_limits(d, &ra, b ? &rb : NULL);
	pthread_mutex_unlock(&d->lock);
	return r;
}

int vdevs_flush(struct vm *vm)
{
	int r = 0;
	for (unsigned i = 0; vm->vdevs && i < vm->vdevs->nr && !r; i++) {
		struct virtio_dev *d = &vm->vdevs->d[i];
		if (!d->ops->flush)
			continue;
		pthread_mutex_lock(&d->lock);
		r = d->ops->flush(d);
		pthread_mutex_unlock(&d->lock);
	}
	return r;
}

void vdevs_announce(struct vm *vm)
{
	for (unsigned i = 0; vm->vdevs && i < vm->vdevs->nr; i++) {
		struct virtio_dev *d = &vm->vdevs->d[i];
		if (!d->ops->announce)
			continue;
		pthread_mutex_lock(&d->lock);
		d->ops->announce(d);
		pthread_mutex_unlock(&d->lock);
	}
}

void vdevs_kick(struct vm *vm)
{
	for (unsigned i = 0; vm->vdevs && i < vm->vdevs->nr; i++)
		virtio_dev_kick(&vm->vdevs->d[i]);
}

struct virtio_dev *vdevs_get(struct vm *vm, unsigned i)
{
	return vm->vdevs && i < vm->vdevs->nr ? &vm->vdevs->d[i] : NULL;
}
