/* virtio/rng: virtio-rng (virtio 1.2 §5.4) behind the MMIO transport,
 * driven through its registers over a fake guest memory, without KVM. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tests/unit/virtio_fixture.h"
#include "virtio/rng.h"

struct fx {
	struct vf f;
};

static int setup(void **state)
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
	if (vf_start(&x->f) != VF_STATUS_OK)
		return -1;
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	virtio_dev_fini(&x->f.dev);
	x->f.dev.ops->destroy(&x->f.dev);
	gmem_free(&x->f.mem);
	free(x);
	return 0;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static void test_identity(void **state)
{
	struct fx *x = *state;

	assert_int_equal(vf_rd(&x->f, VM_DEVICE_ID), VIRTIO_ID_RNG);
	assert_int_equal(vf_device_features(&x->f), 1ULL << VIRTIO_F_VERSION_1);
	uint64_t v = 0x5555;
	virtio_mmio_access(&x->f.dev, VM_CONFIG, (uint8_t *)&v, 8, false);
	assert_int_equal(v, 0); /* no config space */
}

static void test_fill(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	uint8_t *a = vf_at(f, VF_BUF), *b = vf_at(f, VF_BUF + 0x1000);
	uint32_t len = 0;

	assert_true(vf_submit(f, 0, &(struct vf_seg){VF_BUF, 64, true}, 1, &len));
	assert_int_equal(len, 64);
	assert_false(all_zero(a, 64));
	assert_true(all_zero(a + 64, 64)); /* not past the buffer */
	assert_true(vf_submit(f, 0, &(struct vf_seg){VF_BUF + 0x1000, 64, true}, 1, &len));
	assert_int_equal(len, 64);
	assert_memory_not_equal(a, b, 64);
	assert_int_equal(vf_rd(f, VM_INTERRUPT_STATUS), VIRTIO_INT_USED);

	/* a chain of several buffers, one larger than a getrandom chunk */
	const struct vf_seg s[] = {
	    {VF_BUF + 0x2000, 3, true},
	    {VF_BUF + 0x3000, 10000, true},
	    {VF_BUF + 0x6000, 1, true},
	};
	assert_true(vf_submit(f, 0, s, 3, &len));
	assert_int_equal(len, 10004);
	assert_false(all_zero(vf_at(f, VF_BUF + 0x3000 + 9000), 1000));
	assert_int_equal(vf_counter(&f->dev, "entropy_event_count"), 3);
	assert_int_equal(vf_counter(&f->dev, "entropy_bytes"), 64 + 64 + 10004);
	assert_false(vf_needs_reset(f));
}

/* §5.4.6: every buffer is device-writable; a readable one breaks the
 * device. */
static void test_readable_buffer(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	const struct vf_seg s[] = {{VF_BUF, 16, false}, {VF_BUF + 16, 64, true}};

	memset(vf_at(f, VF_BUF), 0, 80);
	assert_false(vf_submit(f, 0, s, 2, NULL));
	assert_true(vf_needs_reset(f));
	assert_true(vf_rd(f, VM_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);
	assert_true(all_zero(vf_at(f, VF_BUF), 80));
	assert_int_equal(vf_counter(&f->dev, "entropy_event_count"), 0);

	/* a reset brings it back */
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	assert_true(vf_submit(f, 0, &(struct vf_seg){VF_BUF, 64, true}, 1, NULL));
	assert_false(vf_needs_reset(f));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_identity),
	    T(test_fill),
	    T(test_readable_buffer),
	};
	return cmocka_run_group_tests_name("virtio_rng", tests, NULL, NULL);
}
