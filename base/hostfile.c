/* host_open(): user-named paths, opened without blocking (hostfile.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/hostfile.h"

static const struct {
	unsigned kind;
	mode_t fmt;
	const char *name;
} kinds_table[] = {
    {HOST_REG, S_IFREG, "a regular file"},
    {HOST_BLK, S_IFBLK, "a block device"},
    {HOST_CHR, S_IFCHR, "a character device"},
    {HOST_FIFO, S_IFIFO, "a FIFO"},
    {0, S_IFDIR, "a directory"},
    {0, S_IFSOCK, "a socket"},
    {0, S_IFLNK, "a symbolic link"}, /* only with O_NOFOLLOW */
};
#define NR_KINDS (sizeof(kinds_table) / sizeof(kinds_table[0]))

static const char *fmt_name(mode_t mode)
{
	for (unsigned i = 0; i < NR_KINDS; i++)
		if ((mode & S_IFMT) == kinds_table[i].fmt)
			return kinds_table[i].name;
	return "an unknown kind of file";
}

/* Between the i-th of n names: "a, b or c". */
static const char *separator(unsigned i, unsigned n)
{
	return i == 0 ? "" : i + 1 == n ? " or " : ", ";
}

/* 0 when st is one of kinds; else -EINVAL and "PATH: is a FIFO, not a
 * regular file or a block device". */
static int check_kind(const char *path, const struct stat *st, unsigned kinds, char *err,
		      size_t errlen)
{
	const char *wanted[NR_KINDS];
	unsigned n = 0;
	for (unsigned i = 0; i < NR_KINDS; i++) {
		if (!(kinds & kinds_table[i].kind))
			continue;
		if ((st->st_mode & S_IFMT) == kinds_table[i].fmt)
			return 0;
		wanted[n++] = kinds_table[i].name;
	}
	int at = snprintf(err, errlen, "%s: is %s, not ", path, fmt_name(st->st_mode));
	for (unsigned i = 0; i < n && at >= 0 && (size_t)at < errlen; i++)
		at += snprintf(err + at, errlen - (size_t)at, "%s%s", separator(i, n), wanted[i]);
	return -EINVAL;
}

static int fail(const char *path, int e, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: %s", path, strerror(e));
	return -e;
}

int host_open(const char *path, int flags, unsigned kinds, char *err, size_t errlen)
{
	struct stat st;
	int r = flags & O_NOFOLLOW ? lstat(path, &st) : stat(path, &st);
	if (r < 0 && !(errno == ENOENT && (flags & O_CREAT)))
		return fail(path, errno, err, errlen);
	if (r == 0 && (r = check_kind(path, &st, kinds, err, errlen)))
		return r;

	int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		int e = errno;
		if (e == ENXIO && (kinds & HOST_FIFO) && r == 0 && S_ISFIFO(st.st_mode)) {
			snprintf(err, errlen, "%s: is a FIFO with no reader", path);
			return -e;
		}
		return fail(path, e, err, errlen);
	}
	if (fstat(fd, &st) < 0) {
		r = fail(path, errno, err, errlen);
	} else if (!(r = check_kind(path, &st, kinds, err, errlen)) && !(flags & O_NONBLOCK) &&
		   fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		r = fail(path, errno, err, errlen);
	}
	if (r) {
		close(fd);
		return r;
	}
	return fd;
}
