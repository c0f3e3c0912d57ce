/* Disks copied with the VM over the migration stream (docs/
 * storage-migration.md, "Between hosts"): the source sends each disk's
 * data extents before the memory rounds, with a tracker (base/blk_mirror.h
 * in tracking mode, the same hook drive moves mirror through) marking
 * every block the guest writes meanwhile; the dirty blocks go between
 * the memory rounds, the last ones with the VM frozen, then DSKE.  The
 * target writes each extent at its offset into a destination that starts
 * as one hole, and syncs it at DSKE.  Until the hand-over the source's
 * file is the only one the VM uses: a failure anywhere leaves it whole. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/backend.h"
#include "monitor/drive_move.h"
#include "monitor/migrate/migrate.h"
#include "monitor/vm.h"

#define RUN SNAP_MIG_DISK_RUN_MAX
#define WRITEBACK_LAG (32ull << 20)

/* ---- the source ---- */

static bool wanted(const struct mig_params *p, const struct cfg_block *b)
{
	if (p->copy_all) /* read-only drives only when named */
		return !b->read_only;
	for (unsigned i = 0; i < p->nr_copy; i++)
		if (!strcmp(p->copy[i], b->name))
			return true;
	return false;
}

int mig_disk_attach(struct mig *m, struct vm *vm)
{
	const struct vm_config *c = vm->cfg;
	char why[256];
	m->nr_disks = 0;
	atomic_store(&m->disk_total, 0);
	atomic_store(&m->disk_sent, 0);
	for (unsigned i = 0; i < m->p.nr_copy; i++) { /* every name a drive */
		unsigned k = 0;
		while (k < c->nr_blocks && strcmp(c->blocks[k].name, m->p.copy[i]))
			k++;
		if (k == c->nr_blocks) {
			snprintf(m->disk_err, sizeof(m->disk_err),
				 "copy_storage: drive \"%s\": no such drive", m->p.copy[i]);
			return -ENOENT;
		}
	}
	for (unsigned k = 0; k < c->nr_blocks; k++) {
		if (!wanted(&m->p, &c->blocks[k]))
			continue;
		unsigned index;
		bool hvt;
		struct mig_disk *d = &m->disks[m->nr_disks];
		struct blk_backend *be =
		    dmove_backend(vm, c, c->blocks[k].name, &index, &hvt, why, sizeof(why));
		int r = be ? 0 : -EINVAL;
		if (!r && be->mirror)
			r = -EBUSY,
			snprintf(why, sizeof(why), "drive \"%s\": a drive move is running on it",
				 c->blocks[k].name);
		if (!r && (r = blk_mirror_init_track(&d->track, be->fd, be->capacity)))
			snprintf(why, sizeof(why), "drive \"%s\": out of memory for its bitmap",
				 c->blocks[k].name);
		if (r) {
			snprintf(m->disk_err, sizeof(m->disk_err), "copy_storage: %s", why);
			mig_disk_detach(m);
			return r;
		}
		snprintf(d->id, sizeof(d->id), "%s", c->blocks[k].name);
		d->size = be->capacity;
		d->data_bytes = 0;
		d->be = be;
		m->nr_disks++;
		atomic_fetch_add(&m->disk_total, be->capacity);
		/* From here each write below the watermark marks its blocks
		 * (an hvt vCPU's too: the backend loads the pointer after its
		 * pwrite, so a write that misses it landed before any copy). */
		__atomic_store_n(&be->mirror, &d->track, __ATOMIC_RELEASE);
	}
	return 0;
}

void mig_disk_detach(struct mig *m)
{
	for (unsigned i = 0; i < m->nr_disks; i++) {
		struct mig_disk *d = &m->disks[i];
		if (!d->be)
			continue;
		__atomic_store_n(&d->be->mirror, NULL, __ATOMIC_RELEASE);
		blk_mirror_stop(&d->track); /* a writer still holding it does nothing */
		d->be = NULL;
	}
}

static int track_error(struct mig_disk *d, int e, const struct mig_disk_io *io)
{
	char why[BLK_MIRROR_ERR_MAX];
	(void)blk_mirror_error(&d->track, why, sizeof(why));
	snprintf(io->err, io->errlen, "drive \"%s\": %s", d->id, why[0] ? why : strerror(-e));
	return e;
}

/* One span read from disk n: DSKD (or DSKZ for zeroes when zeros). */
static int put_span(struct mig *m, const struct mig_disk_io *io, unsigned n, struct blk_span sp,
		    const uint8_t *buf, bool zero, bool zeros)
{
	int r = 0;
	if (!zero)
		r = io->put(io->x, SNAP_MIG_DSKD, SNAP_MIG_DISK_AT(n, sp.off), sp.len, buf,
			    (uint32_t)sp.len);
	else if (zeros)
		r = io->put(io->x, SNAP_MIG_DSKZ, SNAP_MIG_DISK_AT(n, sp.off), sp.len, NULL, 0);
	if (!r && !zero)
		m->disks[n].data_bytes += sp.len;
	return r;
}

int mig_disk_send_bulk(struct mig *m, const struct mig_disk_io *io)
{
	uint8_t *buf = m->nr_disks ? malloc(RUN) : NULL;
	int r = m->nr_disks && !buf ? -ENOMEM : 0;
	if (r)
		snprintf(io->err, io->errlen, "out of memory for the disks' copy");
	for (unsigned n = 0; !r && n < m->nr_disks; n++) {
		struct mig_disk *d = &m->disks[n];
		r = io->put(io->x, SNAP_MIG_DSKB, n, d->size, d->id, (uint32_t)strlen(d->id));
		for (bool done = false; !r && !done;) {
			struct blk_span sp;
			bool zero;
			uint64_t at = d->track.copied;
			if ((r = io->check(io->x)))
				break;
			if ((r = blk_mirror_read_step(&d->track, buf, RUN, &sp, &zero, &done))) {
				r = track_error(d, r, io);
				break;
			}
			/* the target's file is one hole: zeroes need nothing */
			if (sp.len)
				r = put_span(m, io, n, sp, buf, zero, false);
			atomic_fetch_add(&m->disk_sent, d->track.copied - at);
		}
	}
	free(buf);
	return r;
}

uint64_t mig_disk_dirty(struct mig *m)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < m->nr_disks; i++)
		n += blk_mirror_dirty_bytes(&m->disks[i].track);
	atomic_store(&m->disk_remaining, n);
	return n;
}

int mig_disk_send_dirty(struct mig *m, const struct mig_disk_io *io, bool final)
{
	if (!m->nr_disks)
		return 0;
	uint8_t *buf = malloc(RUN);
	int r = buf ? 0 : -ENOMEM;
	if (r)
		snprintf(io->err, io->errlen, "out of memory for the disks' copy");
	for (unsigned n = 0; !r && n < m->nr_disks; n++) {
		struct mig_disk *d = &m->disks[n];
		/* Not final: what was dirty now, so a guest writing faster
		 * than the stream cannot hold the round here forever. */
		uint64_t budget = final ? UINT64_MAX : blk_mirror_dirty_bytes(&d->track);
		while (!r && budget) {
			struct blk_span sp;
			bool zero;
			if (!final && (r = io->check(io->x)))
				break;
			if ((r = blk_mirror_take_dirty(&d->track, buf, RUN, &sp, &zero))) {
				r = track_error(d, r, io);
				break;
			}
			if (!sp.len)
				break;
			r = put_span(m, io, n, sp, buf, zero, true);
			budget = budget > sp.len ? budget - sp.len : 0;
		}
		if (!r && final)
			r = io->put(io->x, SNAP_MIG_DSKE, n, d->data_bytes, NULL, 0);
	}
	free(buf);
	(void)mig_disk_dirty(m);
	return r;
}

/* ---- the target ---- */

static int refuse(char *err, size_t errlen, const struct snap_mig_rec *rec, const char *what)
{
	char n[12];
	snprintf(err, errlen,
		 "stream: byte %" PRIu64 ": record %s (a 0x%" PRIx64 ", b 0x%" PRIx64 "): %s",
		 rec->off, snap_mig_name(rec->type, n), rec->a, rec->b, what);
	return -EINVAL;
}

/* DSKB: the destination of disk n. */
static int begin(struct mig *m, struct snap_stream *s, const struct snap_mig_rec *rec, char *err,
		 size_t errlen)
{
	char id[SNAP_MIG_DISK_ID_MAX + 1];
	int r = snap_mig_get_body(s, rec, id, err, errlen);
	if (r)
		return r;
	id[rec->len] = '\0';
	if (rec->a != m->nr_disks)
		return refuse(err, errlen, rec, "disks must be numbered in order from 0");
	for (unsigned i = 0; i < m->nr_disks; i++)
		if (!strcmp(m->disks[i].id, id))
			return refuse(err, errlen, rec, "the same drive named twice");
	struct mig_disk *d = &m->disks[m->nr_disks];
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->size = rec->b;
	d->data_bytes = 0;
	d->ended = false;
	d->fd = -1;
	r = m->tops->disk(m->opaque, d->id, d->size, &d->fd, d->path, sizeof(d->path), err, errlen);
	if (r)
		return r;
	m->nr_disks++;
	atomic_fetch_add(&m->disk_total, d->size);
	return 0;
}

/* The run [off, off+len) of disk n's record, inside it. */
static struct mig_disk *run_disk(struct mig *m, const struct snap_mig_rec *rec, char *err,
				 size_t errlen)
{
	unsigned n = SNAP_MIG_DISK_N(rec->a);
	uint64_t off = SNAP_MIG_DISK_OFF(rec->a);
	struct mig_disk *d = n < m->nr_disks ? &m->disks[n] : NULL;
	if (!d)
		refuse(err, errlen, rec, "a disk no DSKB named");
	else if (d->ended)
		refuse(err, errlen, rec, "the disk ended already (DSKE)");
	else if (off > d->size || rec->b > d->size - off)
		refuse(err, errlen, rec, "runs past the end of the disk");
	else
		return d;
	return NULL;
}

/* Whole pwrites at off. */
static int write_at(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w, off += (uint64_t)w, len -= (uint64_t)w;
	}
	return 0;
}

static int io_fail(struct mig_disk *d, char *err, size_t errlen, const char *what, uint64_t off,
		   int e)
{
	snprintf(err, errlen, "drive \"%s\": %s %s at offset %" PRIu64 ": %s", d->id, what, d->path,
		 off, strerror(-e));
	return e;
}

int mig_disk_recv(struct mig *m, struct snap_stream *s, const struct snap_mig_rec *rec, char *err,
		  size_t errlen)
{
	if (rec->type == SNAP_MIG_DSKB)
		return begin(m, s, rec, err, errlen);
	if (rec->type == SNAP_MIG_DSKE) {
		int r = snap_mig_get_body(s, rec, NULL, err, errlen);
		struct mig_disk *d = rec->a < m->nr_disks ? &m->disks[rec->a] : NULL;
		if (!r && !d)
			return refuse(err, errlen, rec, "a disk no DSKB named");
		if (!r && d->ended)
			return refuse(err, errlen, rec, "the disk ended already (DSKE)");
		if (!r && rec->b != d->data_bytes) {
			snprintf(err, errlen,
				 "drive \"%s\": the source sent %" PRIu64 " bytes of data, %" PRIu64
				 " arrived: the copy is incomplete",
				 d->id, rec->b, d->data_bytes);
			return -EIO;
		}
		if (!r && fdatasync(d->fd) < 0)
			return io_fail(d, err, errlen, "syncing", 0, -errno);
		if (!r)
			d->ended = true;
		return r;
	}
	struct mig_disk *d = run_disk(m, rec, err, errlen);
	if (!d)
		return -EINVAL;
	uint64_t off = SNAP_MIG_DISK_OFF(rec->a);
	if (rec->type == SNAP_MIG_DSKZ) {
		int r = snap_mig_get_body(s, rec, NULL, err, errlen);
		if (!r && fallocate(d->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, (off_t)off,
				    (off_t)rec->b) < 0) {
			/* No hole punching here: zeroes written. */
			static const uint8_t zero[64 << 10];
			for (uint64_t at = 0; !r && at < rec->b; at += sizeof(zero)) {
				uint64_t n =
				    rec->b - at < sizeof(zero) ? rec->b - at : sizeof(zero);
				if ((r = write_at(d->fd, zero, n, off + at)))
					r = io_fail(d, err, errlen, "writing", off + at, r);
			}
		}
		return r;
	}
	uint8_t *buf = malloc(rec->len);
	if (!buf)
		return snprintf(err, errlen, "out of memory for a disk run"), -ENOMEM;
	int r = snap_mig_get_body(s, rec, buf, err, errlen);
	if (!r && (r = write_at(d->fd, buf, rec->b, off)))
		r = io_fail(d, err, errlen, "writing", off, r);
	/* Writeback starts now and is waited for WRITEBACK_LAG behind (as a
	 * drive move's copy does): the copy goes at the destination's pace,
	 * and DSKE's sync, in the downtime, has only the last blocks left. */
	if (!r) {
		(void)sync_file_range(d->fd, (off_t)off, (off_t)rec->b, SYNC_FILE_RANGE_WRITE);
		if (off > WRITEBACK_LAG)
			(void)sync_file_range(d->fd, 0, (off_t)(off - WRITEBACK_LAG),
					      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
						  SYNC_FILE_RANGE_WAIT_AFTER);
	}
	free(buf);
	if (!r) {
		d->data_bytes += rec->b;
		atomic_fetch_add(&m->disk_sent, rec->b);
	}
	return r;
}

bool mig_disk_recv_open(struct mig *m)
{
	for (unsigned i = 0; i < m->nr_disks; i++)
		if (!m->disks[i].ended)
			return true;
	return false;
}

int mig_disk_recv_sync(struct mig *m, char *err, size_t errlen)
{
	for (unsigned i = 0; i < m->nr_disks; i++) {
		struct mig_disk *d = &m->disks[i];
		if (!d->ended && fdatasync(d->fd) < 0)
			return io_fail(d, err, errlen, "syncing", 0, -errno);
	}
	return 0;
}

int mig_disk_recv_check(struct mig *m, char *err, size_t errlen)
{
	for (unsigned i = 0; i < m->nr_disks; i++)
		if (!m->disks[i].ended) {
			snprintf(err, errlen,
				 "drive \"%s\": the state came before the disk's end "
				 "(DSKE): the copy is incomplete",
				 m->disks[i].id);
			return -EINVAL;
		}
	return 0;
}

void mig_disk_recv_close(struct mig *m)
{
	for (unsigned i = 0; i < m->nr_disks; i++)
		if (m->disks[i].fd >= 0) {
			close(m->disks[i].fd);
			m->disks[i].fd = -1;
		}
}
