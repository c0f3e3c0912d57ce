/* Raw disk backend: an image file or a block device. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/backend.h"
#include "base/blk_mirror.h"
#include "base/hostfile.h"

int blk_open(struct blk_backend *b, const char *path, bool read_only, char *err, size_t errlen)
{
	b->fd = host_open(path, read_only ? O_RDONLY : O_RDWR, HOST_REG | HOST_BLK, err, errlen);
	if (b->fd < 0) {
		int e = b->fd;
		b->fd = -1;
		return e;
	}
	/* A block device's size is not in st_size. */
	struct stat st;
	uint64_t size = 0;
	int r = fstat(b->fd, &st) < 0 ? -errno : 0;
	if (!r && S_ISBLK(st.st_mode))
		r = ioctl(b->fd, BLKGETSIZE64, &size) < 0 ? -errno : 0;
	else if (!r)
		size = (uint64_t)st.st_size;
	if (r) {
		snprintf(err, errlen, "%s: cannot get its size: %s", path, strerror(-r));
		blk_close(b);
		return r;
	}
	if (size == 0 || size % BLK_SECTOR) {
		snprintf(err, errlen, "%s: size %llu is not a non-zero multiple of %d bytes", path,
			 (unsigned long long)size, BLK_SECTOR);
		blk_close(b);
		return -EINVAL;
	}
	b->capacity = size;
	b->read_only = read_only;
	b->mirror = NULL;
	return 0;
}

bool blk_range_ok(const struct blk_backend *b, uint64_t off, uint64_t len, uint64_t block_size)
{
	return block_size && off % block_size == 0 && len % block_size == 0 && off <= b->capacity &&
	       len <= b->capacity - off;
}

int blk_read(struct blk_backend *b, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(b->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) /* the file shrank under us */
			return -EIO;
		p += n, off += (uint64_t)n, len -= (size_t)n;
	}
	return 0;
}

int blk_write(struct blk_backend *b, uint64_t off, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	struct iovec whole = {(void *)buf, len};
	uint64_t at = off;
	if (b->read_only)
		return -EROFS;
	while (len) {
		ssize_t n = pwrite(b->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n, off += (uint64_t)n, len -= (size_t)n;
	}
	struct blk_mirror *m = __atomic_load_n(&b->mirror, __ATOMIC_ACQUIRE);
	if (m)
		blk_mirror_wrote(m, at, &whole, 1);
	return 0;
}

int blk_flush(struct blk_backend *b)
{
	if (fdatasync(b->fd) < 0)
		return -errno;
	struct blk_mirror *m = __atomic_load_n(&b->mirror, __ATOMIC_ACQUIRE);
	if (m)
		blk_mirror_flush(m);
	return 0;
}

void blk_close(struct blk_backend *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}
