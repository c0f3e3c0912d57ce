/* Post-copy, the target (docs/migration.md, "Post-copy").
 *
 * Design: RAM is filled normally by the pre-copy rounds (DATA straight
 * into it).  At PCPY the pages the source has not sent as they are now
 * (its bitmap) are dropped (MADV_DONTNEED: anonymous private memory
 * reads as missing again) and the whole of RAM is registered with a
 * userfaultfd for missing pages, before the VM resumes.  From GOGO on,
 * any access to a page not present waits for this thread: a vCPU's
 * (KVM's own accesses too: the fd is made without UFFD_USER_MODE_ONLY),
 * the vmm thread's device emulation, an hvt hypercall's.  A page in the
 * bitmap is asked of the source (PREQ) and installed when it comes
 * (UFFDIO_COPY, which wakes the waiters); a page outside it was zero on
 * the source and was never written here, so it is installed as zero
 * (UFFDIO_ZEROPAGE) at once.  The pages the source pushes in the
 * background are installed the same way.  When none is missing, PFIN
 * goes back and RAM is unregistered.
 *
 * No deadlock: this thread takes no lock another thread may hold while
 * touching guest RAM (no stdio, no malloc, no m->lock, no call to the
 * vmm thread) from GOGO to the last page; it never touches guest RAM
 * itself (only through the uffd ioctls). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "monitor/migrate/migrate.h"
#include "snapshot/snapshot.h"

#define PAGE SNAP_PAGE

int mig_uffd_open(void)
{
	/* Not UFFD_USER_MODE_ONLY: KVM's faults on guest RAM (KVM_RUN's
	 * own, not the guest's user mode) must come here too.  Without
	 * that flag the kernel wants CAP_SYS_PTRACE or
	 * vm.unprivileged_userfaultfd=1: made here, before any thread drops
	 * its capabilities (ember jailed under an unprivileged uid has
	 * neither: /dev/userfaultfd then, if the jail offers it). */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && errno == EPERM) {
		/* Without the capability: /dev/userfaultfd (Linux 6.1), which
		 * its file mode guards instead, where the host lets us open it */
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
		if (fd < 0)
			errno = EPERM;
	}
	if (fd < 0)
		return -errno;
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* The target's post-copy state (m->post), the migration thread's only. */
struct mig_post {
	uint64_t *missing;   /* PCPY's bitmap: set while the page is not in */
	uint64_t *requested; /* PREQ sent for it */
	uint64_t pages, words, left;
	uint8_t *buf;  /* one DATA record */
	uint8_t *base; /* guest RAM (the VM's now) */
	uint64_t size;
};

static bool test(const uint64_t *b, uint64_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

int mig_post_arm(struct mig *m, struct snap_stream *s, const struct snap_mig_rec *rec,
		 uint8_t *base, uint64_t size, char *err, size_t errlen)
{
	struct mig_post *pc = m->post;
	if (!m->post && !(m->post = calloc(1, sizeof(*m->post)))) {
		snprintf(err, errlen, "out of memory for post-copy");
		return -ENOMEM;
	}
	pc = m->post;
	pc->base = base;
	pc->size = size;
	pc->pages = size / PAGE;
	pc->words = (pc->pages + 63) / 64;
	if (m->uffd < 0) {
		snprintf(err, errlen, "post-copy: this ember has no userfaultfd: %s",
			 strerror(-m->uffd));
		return m->uffd;
	}
	if (rec->len != pc->words * 8) {
		snprintf(err, errlen,
			 "stream: byte %" PRIu64 ": record PCPY has %u bytes of bitmap, RAM's "
			 "0x%" PRIx64 " pages need %" PRIu64,
			 rec->off, rec->len, pc->pages, pc->words * 8);
		return -EINVAL;
	}
	free(pc->missing);
	free(pc->requested);
	free(pc->buf);
	pc->missing = malloc(rec->len);
	pc->requested = calloc(pc->words, 8);
	pc->buf = malloc(SNAP_MIG_RUN_MAX * PAGE);
	if (!pc->missing || !pc->requested || !pc->buf) {
		snprintf(err, errlen, "out of memory for post-copy");
		return -ENOMEM;
	}
	int r = snap_mig_get_body(s, rec, pc->missing, err, errlen);
	if (r)
		return r;
	uint64_t n = 0;
	for (uint64_t w = 0; w < pc->words; w++)
		n += (uint64_t)__builtin_popcountll(pc->missing[w]);
	if (pc->pages % 64 && pc->missing[pc->words - 1] >> (pc->pages % 64)) {
		snprintf(err, errlen, "stream: byte %" PRIu64 ": record PCPY names pages past RAM",
			 rec->off);
		return -EINVAL;
	}
	if (n != rec->a) {
		snprintf(err, errlen,
			 "stream: byte %" PRIu64 ": record PCPY says 0x%" PRIx64
			 " pages, its bitmap names 0x%" PRIx64 ": corrupt",
			 rec->off, rec->a, n);
		return -EINVAL;
	}
	pc->left = n;
	/* What pre-copy wrote of these pages is stale: drop it, so they
	 * read as missing. */
	for (uint64_t i = 0; i < pc->pages;) {
		if (!test(pc->missing, i)) {
			i++;
			continue;
		}
		uint64_t e = i + 1;
		while (e < pc->pages && test(pc->missing, e))
			e++;
		if (madvise(pc->base + i * PAGE, (e - i) * PAGE, MADV_DONTNEED)) {
			r = -errno;
			snprintf(err, errlen, "post-copy: madvise: %s", strerror(-r));
			return r;
		}
		i = e;
	}
	struct uffdio_register reg = {
	    .range = {.start = (uint64_t)(uintptr_t)pc->base, .len = pc->size},
	    .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(m->uffd, UFFDIO_REGISTER, &reg)) {
		r = -errno;
		snprintf(err, errlen, "post-copy: UFFDIO_REGISTER: %s", strerror(-r));
		return r;
	}
	atomic_store(&m->pages_missing, pc->left);
	return 0;
}

/* The source is gone or the stream broke after GOGO: the guest's
 * missing pages exist nowhere else.  Say so on stderr (write(2): no
 * stdio lock, which a thread waiting on a fault might hold) and end the
 * process (SIGABRT: the vmm thread, which would end it normally, may be
 * one of those waiting). */
static _Noreturn void lost(struct mig *m, const char *why)
{
	struct mig_post *pc = m->post;
	char msg[MIG_ERR_MAX + 200];
	int n = snprintf(msg, sizeof(msg),
			 "ember: migration failed in post-copy: %s; %" PRIu64
			 " pages of the guest were still on the source: the guest is lost, this "
			 "process aborts\n",
			 why, pc->left);
	(void)!write(2, msg, n > 0 && (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
	atomic_store(&m->phase, MIG_FAILED);
	/* the pid kept by mig_init: this role may not ask for it */
	syscall(SYS_tgkill, m->pid, m->pid, SIGABRT);
	for (;;)
		ppoll(NULL, 0, NULL, NULL);
}

/* Page i is in now (installed, or found present). */
static void got(struct mig *m, uint64_t i)
{
	struct mig_post *pc = m->post;
	if (!test(pc->missing, i))
		return;
	pc->missing[i / 64] &= ~(1ULL << (i % 64));
	pc->left--;
	atomic_store(&m->pages_missing, pc->left);
}

/* Page i as zero, or wake whoever waits on it when it is in already. */
static int zero(struct mig *m, uint64_t i)
{
	struct mig_post *pc = m->post;
	struct uffdio_zeropage z = {
	    .range = {.start = (uint64_t)(uintptr_t)pc->base + i * PAGE, .len = PAGE}};
	int r;
	while ((r = ioctl(m->uffd, UFFDIO_ZEROPAGE, &z)) && errno == EAGAIN)
		; /* the mm changing under it: again */
	if (r && errno != EEXIST)
		return -errno;
	if (r) { /* in already: its waiters may have missed the wake */
		struct uffdio_range w = z.range;
		(void)ioctl(m->uffd, UFFDIO_WAKE, &w);
	}
	got(m, i);
	return 0;
}

static int copy(struct mig *m, uint64_t i, const uint8_t *src)
{
	struct mig_post *pc = m->post;
	struct uffdio_copy c = {.dst = (uint64_t)(uintptr_t)pc->base + i * PAGE,
				.src = (uint64_t)(uintptr_t)src,
				.len = PAGE};
	int r;
	while ((r = ioctl(m->uffd, UFFDIO_COPY, &c)) && errno == EAGAIN)
		c.copy = 0; /* the mm changing under it: again */
	if (r && errno != EEXIST)
		return -errno;
	got(m, i);
	return 0;
}

/* Every fault queued: a missing page is asked for once, any other one
 * (zero on the source, never written here) made zero. */
static int faults(struct mig *m, struct snap_stream *s, char *err, size_t errlen)
{
	struct mig_post *pc = m->post;
	struct uffd_msg msg[16];
	for (;;) {
		ssize_t n = read(m->uffd, msg, sizeof(msg));
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		for (size_t k = 0; k < (size_t)n / sizeof(msg[0]); k++) {
			if (msg[k].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t i =
			    (msg[k].arg.pagefault.address - (uint64_t)(uintptr_t)pc->base) / PAGE;
			if (i >= pc->pages)
				continue;
			atomic_fetch_add(&m->faults_served, 1);
			int r = 0;
			if (!test(pc->missing, i))
				r = zero(m, i);
			else if (!test(pc->requested, i)) {
				pc->requested[i / 64] |= 1ULL << (i % 64);
				r = snap_mig_put(s, SNAP_MIG_PREQ, i, 0, NULL, 0, err, errlen);
			}
			if (r)
				return r;
		}
	}
}

/* One record of the push (or of an answer): DATA or ZERO. */
static int page_record(struct mig *m, struct snap_stream *s, char *err, size_t errlen)
{
	struct mig_post *pc = m->post;
	struct snap_mig_rec rec;
	char nm[12];
	int r = snap_mig_get_hdr(s, &rec, err, errlen);
	if (r)
		return r;
	atomic_store(&m->bytes_sent, s->off);
	if (rec.type != SNAP_MIG_DATA && rec.type != SNAP_MIG_ZERO) {
		snprintf(err, errlen, "stream: byte %" PRIu64 ": record %s in post-copy", rec.off,
			 snap_mig_name(rec.type, nm));
		return -EPROTO;
	}
	if (!rec.b || rec.a >= pc->pages || rec.b > pc->pages - rec.a) {
		snprintf(err, errlen, "stream: byte %" PRIu64 ": record %s outside RAM", rec.off,
			 snap_mig_name(rec.type, nm));
		return -EINVAL;
	}
	if ((r = snap_mig_get_body(s, &rec, rec.type == SNAP_MIG_DATA ? pc->buf : NULL, err,
				   errlen)))
		return r;
	atomic_store(&m->bytes_sent, s->off);
	atomic_fetch_add(&m->pages_sent, rec.b);
	for (uint64_t k = 0; k < rec.b && !r; k++) {
		uint64_t i = rec.a + k;
		if (!test(pc->missing, i))
			continue; /* asked twice, or a race with a zero fault: in already */
		r = rec.type == SNAP_MIG_DATA ? copy(m, i, pc->buf + k * PAGE) : zero(m, i);
	}
	if (r)
		snprintf(err, errlen, "post-copy: installing a page: %s", strerror(-r));
	return r;
}

void mig_post_serve(struct mig *m, struct snap_stream *s)
{
	struct mig_post *pc = m->post;
	char err[MIG_ERR_MAX];
	int r = 0;
	while (pc->left && !r) {
		struct pollfd pf[2] = {{.fd = m->uffd, .events = POLLIN},
				       {.fd = s->fd, .events = POLLIN}};
		if (ppoll(pf, 2, NULL, NULL) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			snprintf(err, sizeof(err), "ppoll: %s", strerror(errno));
			break;
		}
		if (pf[0].revents)
			r = faults(m, s, err, sizeof(err));
		if (!r && pf[1].revents)
			r = page_record(m, s, err, sizeof(err));
	}
	if (!r)
		r = snap_mig_put(s, SNAP_MIG_PFIN, 0, 0, NULL, 0, err, sizeof(err));
	if (r && pc->left)
		lost(m, err);
	/* Every page is in: nothing faults to this thread any more. */
	struct uffdio_range all = {.start = (uint64_t)(uintptr_t)pc->base, .len = pc->size};
	(void)ioctl(m->uffd, UFFDIO_UNREGISTER, &all);
	/* Faults that raced the last page: they are in now. */
	(void)ioctl(m->uffd, UFFDIO_WAKE, &all);
}
