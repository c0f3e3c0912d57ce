/* Guest RAM: one anonymous mapping, split around the 32-bit MMIO hole. */
#include "base/guest_mem.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GMEM_GUARD 4096ULL
#define PAGE 4096ULL

/* Slot 1's log lands in the bitmap a whole word in (gmem_dirty_fetch). */
_Static_assert(GMEM_HOLE_START / PAGE % 64 == 0, "slot 1 must start on a bitmap word");

uint64_t gmem_dirty_words(const struct gmem *m)
{
	return (m->ram_size / PAGE + 63) / 64;
}

/* The anonymous mapping with its guard pages. */
static int map_ram(struct gmem *m, uint64_t ram_size)
{
	memset(m, 0, sizeof(*m));
	if (ram_size == 0 || (ram_size & 0xfff))
		return -EINVAL;
	/* A PROT_NONE page on each side: a host pointer that overruns guest
	 * RAM faults instead of reaching other memory, and the mapping never
	 * merges with a neighbour.  MAP_NORESERVE: a 4 GiB guest that
	 * touches 10 MiB costs 10 MiB. */
	if (ram_size > UINT64_MAX - 2 * GMEM_GUARD)
		return -EINVAL;
	uint8_t *g = mmap(NULL, ram_size + 2 * GMEM_GUARD, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g == MAP_FAILED)
		return -errno;
	void *p = mmap(g + GMEM_GUARD, ram_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	if (p == MAP_FAILED) {
		int e = -errno;
		munmap(g, ram_size + 2 * GMEM_GUARD);
		return e;
	}
	m->base = p;
	m->ram_size = ram_size;
	m->vm_fd = -1;
	/* The dirty bitmap, up front: logging may start after the sandbox
	 * closes, when no mmap is allowed. */
	void *d = mmap(NULL, gmem_dirty_words(m) * 8, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d == MAP_FAILED) {
		int e = -errno;
		munmap(g, ram_size + 2 * GMEM_GUARD);
		memset(m, 0, sizeof(*m));
		return e;
	}
	m->dirty = d;
	m->all = true;
	uint64_t low = ram_size < GMEM_HOLE_START ? ram_size : GMEM_HOLE_START;
	m->r[0] = (struct gmem_region){.gpa = 0, .size = low, .host = m->base};
	m->nr = 1;
	if (ram_size > low) {
		m->r[1] = (struct gmem_region){
		    .gpa = GMEM_HOLE_END, .size = ram_size - low, .host = m->base + low};
		m->nr = 2;
	}
	return 0;
}

int gmem_init(struct gmem *m, uint64_t ram_size)
{
	int r = map_ram(m, ram_size);
	m->anon = !r;
	return r;
}

int gmem_populated(const struct gmem *m, int pagemap_fd, uint64_t *bits)
{
	if (!m->anon || pagemap_fd < 0)
		return -EINVAL;
	/* pagemap (Documentation/admin-guide/mm/pagemap.rst): one u64 per
	 * virtual page, bit 63 present, bit 62 swapped. */
	enum { CHUNK = 512 };
	uint64_t e[CHUNK], pages = m->ram_size / PAGE;
	uint64_t first = (uint64_t)(uintptr_t)m->base / PAGE;
	memset(bits, 0, gmem_dirty_words(m) * 8);
	for (uint64_t i = 0; i < pages; i += CHUNK) {
		uint64_t n = pages - i < CHUNK ? pages - i : CHUNK;
		ssize_t got = pread(pagemap_fd, e, n * 8, (off_t)((first + i) * 8));
		if (got < 0)
			return -errno;
		if ((uint64_t)got != n * 8)
			return -EIO;
		for (uint64_t k = 0; k < n; k++)
			if (e[k] >> 62)
				bits[(i + k) / 64] |= 1ULL << ((i + k) % 64);
	}
	return 0;
}

int gmem_flatten(struct gmem *m)
{
	if (m->vm_fd >= 0)
		return -EBUSY;
	if (m->ram_size > GMEM_HOLE_END)
		return -ERANGE;
	m->r[0] = (struct gmem_region){.gpa = 0, .size = m->ram_size, .host = m->base};
	m->nr = 1;
	return 0;
}

/* Copy the file's data ranges into the anonymous RAM (holes stay zero,
 * untouched). */
static int read_data(struct gmem *m, int fd)
{
	off_t end = (off_t)m->ram_size, at = 0;
	while (at < end) {
		off_t data = lseek(fd, at, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? 0 : -errno; /* ENXIO: only a hole left */
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		for (off_t o = data; o < hole;) {
			ssize_t n = pread(fd, m->base + o, (size_t)(hole - o), o);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
			o += n;
		}
		at = hole;
	}
	return 0;
}

/* Map only the file's data ranges over the anonymous RAM (MAP_PRIVATE,
 * MAP_FIXED): its holes stay anonymous zero pages.  Mapping the whole
 * file would do on most file systems, but on tmpfs a read fault on a
 * hole allocates that page in the file: a sparse 5 MiB snapshot grew to
 * its full 256 MiB.  Past MAX_RANGES ranges the whole file is mapped. */
#define MAX_RANGES 4096
static int map_data(struct gmem *m, int fd)
{
	off_t end = (off_t)m->ram_size, at = 0;
	for (unsigned n = 0; at < end; n++) {
		off_t data = lseek(fd, at, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? 0 : -errno;
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		/* Page-align outward: data ranges are page multiples on the
		 * files ember writes, but not necessarily on others. */
		off_t from = data & ~(off_t)0xfff, to = (hole + 0xfff) & ~(off_t)0xfff;
		if (to > end)
			to = end;
		if (n == MAX_RANGES) {
			from = 0;
			to = end;
		}
		if (mmap(m->base + from, (size_t)(to - from), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED, fd, from) == MAP_FAILED)
			return -errno;
		at = to;
	}
	return 0;
}

int gmem_init_file(struct gmem *m, int fd, uint64_t ram_size, bool copy)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size != ram_size)
		return -ERANGE;
	int r = map_ram(m, ram_size);
	m->anon = !r && copy; /* MAP_PRIVATE over the file: absent pages are its data */
	/* A file that is nearly all data is mapped in one piece: the walk
	 * over its extents costs more (SEEK_HOLE scans tmpfs's page cache
	 * page by page: 1.4 ms for 256 MiB) than its few holes can fill. */
	bool dense = (uint64_t)st.st_blocks * 512 >= ram_size - ram_size / 16;
	if (!r && !copy && dense &&
	    mmap(m->base, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED,
		 fd, 0) == MAP_FAILED)
		r = -errno;
	else if (!r && !(!copy && dense))
		r = copy ? read_data(m, fd) : map_data(m, fd);
	if (r)
		gmem_free(m);
	return r;
}

/* Slot i again, logging dirty pages or not (KVM API §4.35). */
static int set_slot(const struct gmem *m, unsigned i, bool log)
{
	struct kvm_userspace_memory_region reg = {
	    .slot = i,
	    .guest_phys_addr = m->r[i].gpa,
	    .memory_size = m->r[i].size,
	    .userspace_addr = (uint64_t)(uintptr_t)m->r[i].host,
	    .flags = log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
	};
	return ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &reg) < 0 ? -errno : 0;
}

int gmem_kvm_attach(struct gmem *m, int vm_fd, bool log)
{
	m->vm_fd = vm_fd;
	for (unsigned i = 0; i < m->nr; i++) {
		int r = set_slot(m, i, log);
		if (r)
			return r;
	}
	atomic_store(&m->logging, log);
	m->all = !log;
	return 0;
}

int gmem_log_dirty(struct gmem *m, bool on)
{
	if (!m->dirty)
		return -EINVAL;
	if (on == atomic_load(&m->logging))
		return 0;
	unsigned done = 0;
	int r = 0;
	while (m->vm_fd >= 0 && done < m->nr && !(r = set_slot(m, done, on)))
		done++;
	if (r) {
		while (done--)
			(void)!set_slot(m, done, !on);
		return r;
	}
	/* Either way the next fetch has no base: what changed while
	 * logging was off is unknown. */
	m->all = true;
	atomic_store(&m->logging, on);
	return 0;
}

void gmem_mark(const struct gmem *m, const void *host, uint64_t len)
{
	/* Relaxed: logging is switched on the vmm thread, where the devices
	 * mark; the vCPU threads (hvt) see it by the next pause, and the
	 * first fetch after turning it on returns every page anyway. */
	if (!len || !atomic_load_explicit(&m->logging, memory_order_relaxed))
		return;
	uint64_t off = (uint64_t)((const uint8_t *)host - m->base);
	for (uint64_t i = off / PAGE; i <= (off + len - 1) / PAGE; i++)
		atomic_fetch_or_explicit(&m->dirty[i / 64], 1ULL << (i % 64), memory_order_relaxed);
}

int gmem_dirty_fetch(struct gmem *m, uint64_t *out)
{
	uint64_t words = gmem_dirty_words(m), pages = m->ram_size / PAGE;
	bool logging = atomic_load(&m->logging);
	memset(out, 0, words * 8);
	/* KVM writes each slot's log straight into its place in out: slot
	 * 0's is whole words (or the last slot), slot 1 starts on a word. */
	for (unsigned i = 0; logging && m->vm_fd >= 0 && i < m->nr; i++) {
		struct kvm_dirty_log log = {
		    .slot = i,
		    .dirty_bitmap = out + (uint64_t)(m->r[i].host - m->base) / PAGE / 64};
		if (ioctl(m->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			m->all = true;
			return -errno;
		}
	}
	for (uint64_t w = 0; w < words; w++)
		if (atomic_load_explicit(&m->dirty[w], memory_order_relaxed))
			out[w] |= atomic_exchange_explicit(&m->dirty[w], 0, memory_order_relaxed);
	if (m->all || !logging) {
		memset(out, 0xff, pages / 64 * 8);
		if (pages % 64)
			out[pages / 64] = (1ULL << (pages % 64)) - 1;
		m->all = !logging;
	}
	return 0;
}

void gmem_free(struct gmem *m)
{
	if (m->shared)
		close(m->memfd);
	if (m->dirty)
		munmap((void *)m->dirty, gmem_dirty_words(m) * 8);
	if (m->base)
		munmap(m->base - GMEM_GUARD, m->ram_size + 2 * GMEM_GUARD);
	memset(m, 0, sizeof(*m));
}

void *gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len)
{
	if (len == 0)
		return NULL;
	for (unsigned i = 0; i < m->nr; i++) {
		const struct gmem_region *r = &m->r[i];
		/* Written so that no sum can overflow: gpa - r->gpa is only
		 * computed once gpa >= r->gpa. */
		if (gpa < r->gpa)
			continue;
		uint64_t off = gpa - r->gpa;
		if (off >= r->size || len > r->size - off)
			continue;
		return r->host + off;
	}
	return NULL;
}

int gmem_write(const struct gmem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gmem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

int gmem_read(const struct gmem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *p = gmem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

uint64_t gmem_low_end(const struct gmem *m)
{
	return m->nr ? m->r[0].size : 0;
}
