/* Memory files: guest RAM byte for byte, sparse.  Written full (zero pages
 * stay holes) or as a diff (the dirty pages as data, the rest holes),
 * merged, and mapped back for a restore. */
#include "snapshot/snap_priv.h"
#include "snapshot/snapshot.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* xxHash (Debian's libxxhash-dev), header-only: XXH3 hashes a page at
 * memory speed, and ember stays one static binary with nothing to link. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wshadow"
#define XXH_INLINE_ALL
#include <xxhash.h>
#pragma GCC diagnostic pop

#define PAGE SNAP_PAGE
/* The most one pwrite/pread/copy_file_range call is asked to move (Linux
 * moves at most 0x7ffff000 bytes per call anyway). */
#define IO_CHUNK (1ULL << 30)
/* A full snapshot hashes a run of pages, then writes it: 256 pages
 * (1 MiB) stay in the caches between the two. */
#define WRITE_RUN 256

/* A page of guest RAM that is all zero.  Most non-zero pages differ in
 * their first word; for the rest glibc's vector memcmp against a zero
 * page beats a word loop (17 vs 23 ms over 256 MiB here). */
static const uint8_t zero_page[PAGE];

static bool page_is_zero(const uint8_t *p)
{
	uint64_t w;
	memcpy(&w, p, sizeof(w));
	return !w && !memcmp(p, zero_page, PAGE);
}

static int pwrite_all(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len < IO_CHUNK ? len : IO_CHUNK, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n, off += (uint64_t)n, len -= (uint64_t)n;
	}
	return 0;
}

static int pread_all(int fd, uint8_t *p, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(fd, p, len < IO_CHUNK ? len : IO_CHUNK, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO; /* 0: the file shrank under us */
		p += n, off += (uint64_t)n, len -= (uint64_t)n;
	}
	return 0;
}

/* The next data range of fd at or after at: 1 with [*data, *hole), 0 when
 * only a hole is left, or -errno. */
static int next_data(int fd, uint64_t at, uint64_t size, uint64_t *data, uint64_t *hole)
{
	if (at >= size)
		return 0;
	off_t d = lseek(fd, (off_t)at, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? 0 : -errno;
	off_t h = lseek(fd, d, SEEK_HOLE);
	if (h < 0)
		return -errno;
	*data = (uint64_t)d;
	*hole = (uint64_t)h < size ? (uint64_t)h : size;
	return *data < size;
}

/* Open a new memory file of len bytes at its temp name. */
static int create(const char *path, uint64_t len, char *tmp, size_t tmplen, char *err,
		  size_t errlen)
{
	if (!len || len % PAGE || len > (uint64_t)INT64_MAX) {
		snap_fail(err, errlen, "%s: memory size %llu is not a positive multiple of %llu",
			  path, (unsigned long long)len, PAGE);
		return -EINVAL;
	}
	int fd = snap_tmp_open(path, tmp, tmplen, err, errlen);
	if (fd >= 0 && ftruncate(fd, (off_t)len) < 0) {
		int e = -errno;
		snap_tmp_abort(fd, tmp);
		snap_fail(err, errlen, "%s: ftruncate to %llu bytes: %s", path,
			  (unsigned long long)len, strerror(-e));
		return e;
	}
	return fd;
}

/* Write failed: drop the temp file, say so. */
static int abort_write(int fd, const char *tmp, const char *path, int e, char *err, size_t errlen)
{
	snap_tmp_abort(fd, tmp);
	snap_fail(err, errlen, "%s: writing %s failed: %s (the previous file is untouched)", path,
		  tmp, strerror(-e));
	return e;
}

bool snap_page_is_zero(const uint8_t *page)
{
	return page_is_zero(page);
}

uint64_t snap_page_hash(const uint8_t *page, uint64_t index)
{
	return (uint64_t)XXH3_64bits_withSeed(page, PAGE, index);
}

/* ---- the content hash (see snapshot.h) ---- */

uint64_t snap_mem_page_term(const uint8_t *page, uint64_t index)
{
	return page_is_zero(page) ? 0 : (uint64_t)XXH3_64bits_withSeed(page, PAGE, index);
}

void snap_mem_hash_ram(const uint8_t *ram, uint64_t len, struct snap_mem_hash *h)
{
	h->sum = 0;
	for (uint64_t i = 0; i < len / PAGE; i++) {
		uint64_t t = snap_mem_page_term(ram + i * PAGE, i);
		h->sum += t;
		if (h->terms)
			h->terms[i] = t;
	}
}

int snap_mem_hash_fd(int fd, uint64_t len, const char *name, struct snap_mem_hash *h, char *err,
		     size_t errlen)
{
	const uint64_t bufsz = 1 << 20;
	uint8_t *buf = malloc(bufsz);
	if (!buf) {
		snap_fail(err, errlen, "%s: no memory to read it", name);
		return -ENOMEM;
	}
	h->sum = 0;
	if (h->terms)
		memset(h->terms, 0, len / PAGE * sizeof(h->terms[0]));
	uint64_t at = 0, data, hole;
	int r;
	while ((r = next_data(fd, at, len, &data, &hole)) > 0) {
		/* Data ranges start and end on pages of the file system's
		 * block size; round out to whole pages of RAM. */
		data &= ~(PAGE - 1);
		hole = (hole + PAGE - 1) & ~(PAGE - 1);
		if (hole > len)
			hole = len;
		for (uint64_t off = data; off < hole && r > 0;) {
			uint64_t n = hole - off < bufsz ? hole - off : bufsz;
			if ((r = pread_all(fd, buf, n, off)) < 0)
				break;
			for (uint64_t p = 0; p < n; p += PAGE) {
				uint64_t t = snap_mem_page_term(buf + p, (off + p) / PAGE);
				h->sum += t;
				if (h->terms)
					h->terms[(off + p) / PAGE] = t;
			}
			off += n;
			r = 1;
		}
		if (r < 0)
			break;
		at = hole;
	}
	free(buf);
	if (r < 0)
		snap_fail(err, errlen, "%s: reading: %s", name, strerror(-r));
	return r < 0 ? r : 0;
}

int snap_mem_write_full(const char *path, const uint8_t *ram, uint64_t len,
			struct snap_mem_hash *h, struct snap_progress *prog, char *err,
			size_t errlen)
{
	char tmp[PATH_MAX];
	int fd = create(path, len, tmp, sizeof(tmp), err, errlen);
	if (fd < 0)
		return fd;
	uint64_t pages = len / PAGE, sum = 0;
	uint64_t *terms = h ? h->terms : NULL;
	for (uint64_t i = 0; i < pages;) {
		uint64_t from = i;
		while (i < pages && page_is_zero(ram + i * PAGE)) {
			if (terms)
				terms[i] = 0;
			i++;
		}
		/* At most WRITE_RUN pages a write: the pages just hashed are
		 * still in the cache when pwrite copies them. */
		uint64_t start = i;
		for (; i < pages && i - start < WRITE_RUN && !page_is_zero(ram + i * PAGE); i++) {
			uint64_t t = (uint64_t)XXH3_64bits_withSeed(ram + i * PAGE, PAGE, i);
			sum += t;
			if (terms)
				terms[i] = t;
		}
		int e = pwrite_all(fd, ram + start * PAGE, (i - start) * PAGE, start * PAGE);
		if (e)
			return abort_write(fd, tmp, path, e, err, errlen);
		snap_progress_add(prog, (i - from) * PAGE);
	}
	if (h)
		h->sum = sum;
	return snap_tmp_commit(fd, tmp, path, err, errlen);
}

/* The first page at or after i (below pages) whose dirty bit is set
 * (set) or clear (!set); pages when there is none. */
static uint64_t next_bit(const uint64_t *bits, uint64_t pages, uint64_t i, bool set)
{
	while (i < pages) {
		uint64_t w = bits[i / 64];
		if (!set)
			w = ~w;
		w &= ~0ULL << (i % 64);
		if (w) {
			i = (i & ~63ULL) + (uint64_t)__builtin_ctzll(w);
			return i < pages ? i : pages;
		}
		i = (i & ~63ULL) + 64;
	}
	return pages;
}

uint64_t snap_pages_bytes(const uint64_t *pages, uint64_t len)
{
	uint64_t n = len / PAGE, set = 0;
	for (uint64_t w = 0; w < (n + 63) / 64; w++) {
		uint64_t bits = pages[w];
		if (w == n / 64)
			bits &= (1ULL << (n % 64)) - 1; /* the part word (w < words: n % 64 > 0) */
		set += (uint64_t)__builtin_popcountll(bits);
	}
	return set * PAGE;
}

/* snap_mem_merge() trusts the diff's SEEK_DATA map: check that it says
 * exactly the dirty pages (a file system that reports a hole as data, or
 * allocates in blocks larger than a page, would make a merge copy zeros
 * over the base). */
static int check_map(int fd, uint64_t len, const uint64_t *dirty, const char *path, char *err,
		     size_t errlen)
{
	uint64_t pages = len / PAGE, at = 0, data = 0, hole = 0;
	for (uint64_t i = next_bit(dirty, pages, 0, true);; i = next_bit(dirty, pages, i, true)) {
		int r = next_data(fd, at, len, &data, &hole);
		if (r < 0) {
			snap_fail(err, errlen, "%s: lseek(SEEK_DATA): %s", path, strerror(-r));
			return r;
		}
		uint64_t want_data = i * PAGE;
		uint64_t want_hole = i < pages ? next_bit(dirty, pages, i, false) * PAGE : len;
		if (i == pages ? r != 0 : (r == 0 || data != want_data || hole != want_hole)) {
			snap_fail(
			    err, errlen,
			    "%s: the file system does not keep a diff's holes exactly (data at "
			    "%llu..%llu, expected %llu..%llu): diff snapshots need a file system "
			    "with page-sized blocks and SEEK_DATA (tmpfs, ext4, xfs, btrfs)",
			    path, r ? (unsigned long long)data : (unsigned long long)len,
			    r ? (unsigned long long)hole : (unsigned long long)len,
			    (unsigned long long)want_data, (unsigned long long)want_hole);
			return -EOPNOTSUPP;
		}
		if (i == pages)
			return 0;
		at = hole;
		i = hole / PAGE;
	}
}

int snap_mem_write_diff(const char *path, const uint8_t *ram, uint64_t len, const uint64_t *dirty,
			struct snap_mem_hash *h, struct snap_progress *prog, char *err,
			size_t errlen)
{
	char tmp[PATH_MAX];
	if (h && !h->terms) {
		snap_fail(err, errlen, "%s: no page hashes of the previous snapshot to update", path);
		return -EINVAL;
	}
	int fd = create(path, len, tmp, sizeof(tmp), err, errlen);
	if (fd < 0)
		return fd;
	uint64_t pages = len / PAGE, sum = h ? h->sum : 0;
	for (uint64_t i = next_bit(dirty, pages, 0, true); i < pages;) {
		uint64_t end = next_bit(dirty, pages, i, false);
		int e = pwrite_all(fd, ram + i * PAGE, (end - i) * PAGE, i * PAGE);
		if (e)
			return abort_write(fd, tmp, path, e, err, errlen);
		snap_progress_add(prog, (end - i) * PAGE);
		i = next_bit(dirty, pages, end, true);
	}
	int e = check_map(fd, len, dirty, tmp, err, errlen);
	if (e) {
		snap_tmp_abort(fd, tmp);
		return e;
	}
	e = snap_tmp_commit(fd, tmp, path, err, errlen);
	if (e || !h)
		return e;
	/* The terms change only once the file is whole: a failed diff
	 * leaves them the previous snapshot's. */
	for (uint64_t i = 0; (i = next_bit(dirty, pages, i, true)) < pages; i++) {
		uint64_t t = snap_mem_page_term(ram + i * PAGE, i);
		sum += t - h->terms[i];
		h->terms[i] = t;
	}
	h->sum = sum;
	return 0;
}

/* Copy [off, off+len) of in to the same offset of out: copy_file_range
 * (in-kernel; a reflink where the file system can), or read and write
 * where the kernel refuses (another file system, an old kernel). */
static int copy_range(int in, int out, uint64_t off, uint64_t len, uint8_t **buf)
{
	loff_t oi = (loff_t)off, oo = (loff_t)off;
	bool fallback = false;
	while (len) {
		size_t n = len < IO_CHUNK ? (size_t)len : IO_CHUNK;
		ssize_t r;
		if (!fallback) {
			r = copy_file_range(in, &oi, out, &oo, n, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
				      errno == EOPNOTSUPP)) {
				fallback = true;
				continue;
			}
			if (r <= 0)
				return r < 0 ? -errno : -EIO;
		} else {
			const size_t bufsz = 1 << 20;
			if (!*buf && !(*buf = malloc(bufsz)))
				return -ENOMEM;
			n = n < bufsz ? n : bufsz;
			int e = pread_all(in, *buf, n, (uint64_t)oi);
			if (!e)
				e = pwrite_all(out, *buf, n, (uint64_t)oo);
			if (e)
				return e;
			r = (ssize_t)n;
			oi += r, oo += r;
		}
		len -= (uint64_t)r;
	}
	return 0;
}

/* Every data range of in onto out at the same offsets. */
static int copy_data(int in, int out, uint64_t size, uint8_t **buf, const char *name, char *err,
		     size_t errlen)
{
	uint64_t at = 0, data, hole;
	int r;
	while ((r = next_data(in, at, size, &data, &hole)) > 0) {
		if ((r = copy_range(in, out, data, hole - data, buf)) < 0)
			break;
		at = hole;
	}
	if (r < 0)
		snap_fail(err, errlen, "%s: copying its data: %s", name, strerror(-r));
	return r;
}

static int open_mem(const char *path, struct stat *st, char *err, size_t errlen)
{
	/* O_NONBLOCK: a FIFO (or a device) opens at once and is refused
	 * below, rather than blocking the open until a writer comes. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	int e = 0;
	if (fd < 0)
		e = -errno;
	else if (fstat(fd, st) < 0)
		e = -errno;
	if (e) {
		snap_fail(err, errlen, "%s: %s", path, strerror(-e));
	} else if (!S_ISREG(st->st_mode)) {
		snap_fail(err, errlen, "%s: %s, not a regular file", path, snap_file_kind(st->st_mode));
		e = -EINVAL;
	}
	if (e && fd >= 0)
		close(fd);
	return e ? e : fd;
}

int snap_mem_merge(const char *base, const char *diff, char *err, size_t errlen)
{
	struct stat sb, sd;
	int fb = open_mem(base, &sb, err, errlen);
	if (fb < 0)
		return fb;
	int fdiff = open_mem(diff, &sd, err, errlen);
	if (fdiff < 0) {
		close(fb);
		return fdiff;
	}
	int e = 0, out = -1;
	char tmp[PATH_MAX];
	uint8_t *buf = NULL;
	uint64_t size = (uint64_t)sb.st_size;
	if (sb.st_size != sd.st_size) {
		snap_fail(err, errlen,
			  "%s: %lld bytes, but the diff %s has %lld: not of the same VM", base,
			  (long long)sb.st_size, diff, (long long)sd.st_size);
		e = -EINVAL;
	} else if ((out = snap_tmp_open(base, tmp, sizeof(tmp), err, errlen)) < 0) {
		e = out;
	} else if (ftruncate(out, sb.st_size) < 0 || fchmod(out, sb.st_mode & 07777) < 0) {
		e = -errno;
		snap_fail(err, errlen, "%s: preparing %s: %s", base, tmp, strerror(-e));
	} else if (!(e = copy_data(fb, out, size, &buf, base, err, errlen))) {
		e = copy_data(fdiff, out, size, &buf, diff, err, errlen);
	}
	free(buf);
	close(fb);
	close(fdiff);
	if (e) {
		if (out >= 0)
			snap_tmp_abort(out, tmp);
		return e;
	}
	return snap_tmp_commit(out, tmp, base, err, errlen);
}

/* ---- digest ---- */

#define FNV_PRIME 0x100000001b3ULL
#define FNV_BASIS 0xcbf29ce484222325ULL

/* FNV-1a over little-endian 64-bit words in four interleaved lanes (one
 * multiply chain per lane keeps it near memory speed), then the tail
 * bytes into lane 0. */
static void mix(uint64_t lane[4], const uint8_t *p, uint64_t len)
{
	for (; len >= 32; p += 32, len -= 32) {
		for (int i = 0; i < 4; i++) {
			uint64_t v;
			memcpy(&v, p + 8 * i, 8);
			lane[i] = (lane[i] ^ le64toh(v)) * FNV_PRIME;
		}
	}
	while (len--)
		lane[0] = (lane[0] ^ *p++) * FNV_PRIME;
}

#define DIGEST_HEAD (64 * 1024ULL)
#define DIGEST_PAGES 60ULL

uint64_t snap_mem_digest(const uint8_t *ram, uint64_t len)
{
	uint64_t lane[4] = {FNV_BASIS, FNV_BASIS ^ 1, FNV_BASIS ^ 2, FNV_BASIS ^ 3};
	mix(lane, (const uint8_t *)&(uint64_t){htole64(len)}, 8);
	if (len <= DIGEST_HEAD + (DIGEST_PAGES + 1) * PAGE) {
		mix(lane, ram, len);
	} else {
		mix(lane, ram, DIGEST_HEAD);
		/* Pages spread evenly over [head, last page): the i-th at
		 * head + i/60 of the way, rounded down to a page. */
		uint64_t first = DIGEST_HEAD / PAGE, span = (len - PAGE) / PAGE - first;
		for (uint64_t i = 0; i < DIGEST_PAGES; i++)
			mix(lane, ram + (first + i * span / DIGEST_PAGES) * PAGE, PAGE);
		mix(lane, ram + len - PAGE, PAGE);
	}
	uint64_t h = FNV_BASIS;
	for (int i = 0; i < 4; i++)
		h = (h ^ lane[i]) * FNV_PRIME;
	return h ^ (h >> 29);
}

/* ---- restore ---- */

int snap_mem_map(const char *path, uint64_t expect_len, bool copy, uint8_t **ram, char *err,
		 size_t errlen)
{
	struct stat st;
	*ram = NULL;
	int fd = open_mem(path, &st, err, errlen);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size != expect_len || !expect_len) {
		snap_fail(err, errlen,
			  "%s: %lld bytes, the state file says %llu: not its memory file", path,
			  (long long)st.st_size, (unsigned long long)expect_len);
		close(fd);
		return -ERANGE;
	}
	/* MAP_NORESERVE: a 4 GiB guest that touched 10 MiB costs 10 MiB. */
	uint8_t *p =
	    mmap(NULL, expect_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_NORESERVE | (copy ? MAP_ANONYMOUS : 0), copy ? -1 : fd, 0);
	int e = p == MAP_FAILED ? -errno : 0;
	if (e) {
		snap_fail(err, errlen, "%s: mmap of %llu bytes: %s", path,
			  (unsigned long long)expect_len, strerror(-e));
	} else if (copy) {
		uint64_t at = 0, data, hole;
		while ((e = next_data(fd, at, expect_len, &data, &hole)) > 0) {
			if ((e = pread_all(fd, p + data, hole - data, data)) < 0)
				break;
			at = hole;
		}
		if (e < 0) {
			snap_fail(err, errlen, "%s: reading: %s", path, strerror(-e));
			munmap(p, expect_len);
		}
	}
	close(fd); /* the MAP_PRIVATE mapping holds the file */
	if (e < 0)
		return e;
	*ram = p;
	return 0;
}

void snap_mem_unmap(uint8_t *ram, uint64_t len)
{
	if (ram)
		munmap(ram, len);
}
