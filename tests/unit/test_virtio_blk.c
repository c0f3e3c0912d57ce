/* virtio/blk: virtio-blk (virtio 1.2 §5.2) over a temporary disk file,
 * behind the MMIO transport, driven through its registers over a fake
 * guest memory and without KVM.  Reads, writes, flush, GET_ID, discard
 * and write-zeroes checked against the file itself; every refusal (out
 * of range, bad length, read-only, unknown type) and every chain that
 * cannot be a request; vblk_create's refusals; the counters; the rate
 * limiter and its PATCH (set_limits). */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/virtio_fixture.h"
#include "virtio/blk.h"

#define DISK_SIZE (64 * 1024)
#define SECTORS (DISK_SIZE / 512)
#define HDR VF_BUF		/* 16-byte request header */
#define STATUS (VF_BUF + 0x100) /* status byte */
#define RANGES (VF_BUF + 0x200) /* discard / write-zeroes segments */
#define DATA (VF_BUF + 0x10000) /* data buffers */
#define ID "ember-disk-0"

/* §5.2.3, §5.2.6 */
#define F_SEG_MAX 2
#define F_RO 5
#define F_FLUSH 9
#define F_DISCARD 13
#define F_WRITE_ZEROES 14
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2

/* §5.2.6: a discard / write-zeroes segment */
struct range {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

struct fx {
	struct vf f;
	bool open;
	char path[64];
	int fd; /* our own view of the disk file */
	struct evloop ev;
	bool have_ev;
};

/* The disk's known content: every sector different. */
static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off / 512 * 37 + off % 251 + 1);
}

static void assert_disk(struct fx *x, uint64_t off, uint64_t len, int fill)
{
	uint8_t b[DISK_SIZE];
	assert_int_equal(pread(x->fd, b, len, (off_t)off), (ssize_t)len);
	for (uint64_t i = 0; i < len; i++) {
		int want = fill >= 0 ? fill : pattern(off + i);
		if (b[i] != want)
			fail_msg("disk byte %llu: 0x%02x, want 0x%02x",
				 (unsigned long long)(off + i), b[i], want);
	}
}

static void close_drive(struct fx *x)
{
	if (!x->open)
		return;
	virtio_dev_fini(&x->f.dev);
	x->f.dev.ops->destroy(&x->f.dev);
	x->open = false;
}

/* (Re)open the disk as a drive and bring the device up: all offered
 * features taken, queue 0 ready, DRIVER_OK. */
static int open_drive(struct fx *x, bool read_only, const char *id, const struct rl_cfg *rate)
{
	char err[256];
	struct virtio_impl m;
	close_drive(x);
	const struct vblk_params p = {
	    .id = id, .path = x->path, .read_only = read_only, .rate = rate};
	if (vblk_create(&p, &m, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	x->open = true;
	if (virtio_dev_init(&x->f.dev, m.ops, m.priv, m.name, m.features, 0xd0000000, 5, -1,
			    &x->f.mem, x->have_ev ? &x->ev : NULL, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	return vf_start(&x->f) == VF_STATUS_OK ? 0 : -1;
}

static int make_fx(void **state, bool read_only, const struct rl_cfg *rate)
{
	struct fx *x = calloc(1, sizeof(*x));
	if (!x || gmem_init(&x->f.mem, VF_RAM))
		return -1;
	snprintf(x->path, sizeof(x->path), "/tmp/ember-test-blk-XXXXXX");
	x->fd = mkstemp(x->path);
	if (x->fd < 0)
		return -1;
	static uint8_t disk[DISK_SIZE];
	for (uint64_t i = 0; i < DISK_SIZE; i++)
		disk[i] = pattern(i);
	if (pwrite(x->fd, disk, DISK_SIZE, 0) != DISK_SIZE)
		return -1;
	if (rate) {
		if (ev_init(&x->ev))
			return -1;
		x->have_ev = true;
	}
	*state = x;
	return open_drive(x, read_only, ID, rate);
}

static int setup(void **state)
{
	return make_fx(state, false, NULL);
}

static int setup_ro(void **state)
{
	return make_fx(state, true, NULL);
}

/* One request a second (ops bucket of 1, refilled in 1000 ms). */
static const struct rl_cfg one_per_second = {.ops = {.size = 1, .refill_ms = 1000}};

static int setup_limited(void **state)
{
	return make_fx(state, false, &one_per_second);
}

static int teardown(void **state)
{
	struct fx *x = *state;
	if (!x)
		return 0;
	close_drive(x);
	if (x->have_ev)
		ev_fini(&x->ev);
	if (x->fd >= 0) {
		close(x->fd);
		unlink(x->path);
	}
	gmem_free(&x->f.mem);
	free(x);
	return 0;
}

static void set_hdr(struct fx *x, uint32_t type, uint64_t sector)
{
	uint8_t *h = vf_at(&x->f, HDR);
	memset(h, 0, 16);
	memcpy(h, &type, 4);
	memcpy(h + 8, &sector, 8);
}

/* A request: header, then `n` data segments, then the status byte.
 * Returns the status the device wrote; *used its used-ring length. */
static int request(struct fx *x, uint32_t type, uint64_t sector, const struct vf_seg *data,
		   unsigned n, uint32_t *used)
{
	struct vf_seg s[8];
	assert_true(n + 2 <= 8);
	set_hdr(x, type, sector);
	s[0] = (struct vf_seg){HDR, 16, false};
	for (unsigned k = 0; k < n; k++)
		s[1 + k] = data[k];
	s[1 + n] = (struct vf_seg){STATUS, 1, true};
	*vf_at(&x->f, STATUS) = 0xee;
	uint32_t len = 0;
	assert_true(vf_submit(&x->f, 0, s, n + 2, &len));
	assert_false(vf_needs_reset(&x->f));
	if (used)
		*used = len;
	return *vf_at(&x->f, STATUS);
}

/* One data buffer of len bytes at DATA. */
static int request1(struct fx *x, uint32_t type, uint64_t sector, uint32_t len, bool write,
		    uint32_t *used)
{
	const struct vf_seg d = {DATA, len, write};
	return request(x, type, sector, &d, len ? 1 : 0, used);
}

static void test_config(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	uint64_t cap = 0;

	assert_int_equal(vf_rd(f, VM_DEVICE_ID), VIRTIO_ID_BLOCK);
	virtio_mmio_access(&f->dev, VM_CONFIG, (uint8_t *)&cap, 8, false);
	assert_int_equal(cap, SECTORS);
	assert_int_equal(vf_rd(f, VM_CONFIG), SECTORS);
	assert_int_equal(vf_rd(f, VM_CONFIG + 4), 0);
	assert_int_equal(vf_rd(f, VM_CONFIG + 12), VQ_MAX_SIZE - 2); /* seg_max */
	uint8_t b = 0xff;
	virtio_mmio_access(&f->dev, VM_CONFIG, &b, 1, false);
	assert_int_equal(b, SECTORS);

	uint64_t feat = vf_device_features(f);
	assert_true(feat & (1ULL << VIRTIO_F_VERSION_1));
	assert_true(feat & (1ULL << F_FLUSH));
	assert_true(feat & (1ULL << F_SEG_MAX));
	assert_true(feat & (1ULL << F_DISCARD));
	assert_true(feat & (1ULL << F_WRITE_ZEROES));
	assert_false(feat & (1ULL << F_RO));
}

static void test_read(void **state)
{
	struct fx *x = *state;
	uint8_t *d = vf_at(&x->f, DATA);
	uint32_t used = 0;

	memset(d, 0, 2048);
	assert_int_equal(request1(x, T_IN, 3, 1024, true, &used), S_OK);
	assert_int_equal(used, 1024 + 1);
	for (unsigned i = 0; i < 1024; i++)
		assert_int_equal(d[i], pattern(3 * 512 + i));
	assert_int_equal(d[1024], 0);

	/* the data over three buffers, the header over two: one request */
	memset(d, 0, 0x3000);
	set_hdr(x, T_IN, SECTORS - 2);
	const struct vf_seg s[] = {
	    {HDR, 8, false},
	    {HDR + 8, 8, false},
	    {DATA, 100, true},
	    {DATA + 0x1000, 412, true},
	    {DATA + 0x2000, 512, true},
	    {STATUS, 1, true},
	};
	assert_true(vf_submit(&x->f, 0, s, 6, &used));
	assert_int_equal(*vf_at(&x->f, STATUS), S_OK);
	assert_int_equal(used, 1025);
	const uint64_t off = (SECTORS - 2) * 512ULL;
	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(d[i], pattern(off + i));
	for (unsigned i = 0; i < 412; i++)
		assert_int_equal(d[0x1000 + i], pattern(off + 100 + i));
	for (unsigned i = 0; i < 512; i++)
		assert_int_equal(d[0x2000 + i], pattern(off + 512 + i));
	assert_int_equal(vf_counter(&x->f.dev, "read_count"), 2);
}

static void test_write_read(void **state)
{
	struct fx *x = *state;
	uint8_t *d = vf_at(&x->f, DATA);
	uint32_t used = 0;

	for (unsigned i = 0; i < 1024; i++)
		d[i] = (uint8_t)(i * 3 + 7);
	assert_int_equal(request1(x, T_OUT, 5, 1024, false, &used), S_OK);
	assert_int_equal(used, 1); /* the status byte only */
	uint8_t disk[1024];
	assert_int_equal(pread(x->fd, disk, 1024, 5 * 512), 1024);
	assert_memory_equal(disk, d, 1024);
	assert_disk(x, 4 * 512, 512, -1); /* neighbours untouched */
	assert_disk(x, 7 * 512, 512, -1);

	memset(d + 0x4000, 0, 1024);
	const struct vf_seg in = {DATA + 0x4000, 1024, true};
	assert_int_equal(request(x, T_IN, 5, &in, 1, &used), S_OK);
	assert_int_equal(used, 1025);
	assert_memory_equal(d + 0x4000, d, 1024);
	assert_int_equal(vf_counter(&x->f.dev, "write_count"), 1);
	assert_int_equal(vf_counter(&x->f.dev, "write_bytes"), 1024);
}

static void test_flush(void **state)
{
	struct fx *x = *state;
	uint32_t used = 0;

	assert_int_equal(request1(x, T_FLUSH, 0, 0, false, &used), S_OK);
	assert_int_equal(used, 1);
	assert_int_equal(vf_counter(&x->f.dev, "flush_count"), 1);
}

/* §5.2.6: GET_ID answers 20 bytes, NUL-terminated unless exactly 20. */
static void test_get_id(void **state)
{
	struct fx *x = *state;
	uint8_t *d = vf_at(&x->f, DATA);
	uint32_t used = 0;

	memset(d, 0xee, 64);
	assert_int_equal(request1(x, T_GET_ID, 0, 20, true, &used), S_OK);
	assert_int_equal(used, 21);
	assert_string_equal((char *)d, ID);
	for (unsigned i = sizeof(ID) - 1; i < 20; i++)
		assert_int_equal(d[i], 0);
	/* a larger buffer gets the 20 bytes only */
	memset(d, 0xee, 64);
	assert_int_equal(request1(x, T_GET_ID, 0, 512, true, &used), S_OK);
	assert_int_equal(used, 21);
	assert_string_equal((char *)d, ID);
	assert_int_equal(d[20], 0xee);

	/* exactly 20 characters: no NUL */
	assert_int_equal(open_drive(x, false, "0123456789abcdefghij", NULL), 0);
	memset(d, 0xee, 64);
	assert_int_equal(request1(x, T_GET_ID, 0, 64, true, &used), S_OK);
	assert_int_equal(used, 21);
	assert_memory_equal(d, "0123456789abcdefghij", 20);
	assert_int_equal(d[20], 0xee);
	/* longer: cut to 20 */
	assert_int_equal(open_drive(x, false, "0123456789ABCDEFGHIJKLMN", NULL), 0);
	memset(d, 0xee, 64);
	assert_int_equal(request1(x, T_GET_ID, 0, 64, true, &used), S_OK);
	assert_int_equal(used, 21);
	assert_memory_equal(d, "0123456789ABCDEFGHIJ", 20);
	assert_int_equal(d[20], 0xee);
}

static void test_unsupported(void **state)
{
	struct fx *x = *state;
	uint32_t used = 0;

	assert_int_equal(request1(x, 99, 0, 512, true, &used), S_UNSUPP);
	assert_int_equal(used, 1);
	assert_int_equal(request1(x, 2 /* legacy SCSI */, 0, 0, false, &used), S_UNSUPP);
	assert_int_equal(vf_counter(&x->f.dev, "io_errors"), 0); /* not an I/O error */
}

static void test_out_of_range(void **state)
{
	struct fx *x = *state;
	uint8_t *d = vf_at(&x->f, DATA);
	uint32_t used = 0;
	static const struct {
		uint64_t sector;
		uint32_t len;
	} bad[] = {
	    {SECTORS - 1, 1024}, /* runs past the end */
	    {SECTORS, 512},
	    {1ULL << 40, 512},
	    {UINT64_MAX / 512 + 1, 512}, /* sector * 512 overflows */
	    {UINT64_MAX, 512},
	};

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		memset(d, 0xee, 2048);
		assert_int_equal(request1(x, T_IN, bad[k].sector, bad[k].len, true, &used),
				 S_IOERR);
		assert_int_equal(used, 1);
		for (unsigned i = 0; i < 2048; i++)
			if (d[i] != 0xee)
				fail_msg("case %zu: data byte %u written", k, i);
		for (unsigned i = 0; i < bad[k].len; i++)
			d[i] = 0x77;
		assert_int_equal(request1(x, T_OUT, bad[k].sector, bad[k].len, false, &used),
				 S_IOERR);
		assert_int_equal(used, 1);
	}
	assert_disk(x, 0, DISK_SIZE, -1);
	/* the very last sector is fine */
	assert_int_equal(request1(x, T_IN, SECTORS - 1, 512, true, &used), S_OK);
	assert_int_equal(d[511], pattern(DISK_SIZE - 1));
}

static void test_bad_length(void **state)
{
	struct fx *x = *state;
	uint8_t *d = vf_at(&x->f, DATA);
	uint32_t used = 0;

	memset(d, 0xee, 1024);
	assert_int_equal(request1(x, T_IN, 0, 100, true, &used), S_IOERR);
	assert_int_equal(used, 1);
	assert_int_equal(d[0], 0xee);
	assert_int_equal(request1(x, T_IN, 0, 513, true, &used), S_IOERR);
	memset(d, 0x77, 1024);
	assert_int_equal(request1(x, T_OUT, 0, 700, false, &used), S_IOERR);
	assert_int_equal(used, 1);
	assert_disk(x, 0, 1024, -1);
	assert_int_equal(vf_counter(&x->f.dev, "io_errors"), 3);
}

static void test_read_only(void **state)
{
	struct fx *x = *state;
	uint8_t *d = vf_at(&x->f, DATA);
	uint32_t used = 0;

	uint64_t feat = vf_device_features(&x->f);
	assert_true(feat & (1ULL << F_RO));
	assert_false(feat & (1ULL << F_DISCARD));
	assert_false(feat & (1ULL << F_WRITE_ZEROES));

	memset(d, 0x77, 1024);
	assert_int_equal(request1(x, T_OUT, 2, 1024, false, &used), S_IOERR);
	assert_int_equal(used, 1);
	struct range r = {.sector = 2, .num_sectors = 2};
	memcpy(vf_at(&x->f, RANGES), &r, sizeof(r));
	const struct vf_seg seg = {RANGES, sizeof(r), false};
	assert_int_equal(request(x, T_DISCARD, 0, &seg, 1, &used), S_IOERR);
	assert_int_equal(request(x, T_WRITE_ZEROES, 0, &seg, 1, &used), S_IOERR);
	assert_disk(x, 0, DISK_SIZE, -1);
	/* reads and flushes still work */
	assert_int_equal(request1(x, T_IN, 2, 512, true, &used), S_OK);
	assert_int_equal(d[0], pattern(2 * 512));
	assert_int_equal(request1(x, T_FLUSH, 0, 0, false, &used), S_OK);
}

/* A DISCARD or WRITE_ZEROES request of n segments (bytes: another
 * length for them). */
static int ranges(struct fx *x, uint32_t type, const struct range *r, unsigned n, uint32_t bytes)
{
	memcpy(vf_at(&x->f, RANGES), r, n * sizeof(*r));
	const struct vf_seg seg = {RANGES, bytes ? bytes : n * (uint32_t)sizeof(*r), false};
	uint32_t used = 0;
	int st = request(x, type, 0, &seg, 1, &used);
	assert_int_equal(used, 1);
	return st;
}

static void test_discard_write_zeroes(void **state)
{
	struct fx *x = *state;

	struct range d[] = {{.sector = 4, .num_sectors = 2}, {.sector = 20, .num_sectors = 1}};
	assert_int_equal(ranges(x, T_DISCARD, d, 2, 0), S_OK);
	assert_disk(x, 3 * 512, 512, -1);
	assert_disk(x, 4 * 512, 1024, 0);
	assert_disk(x, 6 * 512, 14 * 512, -1);
	assert_disk(x, 20 * 512, 512, 0);
	assert_disk(x, 21 * 512, 512, -1);

	struct range z = {.sector = 10, .num_sectors = 1};
	assert_int_equal(ranges(x, T_WRITE_ZEROES, &z, 1, 0), S_OK);
	assert_disk(x, 10 * 512, 512, 0);
	z = (struct range){.sector = 12, .num_sectors = 3, .flags = 1 /* UNMAP */};
	assert_int_equal(ranges(x, T_WRITE_ZEROES, &z, 1, 0), S_OK);
	assert_disk(x, 11 * 512, 512, -1);
	assert_disk(x, 12 * 512, 3 * 512, 0);
	assert_disk(x, 15 * 512, 512, -1);
	struct stat st;
	assert_int_equal(fstat(x->fd, &st), 0);
	assert_int_equal(st.st_size, DISK_SIZE); /* the size is kept */

	/* refusals: each leaves the disk as it is */
	uint8_t before[DISK_SIZE];
	assert_int_equal(pread(x->fd, before, DISK_SIZE, 0), DISK_SIZE);
	static const struct {
		uint32_t type;
		struct range r;
	} bad[] = {
	    {T_DISCARD, {.sector = SECTORS - 1, .num_sectors = 2}},
	    {T_DISCARD, {.sector = SECTORS, .num_sectors = 1}},
	    {T_DISCARD, {.sector = UINT64_MAX / 512 + 1, .num_sectors = 1}},
	    {T_DISCARD, {.sector = 1, .num_sectors = 1, .flags = 1}}, /* UNMAP: zeroes only */
	    {T_WRITE_ZEROES, {.sector = 1, .num_sectors = 1, .flags = 2}},
	    {T_WRITE_ZEROES, {.sector = 1, .num_sectors = 1, .flags = 0x80000000}},
	    {T_WRITE_ZEROES, {.sector = 1, .num_sectors = (1u << 22) + 1}},
	    {T_WRITE_ZEROES, {.sector = 1, .num_sectors = UINT32_MAX}},
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
		if (ranges(x, bad[k].type, &bad[k].r, 1, 0) != S_IOERR)
			fail_msg("case %zu taken", k);
	/* no segment, a partial segment, more segments than offered (16) */
	struct range many[17];
	for (unsigned i = 0; i < 17; i++)
		many[i] = (struct range){.sector = i, .num_sectors = 1};
	assert_int_equal(ranges(x, T_DISCARD, many, 1, 20), S_IOERR);
	assert_int_equal(ranges(x, T_DISCARD, many, 17, 0), S_IOERR);
	set_hdr(x, T_DISCARD, 0);
	uint32_t used = 0;
	assert_int_equal(request1(x, T_DISCARD, 0, 0, false, &used), S_IOERR);
	uint8_t after[DISK_SIZE];
	assert_int_equal(pread(x->fd, after, DISK_SIZE, 0), DISK_SIZE);
	assert_memory_equal(before, after, DISK_SIZE);
	/* 16 segments are fine */
	assert_int_equal(ranges(x, T_DISCARD, many, 16, 0), S_OK);
	assert_disk(x, 0, 16 * 512, 0);
}

/* Chains that cannot be a request: the device needs reset. */
static void test_bad_chains(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;

	/* a header and no status byte */
	set_hdr(x, T_IN, 0);
	assert_false(vf_submit(f, 0, &(struct vf_seg){HDR, 16, false}, 1, NULL));
	assert_true(vf_needs_reset(f));
	assert_true(vf_rd(f, VM_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);

	/* the header in a device-writable buffer */
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	const struct vf_seg w[] = {{HDR, 16, true}, {DATA, 512, true}, {STATUS, 1, true}};
	assert_false(vf_submit(f, 0, w, 3, NULL));
	assert_true(vf_needs_reset(f));

	/* a header cut short */
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	const struct vf_seg s[] = {{HDR, 8, false}, {STATUS, 1, true}};
	assert_false(vf_submit(f, 0, s, 2, NULL));
	assert_true(vf_needs_reset(f));
	assert_disk(x, 0, DISK_SIZE, -1);

	/* after a reset, a good request */
	assert_int_equal(vf_start(f), VF_STATUS_OK);
	uint32_t used = 0;
	assert_int_equal(request1(x, T_IN, 1, 512, true, &used), S_OK);
	assert_int_equal(used, 513);
}

/* vblk_create with p's path, the other parameters fixed. */
static int create(const char *path, bool read_only, char *err, size_t errlen)
{
	struct virtio_impl m;
	const struct vblk_params p = {.id = "x", .path = path, .read_only = read_only};
	return vblk_create(&p, &m, err, errlen);
}

static void test_open_refusals(void **state)
{
	struct fx *x = *state;
	char err[256], path[64];

	/* a size that is not a multiple of 512 */
	snprintf(path, sizeof(path), "/tmp/ember-test-blk-odd-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1000), 0);
	err[0] = '\0';
	assert_int_equal(create(path, false, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "virtio-block x: "));
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "1000"));
	/* nor empty */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(create(path, true, err, sizeof(err)), -EINVAL);
	close(fd);
	unlink(path);

	/* a missing file */
	err[0] = '\0';
	assert_int_equal(create(path, false, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));

	/* a directory, read-write and read-only */
	err[0] = '\0';
	assert_true(create("/tmp", false, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/tmp"));
	err[0] = '\0';
	assert_int_equal(create("/tmp", true, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "/tmp"));
	(void)x;
}

/* The counters the metrics report, Firecracker's names in the API's
 * order, then the transport's. */
static void test_counters(void **state)
{
	struct fx *x = *state;
	static const char *const want[] = {
	    "read_count",
	    "write_count",
	    "flush_count",
	    "read_bytes",
	    "write_bytes",
	    "io_errors",
	    "rate_limiter_throttled_events",
	    "device_needs_reset",
	    "unhandled_accesses",
	};
	uint32_t used = 0;
	struct vf_counters c;

	assert_int_equal(request1(x, T_IN, 0, 1024, true, &used), S_OK);
	vf_counters(&x->f.dev, &c);
	assert_int_equal(c.n, sizeof(want) / sizeof(want[0]));
	for (unsigned i = 0; i < c.n; i++)
		assert_string_equal(c.names[i], want[i]);
	assert_int_equal(c.values[0], 1);
	assert_int_equal(c.values[3], 1024);
}

static bool served_or_late;

static void deadline(struct ev_timer *t)
{
	served_or_late = true;
}

static bool stop_when_done(void *opaque)
{
	struct fx *x = opaque;
	return served_or_late || vf_used_pending(&x->f, 0);
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* The second request of a one-per-second drive is held until the
 * limiter's timer on the loop brings it back.  (Without a loop, ev NULL,
 * the limiter cannot make its timer: see the report.) */
static void test_rate_limit(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	uint32_t used = 0;

	assert_int_equal(request1(x, T_IN, 0, 512, true, &used), S_OK);
	uint64_t t0 = now_ms();
	set_hdr(x, T_IN, 1);
	const struct vf_seg s[] = {{HDR, 16, false}, {DATA, 512, true}, {STATUS, 1, true}};
	vf_offer(f, 0, vf_chain(f, 0, s, 3));
	vf_notify(f, 0);
	assert_int_equal(vf_used_pending(f, 0), 0); /* held */
	assert_int_equal(vf_counter(&f->dev, "rate_limiter_throttled_events"), 1);
	vf_notify(f, 0); /* a second notification changes nothing */
	assert_int_equal(vf_used_pending(f, 0), 0);
	assert_int_equal(vf_counter(&f->dev, "rate_limiter_throttled_events"), 1);
	assert_false(vf_needs_reset(f));

	struct ev_timer guard;
	served_or_late = false;
	assert_int_equal(ev_timer_init(&x->ev, &guard, deadline, NULL), 0);
	assert_int_equal(ev_timer_arm(&guard, 5000000000ULL), 0);
	assert_int_equal(ev_run(&x->ev, stop_when_done, x), 0);
	ev_timer_fini(&x->ev, &guard);
	uint64_t waited = now_ms() - t0;

	uint32_t id, len;
	assert_true(vf_take_used(f, 0, &id, &len));
	assert_int_equal(len, 513);
	assert_int_equal(*vf_at(f, STATUS), S_OK);
	/* Held for the refill (a lower bound only: a slow host is no
	 * failure; the 5 s guard catches a request never served). */
	if (waited < 500)
		fail_msg("served after %llu ms, want about 1000", (unsigned long long)waited);
	assert_int_equal(vf_counter(&x->f.dev, "read_count"), 2);
}

/* A reset while a request is held drops it with the rings; the device
 * comes back and is still limited. */
static void test_rate_limit_reset(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	uint32_t used = 0;

	assert_int_equal(request1(x, T_IN, 0, 512, true, &used), S_OK);
	set_hdr(x, T_IN, 1);
	const struct vf_seg s[] = {{HDR, 16, false}, {DATA, 512, true}, {STATUS, 1, true}};
	vf_offer(f, 0, vf_chain(f, 0, s, 3));
	vf_notify(f, 0);
	assert_int_equal(vf_used_pending(f, 0), 0);
	/* the retry timer is armed: another notification is not weighed */
	vf_notify(f, 0);
	assert_int_equal(vf_counter(&f->dev, "rate_limiter_throttled_events"), 1);

	assert_int_equal(vf_start(f), VF_STATUS_OK); /* resets first */
	vf_offer(f, 0, vf_chain(f, 0, s, 3));
	vf_notify(f, 0);
	/* the reset disarmed it: weighed again, and held (the bucket is
	 * still empty) */
	assert_int_equal(vf_counter(&f->dev, "rate_limiter_throttled_events"), 2);
	assert_int_equal(vf_used_pending(f, 0), 0);
	served_or_late = false;
	struct ev_timer guard;
	assert_int_equal(ev_timer_init(&x->ev, &guard, deadline, NULL), 0);
	assert_int_equal(ev_timer_arm(&guard, 5000000000ULL), 0);
	assert_int_equal(ev_run(&x->ev, stop_when_done, x), 0);
	ev_timer_fini(&x->ev, &guard);
	assert_false(served_or_late);
	assert_int_equal(vf_used_pending(f, 0), 1);
}

/* The API's PATCH: lifting the limit serves the held request at once,
 * without waiting for the retry timer. */
static void test_set_limits(void **state)
{
	struct fx *x = *state;
	struct vf *f = &x->f;
	uint32_t used = 0;

	assert_int_equal(request1(x, T_IN, 0, 512, true, &used), S_OK);
	set_hdr(x, T_IN, 1);
	const struct vf_seg s[] = {{HDR, 16, false}, {DATA, 512, true}, {STATUS, 1, true}};
	vf_offer(f, 0, vf_chain(f, 0, s, 3));
	vf_notify(f, 0);
	assert_int_equal(vf_used_pending(f, 0), 0); /* held */

	assert_int_equal(f->dev.ops->set_limits(&f->dev, NULL, NULL), -EINVAL);
	const struct rl_cfg none = {{0, 0, 0}, {0, 0, 0}};
	assert_int_equal(f->dev.ops->set_limits(&f->dev, &none, NULL), 0);
	assert_int_equal(vf_used_pending(f, 0), 1);
	assert_int_equal(*vf_at(f, STATUS), S_OK);
	assert_int_equal(vf_counter(&f->dev, "read_count"), 2);
	assert_int_equal(vf_counter(&f->dev, "rate_limiter_throttled_events"), 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_config),
	    T(test_read),
	    T(test_write_read),
	    T(test_flush),
	    T(test_get_id),
	    T(test_unsupported),
	    T(test_out_of_range),
	    T(test_bad_length),
	    cmocka_unit_test_setup_teardown(test_read_only, setup_ro, teardown),
	    T(test_discard_write_zeroes),
	    T(test_bad_chains),
	    T(test_open_refusals),
	    T(test_counters),
	    cmocka_unit_test_setup_teardown(test_rate_limit, setup_limited, teardown),
	    cmocka_unit_test_setup_teardown(test_rate_limit_reset, setup_limited, teardown),
	    cmocka_unit_test_setup_teardown(test_set_limits, setup_limited, teardown),
	};
	return cmocka_run_group_tests_name("virtio_blk", tests, NULL, NULL);
}
