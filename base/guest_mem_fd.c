/* Guest RAM in a memfd (docs/migration.md, "Same-host upgrade"): the
 * layout of gmem_init, with a memfd mapped MAP_SHARED over the anonymous
 * RAM, so a new ember on this host can map the same pages instead of
 * receiving a copy. */
#include "base/guest_mem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* What the sender seals: the size can never change under a guest that
 * maps it (a shrink would turn guest accesses into SIGBUS). */
#define SIZE_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

/* fd's pages over m's RAM, at the same address: the guard pages and the
 * dirty bitmap stay as gmem_init made them. */
static int map_fd(struct gmem *m, int fd)
{
	if (mmap(m->base, m->ram_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0) == MAP_FAILED)
		return -errno;
	m->memfd = fd;
	m->shared = true;
	m->anon = false; /* a memfd's pages: not this mapping's to judge */
	return 0;
}

int gmem_init_shared(struct gmem *m, uint64_t ram_size)
{
	int r = gmem_init(m, ram_size);
	if (r)
		return r;
	int fd = memfd_create("ember-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		r = -errno;
	else if (ftruncate(fd, (off_t)ram_size) < 0 || fcntl(fd, F_ADD_SEALS, SIZE_SEALS) < 0)
		r = -errno;
	else
		r = map_fd(m, fd);
	if (r && fd >= 0)
		close(fd);
	if (r)
		gmem_free(m);
	return r;
}

int gmem_check_memfd(const struct gmem *m, int fd, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return snprintf(err, errlen, "the memory's fd: fstat: %s", strerror(errno)), -errno;
	int seals = fcntl(fd, F_GET_SEALS);
	if (!S_ISREG(st.st_mode) || seals < 0)
		return snprintf(err, errlen, "the memory's fd is not a memfd (%s)",
				!S_ISREG(st.st_mode) ? "not a regular file" : "it takes no seals"),
		       -EINVAL;
	if ((seals & SIZE_SEALS) != SIZE_SEALS)
		return snprintf(
			   err, errlen,
			   "the memory's fd is not a memfd sealed against resizing (seals 0x%x): "
			   "not an ember's guest RAM",
			   (unsigned)seals),
		       -EINVAL;
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		return snprintf(err, errlen, "the memory's memfd is sealed against writes"),
		       -EINVAL;
	if ((uint64_t)st.st_size != m->ram_size)
		return snprintf(err, errlen,
				"the memory's memfd has %" PRIu64 " bytes, the VM's RAM %" PRIu64,
				(uint64_t)st.st_size, m->ram_size),
		       -ERANGE;
	return 0;
}

int gmem_adopt_memfd(struct gmem *m, int fd, char *err, size_t errlen)
{
	if (m->shared || m->vm_fd >= 0 || !m->base)
		return snprintf(err, errlen, "guest RAM is in use: cannot take a memfd"), -EBUSY;
	int r = gmem_check_memfd(m, fd, err, errlen);
	if (!r && (r = map_fd(m, fd)))
		snprintf(err, errlen, "cannot map the memory's memfd: %s", strerror(-r));
	return r;
}
