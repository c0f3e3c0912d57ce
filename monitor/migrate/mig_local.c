/* The same-host hand-over (docs/migration.md, "Same-host upgrade"): the
 * source's RAM is a memfd (gmem_init_shared), and instead of its pages
 * the stream carries that fd once (MEMF, SCM_RIGHTS over the unix
 * socket), so what the downtime costs does not grow with RAM.  The rest
 * is the ordinary protocol: SETU's check, the state, REDY and GOGO. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "monitor/migrate/migrate.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

int mig_local_check(const struct vm *vm, char *err, size_t errlen)
{
	if (vm->mem.shared)
		return 0;
	snprintf(err, errlen,
		 "mode local: this VM's RAM cannot be handed over: it is not in a memfd (start "
		 "ember with --memory-shared, or machine-config \"mem_backend\": \"memfd\"; a "
		 "restored snapshot's RAM is its memory file's, mapped privately)");
	return -EINVAL;
}

int mig_local_send_memf(struct mig *m, struct snap_stream *s, char *err, size_t errlen)
{
	const struct gmem *mem = &m->vm->mem;
	int r = snap_mig_put_fd(s, SNAP_MIG_MEMF, mem->ram_size / SNAP_PAGE, 0, mem->memfd, err,
				errlen);
	if (!r)
		atomic_fetch_add(&m->bytes_sent, SNAP_MIG_HDR);
	return r;
}

int mig_local_recv_memf(struct mig *m, struct snap_stream *s, char *err, size_t errlen)
{
	struct snap_mig_rec rec;
	int fd;
	uint64_t pages = m->mem.ram_size / SNAP_PAGE;
	int r = snap_mig_get_hdr_fd(s, &rec, &fd, err, errlen);
	atomic_store(&m->bytes_sent, s->off);
	if (r)
		return r;
	char n[12];
	if (rec.type != SNAP_MIG_MEMF || fd < 0 || rec.a != pages) {
		if (rec.type != SNAP_MIG_MEMF)
			snprintf(err, errlen,
				 "stream: byte %" PRIu64
				 ": record %s where MEMF belongs (mode local)",
				 rec.off, snap_mig_name(rec.type, n));
		else if (fd < 0)
			snprintf(err, errlen,
				 "stream: byte %" PRIu64
				 ": record MEMF came with no file descriptor",
				 rec.off);
		else
			snprintf(err, errlen,
				 "stream: byte %" PRIu64 ": record MEMF says 0x%" PRIx64
				 " pages, the setup 0x%" PRIx64,
				 rec.off, rec.a, pages);
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	return m->tops->memfd(m->opaque, fd, &m->mem, err, errlen);
}
