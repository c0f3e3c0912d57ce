/* virtio-blk (virtio 1.2 §5.2).  A request is one chain: a 16-byte header
 * the driver wrote {u32 type, u32 reserved, u64 sector}, the data, and a
 * status byte the device writes last (§5.2.6). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/backend.h"
#include "base/blk_mirror.h"
#include "virtio/blk.h"
#include "virtio/limiter.h"

#define VIRTIO_BLK_ID_BYTES 20 /* §5.2.6: GET_ID's answer */

/* §5.2.3 feature bits */
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* §5.2.6 request types and status */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define BLK_HDR 16
#define BOUNCE_SIZE (1u << 20)
/* Discard / write-zeroes limits offered in config space (§5.2.4). */
#define MAX_RANGE_SECTORS (1u << 22) /* 2 GiB per segment */
#define MAX_RANGE_SEGS 16
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

/* §5.2.6: a discard / write-zeroes segment */
struct blk_range {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk_stats {
	uint64_t read_ops, write_ops, flush_ops, read_bytes, write_bytes;
	uint64_t discard_ops, discard_bytes; /* DISCARD and WRITE_ZEROES */
	uint64_t io_errors, unsupported;
};

struct virtio_blk {
	struct blk_backend be;
	char id[VIRTIO_BLK_ID_BYTES + 1];
	struct vlimit limit;
	uint8_t *bounce; /* O_DIRECT only */
	struct blk_stats stats;
	struct virtio_dev *dev;
};

static void blk_free(struct virtio_blk *b)
{
	vlimit_fini(&b->limit);
	blk_close(&b->be);
	free(b->bounce);
	free(b);
}

/* Open the file (O_DIRECT as asked).  0 or -errno with the reason in
 * err, naming the file. */
static int blk_setup(struct virtio_blk *b, const struct vblk_params *p, char *err, size_t errlen)
{
	int r = blk_open(&b->be, p->path, p->read_only, err, errlen);
	if (r || !p->direct)
		return r;
	/* On the fd blk_open() checked, not a second open of the path
	 * (which may name another file by now). */
	int fl = fcntl(b->be.fd, F_GETFL);
	if (fl < 0 || fcntl(b->be.fd, F_SETFL, fl | O_DIRECT) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot use O_DIRECT: %s", p->path, strerror(-r));
		return r;
	}
	if (posix_memalign((void **)&b->bounce, 4096, BOUNCE_SIZE)) {
		b->bounce = NULL;
		snprintf(err, errlen, "%s: no memory for the O_DIRECT buffer", p->path);
		return -ENOMEM;
	}
	return 0;
}

static uint64_t features(const struct virtio_blk *b)
{
	uint64_t f = (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_SEG_MAX);
	if (b->be.read_only)
		f |= 1ULL << VIRTIO_BLK_F_RO;
	else
		f |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	return f;
}

/* §5.2.4: capacity (le64, sectors) at 0, seg_max at 12; the discard
 * and write-zeroes limits at 36..56. */
static void config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	const struct virtio_blk *b = d->priv;
	uint8_t cfg[60] = {0};
	uint64_t sectors = b->be.capacity / BLK_SECTOR;
	uint32_t seg_max = VQ_MAX_SIZE - 2, max_sectors = MAX_RANGE_SECTORS, segs = MAX_RANGE_SEGS,
		 align = 1, unmap = 1;
	memcpy(cfg, &sectors, 8);
	memcpy(cfg + 12, &seg_max, 4);
	memcpy(cfg + 36, &max_sectors, 4); /* max_discard_sectors */
	memcpy(cfg + 40, &segs, 4);	   /* max_discard_seg */
	memcpy(cfg + 44, &align, 4);	   /* discard_sector_alignment */
	memcpy(cfg + 48, &max_sectors, 4); /* max_write_zeroes_sectors */
	memcpy(cfg + 52, &segs, 4);	   /* max_write_zeroes_seg */
	cfg[56] = (uint8_t)unmap;	   /* write_zeroes_may_unmap */
	for (uint32_t i = 0; i < len && off + i < sizeof(cfg); i++)
		data[i] = cfg[off + i];
}

/* The chain's bytes [from, from+len) of its readable (out) or writable
 * (in) part as an iovec; returns the count. */
static int chain_iov(const struct vq_chain *c, bool in, size_t from, size_t len,
		     struct iovec *iov)
{
	unsigned first = in ? c->nr_out : 0, end = first + (in ? c->nr_in : c->nr_out);
	int n = 0;
	for (unsigned i = first; i < end && len; i++) {
		size_t sl = c->seg[i].len;
		if (from >= sl) {
			from -= sl;
			continue;
		}
		size_t take = sl - from < len ? sl - from : len;
		iov[n].iov_base = c->seg[i].p + from;
		iov[n].iov_len = take;
		n++;
		len -= take;
		from = 0;
	}
	return n;
}

/* Whole vector transfer at off; 0 or -errno. */
static int vec_io(int fd, struct iovec *iov, int n, uint64_t off, bool write)
{
	while (n > 0) {
		ssize_t r = write ? pwritev(fd, iov, n, (off_t)off) : preadv(fd, iov, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO; /* the file shrank under us */
		off += (uint64_t)r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++, n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* Data transfer of len bytes between the chain (from byte `from` of its
 * in or out part) and the disk at off. */
static int transfer(struct virtio_blk *b, const struct vq_chain *c, bool write, size_t from,
		    size_t len, uint64_t off)
{
	static struct iovec iov[VQ_MAX_SIZE];
	if (!b->bounce) {
		int n = chain_iov(c, !write, from, len, iov);
		int r = vec_io(b->be.fd, iov, n, off, write);
		if (!r && write && b->be.mirror) /* vec_io consumed iov */
			blk_mirror_wrote(b->be.mirror, off, iov,
					 chain_iov(c, !write, from, len, iov));
		return r;
	}
	/* O_DIRECT: aligned chunks through the bounce buffer. */
	while (len) {
		size_t n = len < BOUNCE_SIZE ? len : BOUNCE_SIZE;
		struct iovec one = {.iov_base = b->bounce, .iov_len = n};
		if (write)
			vq_read(c, from, b->bounce, n);
		int r = vec_io(b->be.fd, &one, 1, off, write);
		if (r)
			return r;
		if (!write)
			vq_write(c, from, b->bounce, n);
		from += n, off += n, len -= n;
	}
	return 0;
}

/* DISCARD / WRITE_ZEROES: the segments after the header, each checked
 * against the disk and the limits we offered, then fallocate(2): a punched
 * hole reads back as zeroes, so both end up the same on a raw file. */
static uint8_t ranges(struct virtio_blk *b, const struct vq_chain *c, bool zeroes)
{
	uint32_t n = (c->out_len - BLK_HDR) / sizeof(struct blk_range);
	if (b->be.read_only || n == 0 || n > MAX_RANGE_SEGS ||
	    (c->out_len - BLK_HDR) % sizeof(struct blk_range))
		return VIRTIO_BLK_S_IOERR;
	for (uint32_t i = 0; i < n; i++) {
		struct blk_range r;
		vq_read(c, BLK_HDR + i * sizeof(r), &r, sizeof(r));
		uint64_t off = r.sector * BLK_SECTOR, len = (uint64_t)r.num_sectors * BLK_SECTOR;
		if (r.sector > UINT64_MAX / BLK_SECTOR || r.num_sectors > MAX_RANGE_SECTORS ||
		    (r.flags & ~(uint32_t)VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ||
		    (!zeroes && r.flags) || !blk_range_ok(&b->be, off, len, BLK_SECTOR))
			return VIRTIO_BLK_S_IOERR;
		int mode = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE;
		if (zeroes && !(r.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))
			mode = FALLOC_FL_KEEP_SIZE | FALLOC_FL_ZERO_RANGE;
		if (len && fallocate(b->be.fd, mode, (off_t)off, (off_t)len) < 0) {
			/* A file system without ZERO_RANGE: a hole is zeroes too. */
			if (errno != EOPNOTSUPP || !(mode & FALLOC_FL_ZERO_RANGE) ||
			    fallocate(b->be.fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
				      (off_t)off, (off_t)len) < 0)
				return VIRTIO_BLK_S_IOERR;
		}
		if (len && b->be.mirror)
			blk_mirror_fallocated(b->be.mirror, mode, off, len);
		b->stats.discard_bytes += len;
	}
	return VIRTIO_BLK_S_OK;
}

/* Serve one request; returns the bytes written into the chain (data and
 * status), or -EINVAL when the chain cannot be a request at all. */
static int serve(struct virtio_blk *b, const struct vq_chain *c, char *why, size_t whylen)
{
	struct blk_hdr h;
	if (c->out_len < BLK_HDR || c->in_len < 1) {
		snprintf(why, whylen, "request %u: %u readable and %u writable bytes (a header of "
				      "16 and a status byte are the least)", c->head, c->out_len,
			 c->in_len);
		return -EINVAL;
	}
	vq_read(c, 0, &h, sizeof(h));
	uint8_t status = VIRTIO_BLK_S_OK;
	uint32_t data_in = c->in_len - 1, data_out = c->out_len - BLK_HDR, written = 0;
	uint64_t off = h.sector * BLK_SECTOR;
	bool overflow = h.sector > UINT64_MAX / BLK_SECTOR;
	int r = 0;

	switch (h.type) {
	case VIRTIO_BLK_T_IN:
		if (overflow || !blk_range_ok(&b->be, off, data_in, BLK_SECTOR)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		r = transfer(b, c, false, 0, data_in, off);
		if (!r) {
			written = data_in;
			b->stats.read_ops++;
			b->stats.read_bytes += data_in;
		}
		break;
	case VIRTIO_BLK_T_OUT:
		if (b->be.read_only || overflow ||
		    !blk_range_ok(&b->be, off, data_out, BLK_SECTOR)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		r = transfer(b, c, true, BLK_HDR, data_out, off);
		if (!r) {
			b->stats.write_ops++;
			b->stats.write_bytes += data_out;
		}
		break;
	case VIRTIO_BLK_T_FLUSH:
		r = b->be.read_only ? 0 : blk_flush(&b->be);
		b->stats.flush_ops++;
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		status = ranges(b, c, h.type == VIRTIO_BLK_T_WRITE_ZEROES);
		b->stats.discard_ops++;
		break;
	case VIRTIO_BLK_T_GET_ID: {
		char id[VIRTIO_BLK_ID_BYTES] = {0};
		memcpy(id, b->id, strnlen(b->id, sizeof(id)));
		written = (uint32_t)vq_write(c, 0, id, data_in < sizeof(id) ? data_in : sizeof(id));
		break;
	}
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		b->stats.unsupported++;
	}
	if (r) {
		status = VIRTIO_BLK_S_IOERR;
		written = 0;
	}
	if (status == VIRTIO_BLK_S_IOERR)
		b->stats.io_errors++;
	vq_write(c, c->in_len - 1, &status, 1);
	return (int)written + 1;
}

/* The limiter's cost of a request: its data bytes (0 for flush, id). */
static uint64_t cost(const struct vq_chain *c)
{
	uint32_t type = 0;
	vq_read(c, 0, &type, sizeof(type));
	if (type == VIRTIO_BLK_T_IN)
		return c->in_len ? c->in_len - 1 : 0;
	if (type == VIRTIO_BLK_T_OUT)
		return c->out_len > BLK_HDR ? c->out_len - BLK_HDR : 0;
	return 0;
}

static void process(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;
	struct vq *q = &d->vq[0];
	static struct vq_chain c;
	char why[VQ_ERR_MAX + 64];
	bool done = false;

	if (vlimit_waiting(&b->limit))
		return; /* throttled: the timer comes back */
	for (;;) {
		int r = vq_pop(q, &c, why, sizeof(why));
		if (r < 0) {
			virtio_fail(d, "queue 0: %s", why);
			break;
		}
		if (r == 0)
			break;
		if (!vlimit_admit(&b->limit, cost(&c))) {
			vq_unpop(q);
			break;
		}
		int n = serve(b, &c, why, sizeof(why));
		if (n < 0) {
			virtio_fail(d, "queue 0: %s", why);
			break;
		}
		vq_push(q, &c, (uint32_t)n);
		done = true;
	}
	if (done)
		virtio_queue_done(d, 0);
}

/* The limiter's timer, made before the drop phase. */
static int realize(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;
	b->dev = d;
	return vlimit_start(&b->limit, d, 0);
}

static void notify(struct virtio_dev *d, unsigned qi)
{
	process(d);
}

static void reset(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;
	vlimit_cancel(&b->limit);
}

/* The snapshot record: the limiter (the file is re-opened by path). */
static int save(struct virtio_dev *d, void *buf, size_t max)
{
	struct virtio_blk *b = d->priv;
	return vlimit_save(&b->limit, buf, max);
}

static int restore(struct virtio_dev *d, const void *buf, size_t len)
{
	struct virtio_blk *b = d->priv;
	return vlimit_restore(&b->limit, buf, len);
}

static void destroy(struct virtio_dev *d)
{
	blk_free(d->priv);
	d->priv = NULL;
}

/* Firecracker's block metrics (names and order are the API's). */
static void counters(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque)
{
	const struct virtio_blk *b = d->priv;
	fn(opaque, "read_count", b->stats.read_ops);
	fn(opaque, "write_count", b->stats.write_ops);
	fn(opaque, "flush_count", b->stats.flush_ops);
	fn(opaque, "read_bytes", b->stats.read_bytes);
	fn(opaque, "write_bytes", b->stats.write_bytes);
	fn(opaque, "io_errors", b->stats.io_errors);
	fn(opaque, "rate_limiter_throttled_events", b->limit.throttled);
}

static int set_limits(struct virtio_dev *d, const struct rl_cfg *a, const struct rl_cfg *b)
{
	struct virtio_blk *blk = d->priv;
	if (!a)
		return -EINVAL;
	vlimit_update(&blk->limit, a);
	if (virtio_live(d))
		process(d); /* what the old limits held back */
	return 0;
}

/* Before a migration's hand-over: the writes so far reach the disk, so
 * another host on the same shared storage reads them. */
static int flush(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;
	return b->be.read_only ? 0 : blk_flush(&b->be);
}

static const struct virtio_dev_ops vblk_ops = {
    .kind = "block",
    .metrics = "block",
    .device_id = VIRTIO_ID_BLOCK,
    .nr_queues = 1,
    .config_read = config_read,
    .realize = realize,
    .notify = notify,
    .reset = reset,
    .save = save,
    .restore = restore,
    .destroy = destroy,
    .counters = counters,
    .set_limits = set_limits,
    .flush = flush,
};

struct blk_backend *vblk_backend(struct virtio_dev *d, bool *direct)
{
	if (d->ops != &vblk_ops)
		return NULL;
	struct virtio_blk *b = d->priv;
	*direct = b->bounce != NULL;
	return &b->be;
}

int vblk_create(const struct vblk_params *p, struct virtio_impl *out, char *err, size_t errlen)
{
	char why[512]; /* blk_open names the file */
	snprintf(out->name, sizeof(out->name), "virtio-block %s", p->id);
	struct virtio_blk *b = calloc(1, sizeof(*b));
	if (!b) {
		snprintf(err, errlen, "%s: out of memory", out->name);
		return -ENOMEM;
	}
	b->be.fd = -1;
	vlimit_init(&b->limit, p->rate);
	int r = blk_setup(b, p, why, sizeof(why));
	if (r) {
		snprintf(err, errlen, "%s: %s", out->name, why);
		blk_free(b);
		return r;
	}
	snprintf(b->id, sizeof(b->id), "%s", p->id);
	out->ops = &vblk_ops;
	out->priv = b;
	out->features = features(b);
	return 0;
}
