/* virtio/mmio: the virtio-mmio transport (virtio 1.2 §4.2) driven only
 * through its registers, as a guest driver would, over a fake guest
 * memory and without KVM.  Identification, feature negotiation (§3.1.1),
 * queue setup and its refusals, notifications, DEVICE_NEEDS_RESET and the
 * reset that clears it, access widths, config space, interrupts.  The
 * device under the transport is a two-queue test device that records what
 * the transport asked of it; a bad chain is shown with virtio-rng. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tests/unit/virtio_fixture.h"
#include "virtio/rng.h"

#define TDEV_CFG_LEN 24
#define TDEV_FEATURES ((1ULL << 3) | (1ULL << 35)) /* besides VERSION_1 */

/* The test device: counts what the transport asks of it; notify hands
 * every available chain back with its writable length. */
struct tdev {
	unsigned activated, resets, notified[VIRTIO_MAX_QUEUES];
	uint8_t cfg[TDEV_CFG_LEN];
};

static void tdev_config(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	const struct tdev *t = d->priv;
	for (uint32_t i = 0; i < len && off + i < sizeof(t->cfg); i++)
		data[i] = t->cfg[off + i];
}

static int tdev_activate(struct virtio_dev *d)
{
	((struct tdev *)d->priv)->activated++;
	return 0;
}

static void tdev_notify(struct virtio_dev *d, unsigned qi)
{
	struct tdev *t = d->priv;
	static struct vq_chain c;
	char why[VQ_ERR_MAX];
	int r;

	t->notified[qi]++;
	while ((r = vq_pop(&d->vq[qi], &c, why, sizeof(why))) > 0)
		vq_push(&d->vq[qi], &c, c.in_len);
	if (r < 0)
		virtio_fail(d, "queue %u: %s", qi, why);
	virtio_queue_done(d, qi);
}

static void tdev_reset(struct virtio_dev *d)
{
	((struct tdev *)d->priv)->resets++;
}

static const struct virtio_dev_ops tdev_ops = {
    .kind = "test",
    .device_id = 42,
    .nr_queues = 2,
    .config_read = tdev_config,
    .activate = tdev_activate,
    .notify = tdev_notify,
    .reset = tdev_reset,
};

struct fx {
	struct vf f;
	struct tdev t;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	char err[160];
	if (!x || gmem_init(&x->f.mem, VF_RAM))
		return -1;
	for (unsigned i = 0; i < TDEV_CFG_LEN; i++)
		x->t.cfg[i] = (uint8_t)(0xa0 + i);
	if (virtio_dev_init(&x->f.dev, &tdev_ops, &x->t, "virtio-test t0", TDEV_FEATURES,
			    0xd0000000, 5, -1, &x->f.mem, NULL, err, sizeof(err)))
		return -1;
	*state = x;
	return 0;
}

static int setup_rng(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	char err[160];
	if (!x || gmem_init(&x->f.mem, VF_RAM))
		return -1;
	struct virtio_impl m;
	if (vrng_create(&(struct vrng_params){NULL}, &m, err, sizeof(err)) ||
	    virtio_dev_init(&x->f.dev, m.ops, m.priv, m.name, m.features, 0xd0000000, 5, -1,
			    &x->f.mem, NULL, err, sizeof(err)))
		return -1;
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	virtio_dev_fini(&x->f.dev);
	if (x->f.dev.ops->destroy) /* virtio-rng's; the test device has nothing to free */
		x->f.dev.ops->destroy(&x->f.dev);
	gmem_free(&x->f.mem);
	free(x);
	return 0;
}

/* One writable 64-byte buffer on queue qi, served and returned. */
static void good_request(struct vf *f, unsigned qi)
{
	const struct vf_seg s = {VF_BUF, 64, true};
	uint32_t len = 0;
	assert_true(vf_submit(f, qi, &s, 1, &len));
	assert_int_equal(len, 64);
}

static void test_identity(void **state)
{
	struct vf *f = &((struct fx *)*state)->f;

	assert_int_equal(vf_rd(f, VM_MAGIC), 0x74726976); /* "virt" */
	assert_int_equal(vf_rd(f, VM_VERSION), 2);
	assert_int_equal(vf_rd(f, VM_DEVICE_ID), 42);
	assert_int_equal(vf_rd(f, VM_VENDOR_ID), 0x52424d45);
	assert_int_equal(vf_rd(f, VM_STATUS), 0);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
	assert_int_equal(vf_rd(f, VM_CONFIG_GENERATION), 0);
	/* read-only registers ignore writes */
	vf_wr(f, VM_MAGIC, 0);
	vf_wr(f, VM_DEVICE_ID, 7);
	assert_int_equal(vf_rd(f, VM_MAGIC), 0x74726976);
	assert_int_equal(vf_rd(f, VM_DEVICE_ID), 42);
}

static void test_device_features(void **state)
{
	struct vf *f = &((struct fx *)*state)->f;

	vf_wr(f, VM_DEVICE_FEATURES_SEL, 0);
	assert_int_equal(vf_rd(f, VM_DEVICE_FEATURES), 1u << 3);
	vf_wr(f, VM_DEVICE_FEATURES_SEL, 1);
	assert_int_equal(vf_rd(f, VM_DEVICE_FEATURES), (1u << 0) | (1u << 3)); /* 32, 35 */
	vf_wr(f, VM_DEVICE_FEATURES_SEL, 2);
	assert_int_equal(vf_rd(f, VM_DEVICE_FEATURES), 0);
	assert_int_equal(vf_device_features(f), TDEV_FEATURES | (1ULL << VIRTIO_F_VERSION_1));
}

static void test_features_ok(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	const uint64_t v1 = 1ULL << VIRTIO_F_VERSION_1;
	const uint32_t ad = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	/* without VERSION_1 (a legacy driver): refused */
	assert_int_equal(vf_negotiate(f, TDEV_FEATURES), ad);
	/* a feature not offered: refused */
	assert_int_equal(vf_negotiate(f, v1 | (1ULL << 4)), ad);
	assert_int_equal(vf_negotiate(f, v1 | (1ULL << 63)), ad);
	/* DRIVER_OK after a refusal does not start the device */
	vf_queue(f, 0, 8);
	vf_wr(f, VM_STATUS, ad | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(x->t.activated, 0);

	/* a subset with VERSION_1: taken */
	assert_int_equal(vf_negotiate(f, v1 | (1ULL << 35)), ad | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(f->dev.st.driver_features, v1 | (1ULL << 35));
	/* DriverFeatures is frozen once FEATURES_OK is set (§3.1.1) */
	vf_wr(f, VM_DRIVER_FEATURES_SEL, 0);
	vf_wr(f, VM_DRIVER_FEATURES, 0xffffffff);
	vf_wr(f, VM_DRIVER_FEATURES_SEL, 1);
	vf_wr(f, VM_DRIVER_FEATURES, 0);
	assert_int_equal(f->dev.st.driver_features, v1 | (1ULL << 35));
	assert_int_equal(vf_rd(f, VM_STATUS), ad | VIRTIO_STATUS_FEATURES_OK);
}

/* §3.1.1, §2.1.2: a driver that writes DRIVER_OK although FEATURES_OK was
 * refused gets nothing served: the device was never activated. */
static void test_driver_ok_without_features_ok(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	const uint32_t ad = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	assert_int_equal(vf_negotiate(f, TDEV_FEATURES), ad); /* no VERSION_1 */
	vf_queue(f, 0, 8);
	vf_wr(f, VM_STATUS, ad | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(x->t.activated, 0);
	vf_offer(f, 0, vf_chain(f, 0, &(struct vf_seg){VF_BUF, 8, true}, 1));
	vf_notify(f, 0);
	assert_int_equal(x->t.notified[0], 0);
	assert_int_equal(vf_used_pending(f, 0), 0);
}

static void test_start(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	assert_int_equal(vf_start(f), VF_STATUS_OK);
	assert_int_equal(x->t.activated, 1);
	good_request(f, 0);
	good_request(f, 1);
	assert_int_equal(x->t.notified[0], 1);
	assert_int_equal(x->t.notified[1], 1);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), VIRTIO_INT_USED);
	/* DRIVER_OK again does not activate twice */
	vf_wr(f, VM_STATUS, VF_STATUS_OK);
	assert_int_equal(x->t.activated, 1);
}

/* Buffers made available before DRIVER_OK are served at activation. */
static void test_avail_before_driver_ok(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	const struct vf_seg s = {VF_BUF, 32, true};
	uint32_t id, len;

	uint32_t st = vf_negotiate(f, vf_device_features(f));
	vf_queue(f, 0, 16);
	vf_offer(f, 0, vf_chain(f, 0, &s, 1));
	vf_notify(f, 0); /* not live yet: ignored */
	assert_int_equal(vf_used_pending(f, 0), 0);
	assert_int_equal(x->t.notified[0], 0);
	vf_wr(f, VM_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	assert_true(vf_take_used(f, 0, &id, &len));
	assert_int_equal(id, 0);
	assert_int_equal(len, 32);
}

static void test_queue_regs(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	vf_wr(f, VM_QUEUE_SEL, 0);
	assert_int_equal(vf_rd(f, VM_QUEUE_NUM_MAX), 256);
	assert_int_equal(vf_rd(f, VM_QUEUE_READY), 0);
	vf_wr(f, VM_QUEUE_SEL, 1);
	assert_int_equal(vf_rd(f, VM_QUEUE_NUM_MAX), 256);
	vf_wr(f, VM_QUEUE_SEL, 2); /* no such queue */
	assert_int_equal(vf_rd(f, VM_QUEUE_NUM_MAX), 0);
	assert_int_equal(vf_rd(f, VM_QUEUE_READY), 0);
	vf_wr(f, VM_QUEUE_NUM, 8); /* ignored, harmless */
	vf_wr(f, VM_QUEUE_READY, 1);
	assert_int_equal(vf_rd(f, VM_QUEUE_READY), 0);
	assert_false(vf_needs_reset(f));

	assert_int_equal(vf_start(f), VF_STATUS_OK);
	good_request(f, 0);
	vf_wr(f, VM_QUEUE_SEL, 0);
	assert_int_equal(vf_rd(f, VM_QUEUE_READY), 1);
	/* §4.2.2: the queue's registers are ignored while it is ready */
	vf_wr(f, VM_QUEUE_NUM, 8);
	vf_wr(f, VM_QUEUE_DESC_LOW, 0x8000);
	vf_wr(f, VM_QUEUE_DRIVER_LOW, 0x9000);
	vf_wr(f, VM_QUEUE_DEVICE_LOW, 0xa000);
	vf_wr(f, VM_QUEUE_DESC_HIGH, 1);
	assert_int_equal(f->dev.vq[0].s.num, 256);
	assert_int_equal(f->dev.vq[0].s.desc, VF_DESC);
	assert_int_equal(f->dev.vq[0].s.avail, VF_AVAIL);
	assert_int_equal(f->dev.vq[0].s.used, VF_USED);
	vf_wr(f, VM_QUEUE_READY, 1); /* again: nothing changes, cursors kept */
	assert_false(vf_needs_reset(f));
	assert_int_equal(f->dev.vq[0].s.next_avail, 1);
	good_request(f, 0);
	assert_int_equal(f->dev.vq[0].s.next_used, 2);
	/* QueueReady = 0 takes the queue down: notifications are ignored */
	vf_wr(f, VM_QUEUE_READY, 0);
	assert_int_equal(vf_rd(f, VM_QUEUE_READY), 0);
	vf_offer(f, 0, vf_chain(f, 0, &(struct vf_seg){VF_BUF, 8, true}, 1));
	vf_notify(f, 0);
	assert_int_equal(vf_used_pending(f, 0), 0);
	assert_false(vf_needs_reset(f));
}

/* QueueReady with a size or rings the queue cannot have: NEEDS_RESET and
 * the queue stays down. */
static void test_queue_ready_refused(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	static const struct {
		uint32_t num;
		uint64_t desc, avail, used;
	} bad[] = {
	    {0, VF_DESC, VF_AVAIL, VF_USED},
	    {3, VF_DESC, VF_AVAIL, VF_USED},
	    {512, VF_DESC, VF_AVAIL, VF_USED},
	    {0x10000 + 8, VF_DESC, VF_AVAIL, VF_USED}, /* wider than 16 bits */
	    {8, VF_DESC + 8, VF_AVAIL, VF_USED},       /* misaligned */
	    {8, VF_DESC, VF_AVAIL + 1, VF_USED},
	    {8, VF_DESC, VF_AVAIL, VF_USED + 2},
	    {8, VF_RAM - 64, VF_AVAIL, VF_USED}, /* runs past RAM */
	    {8, VF_DESC, VF_RAM, VF_USED},
	    {8, VF_DESC, VF_AVAIL, 1ULL << 40},
	    {8, GMEM_HOLE_START, VF_AVAIL, VF_USED},
	};

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		uint32_t st = vf_negotiate(f, vf_device_features(f));
		assert_int_equal(st & VIRTIO_STATUS_FEATURES_OK, VIRTIO_STATUS_FEATURES_OK);
		assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
		vf_queue_regs(f, 0, bad[k].num, bad[k].desc, bad[k].avail, bad[k].used);
		if (!vf_needs_reset(f))
			fail_msg("case %zu: QueueReady taken", k);
		assert_int_equal(vf_rd(f, VM_QUEUE_READY), 0);
		assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), VIRTIO_INT_CONFIG);
		/* DRIVER_OK now starts nothing */
		vf_wr(f, VM_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
		assert_int_equal(vf_rd(f, VM_STATUS),
				 st | VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET);
		assert_int_equal(x->t.activated, 0);
	}
	/* the edges that are fine: 1 entry; rings ending at the end of RAM */
	vf_negotiate(f, vf_device_features(f));
	vf_queue_regs(f, 0, 1, VF_RAM - 16, VF_RAM - 8 - 16, VF_RAM - 8 - 16 - 16);
	assert_false(vf_needs_reset(f));
	assert_int_equal(vf_rd(f, VM_QUEUE_READY), 1);
}

static void test_reset(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	assert_int_equal(vf_start(f), VF_STATUS_OK);
	good_request(f, 0);
	vf_wr(f, VM_QUEUE_SEL, 2);
	vf_wr(f, VM_DEVICE_FEATURES_SEL, 1);
	vf_wr(f, VM_STATUS, VF_STATUS_OK | VIRTIO_STATUS_FAILED);
	assert_int_not_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);

	unsigned resets = x->t.resets;
	vf_wr(f, VM_STATUS, 0);
	assert_int_equal(x->t.resets, resets + 1);
	assert_int_equal(vf_rd(f, VM_STATUS), 0);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
	for (unsigned qi = 0; qi < 2; qi++) {
		vf_wr(f, VM_QUEUE_SEL, qi);
		assert_int_equal(vf_rd(f, VM_QUEUE_READY), 0);
		assert_int_equal(vf_rd(f, VM_QUEUE_NUM_MAX), 256);
		assert_int_equal(f->dev.vq[qi].s.num, 0);
		assert_int_equal(f->dev.vq[qi].s.desc, 0);
	}
	assert_int_equal(f->dev.st.driver_features, 0);
	assert_int_equal(f->dev.st.device_features_sel, 0);
	vf_wr(f, VM_QUEUE_SEL, 0);
	/* a notification after reset reaches nothing */
	unsigned before = x->t.notified[0];
	vf_notify(f, 0);
	assert_int_equal(x->t.notified[0], before);

	/* and the device comes up again */
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	assert_int_equal(x->t.activated, 2);
	good_request(f, 0);
}

/* A notification naming no queue of the device is ignored, never fatal. */
static void test_notify_no_such_queue(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	assert_int_equal(vf_start(f), VF_STATUS_OK);
	vf_notify(f, 2);
	vf_notify(f, VIRTIO_MAX_QUEUES);
	vf_notify(f, 0xffff);
	vf_notify(f, 0xffffffff);
	assert_int_equal(x->t.notified[0] + x->t.notified[1], 0);
	assert_int_equal(vf_rd(f, VM_STATUS), VF_STATUS_OK);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
	good_request(f, 1);
}

/* §4.2.2.2: the common registers are 32-bit wide and aligned. */
static void test_access_width(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	uint8_t b[8];

	for (uint32_t len = 1; len <= 8; len *= 2) {
		if (len == 4)
			continue;
		memset(b, 0x11, sizeof(b));
		assert_int_equal(virtio_mmio_access(&f->dev, VM_MAGIC, b, len, false), 0);
		for (uint32_t i = 0; i < len; i++)
			assert_int_equal(b[i], 0xff);
		if (len < 8)
			assert_int_equal(b[len], 0x11);
	}
	/* a 4-byte read off alignment */
	uint32_t v = 0;
	virtio_mmio_access(&f->dev, VM_MAGIC + 2, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0xffffffff);

	/* writes of the wrong width change nothing */
	uint64_t st = VIRTIO_STATUS_ACKNOWLEDGE;
	virtio_mmio_access(&f->dev, VM_STATUS, (uint8_t *)&st, 8, true);
	virtio_mmio_access(&f->dev, VM_STATUS, (uint8_t *)&st, 2, true);
	virtio_mmio_access(&f->dev, VM_STATUS, (uint8_t *)&st, 1, true);
	virtio_mmio_access(&f->dev, VM_STATUS + 1, (uint8_t *)&st, 4, true);
	assert_int_equal(vf_rd(f, VM_STATUS), 0);
	assert_true(f->dev.unhandled >= 8);
	/* ...and counted in the metrics: a device without counters of its
	 * own reports the transport's alone */
	struct vf_counters c;
	vf_counters(&f->dev, &c);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.names[0], "device_needs_reset");
	assert_string_equal(c.names[1], "unhandled_accesses");
	assert_int_equal(c.values[0], 0);
	assert_int_equal(c.values[1], f->dev.unhandled);

	/* after a good start, a short write to Status does not reset */
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	uint8_t zero = 0;
	virtio_mmio_access(&f->dev, VM_STATUS, &zero, 1, true);
	assert_int_equal(vf_rd(f, VM_STATUS), VF_STATUS_OK);
	assert_int_equal(x->t.resets, 1); /* vf_start's own */
	/* nor does a 2-byte QueueNotify reach the queue */
	uint16_t q0 = 0;
	vf_offer(f, 0, vf_chain(f, 0, &(struct vf_seg){VF_BUF, 8, true}, 1));
	virtio_mmio_access(&f->dev, VM_QUEUE_NOTIFY, (uint8_t *)&q0, 2, true);
	assert_int_equal(x->t.notified[0], 0);
}

/* §4.2.2.2: the device-specific configuration is read at any width. */
static void test_config_space(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	for (uint32_t len = 1; len <= 8; len *= 2) {
		for (uint32_t off = 0; off + len <= TDEV_CFG_LEN + 8; off++) {
			uint8_t b[8];
			memset(b, 0x55, sizeof(b));
			assert_int_equal(
			    virtio_mmio_access(&f->dev, VM_CONFIG + off, b, len, false), 0);
			for (uint32_t i = 0; i < len; i++)
				assert_int_equal(b[i], off + i < TDEV_CFG_LEN
							   ? 0xa0 + off + i
							   : 0); /* past the config */
		}
	}
	/* the last bytes of the slot read as 0 */
	uint32_t v = 0x55555555;
	virtio_mmio_access(&f->dev, VIRTIO_MMIO_SIZE - 4, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0);
	/* writes are refused; the config does not change */
	uint32_t w = 0;
	virtio_mmio_access(&f->dev, VM_CONFIG, (uint8_t *)&w, 4, true);
	virtio_mmio_access(&f->dev, VM_CONFIG, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0xa3a2a1a0);
	assert_int_equal(vf_rd(f, VM_CONFIG_GENERATION), 0);
}

static void test_interrupt_ack(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	assert_int_equal(vf_start(f), VF_STATUS_OK);
	good_request(f, 0);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), VIRTIO_INT_USED);
	vf_wr(f, VM_INTERRUPT_ACK, VIRTIO_INT_CONFIG); /* not set: no change */
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), VIRTIO_INT_USED);
	vf_wr(f, VM_INTERRUPT_ACK, VIRTIO_INT_USED);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
	/* both bits, acknowledged one at a time */
	virtio_interrupt(&f->dev, VIRTIO_INT_USED | VIRTIO_INT_CONFIG);
	vf_wr(f, VM_INTERRUPT_ACK, VIRTIO_INT_USED);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), VIRTIO_INT_CONFIG);
	vf_wr(f, VM_INTERRUPT_ACK, 0xffffffff);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
	/* §2.7.7: with VIRTQ_AVAIL_F_NO_INTERRUPT the device does not interrupt */
	uint16_t flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	memcpy(vf_at(f, VF_AVAIL), &flags, 2);
	good_request(f, 0);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
}

/* A chain whose next loops: the device needs reset, the driver hears of
 * it through a configuration interrupt, and a reset brings it back. */
static void test_bad_chain(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	assert_int_equal(vf_start(f), VF_STATUS_OK);
	vf_desc(f, 0, 0, VF_BUF, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vf_desc(f, 0, 1, VF_BUF + 64, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	vf_offer(f, 0, 0);
	vf_notify(f, 0);
	assert_int_equal(vf_rd(f, VM_STATUS), VF_STATUS_OK | VIRTIO_STATUS_NEEDS_RESET);
	assert_true(vf_rd(f, VM_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);
	assert_int_equal(vf_used_pending(f, 0), 0);
	assert_true(f->dev.broken);
	assert_int_equal(vf_counter(&f->dev, "device_needs_reset"), 1);
	/* NEEDS_RESET stays through the driver's status writes */
	vf_wr(f, VM_STATUS, VF_STATUS_OK);
	assert_true(vf_needs_reset(f));
	/* nothing is served while broken */
	vf_offer(f, 0, vf_chain(f, 0, &(struct vf_seg){VF_BUF, 8, true}, 1));
	vf_notify(f, 0);
	assert_int_equal(vf_used_pending(f, 0), 0);

	vf_wr(f, VM_STATUS, 0);
	assert_int_equal(vf_rd(f, VM_STATUS), 0);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), 0);
	assert_false(f->dev.broken);
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	good_request(f, 0);
	assert_int_equal(vf_counter(&f->dev, "entropy_event_count"), 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_identity),
	    T(test_device_features),
	    T(test_features_ok),
	    T(test_driver_ok_without_features_ok),
	    T(test_start),
	    T(test_avail_before_driver_ok),
	    T(test_queue_regs),
	    T(test_queue_ready_refused),
	    T(test_reset),
	    T(test_notify_no_such_queue),
	    T(test_access_width),
	    T(test_config_space),
	    T(test_interrupt_ack),
	    cmocka_unit_test_setup_teardown(test_bad_chain, setup_rng, teardown),
	};
	return cmocka_run_group_tests_name("virtio_mmio", tests, NULL, NULL);
}
