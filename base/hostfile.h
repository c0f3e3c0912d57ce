/* Opening a path the user named: a kernel, an initrd, a disk image, the
 * serial output file, a snapshot's files.  A plain open(2) of a FIFO
 * waits for the other end (forever, if nobody comes), and of a character
 * device may do what the device does on open; neither is what a user
 * meant by "the kernel" or "the disk".  host_open() never blocks and
 * hands back only the kinds of file its caller can use. */
#ifndef EMBER_HOSTFILE_H
#define EMBER_HOSTFILE_H

#include <stddef.h>

/* The kinds of file a caller takes (OR them). */
#define HOST_REG 0x1u  /* a regular file */
#define HOST_BLK 0x2u  /* a block device (drives, as QEMU and Firecracker take them) */
#define HOST_CHR 0x4u  /* a character device (/dev/null, a terminal) */
#define HOST_FIFO 0x8u /* a FIFO: opened O_NONBLOCK, so a writer needs a reader there already */

/* Open path as open(path, flags | O_CLOEXEC, 0644) would, if it is one of
 * `kinds` (it must be at least one), and never block.  The path is
 * stat()ed first (lstat() with O_NOFOLLOW): a kind not asked for is
 * refused before any open, so a FIFO's writer is not woken and a device's
 * open has no effect.  The open itself adds O_NONBLOCK; what it opened is
 * checked again with fstat() (the path may have changed in between, or
 * been made by O_CREAT), and O_NONBLOCK is cleared again unless flags had
 * it.  Returns the fd, or -errno with "PATH: reason" in err:
 *   -EINVAL  another kind: "PATH: is a FIFO, not a regular file or a block device"
 *   -ENXIO   a FIFO (HOST_FIFO) opened for writing with no reader: "PATH: is a FIFO
 *            with no reader"
 *   -E...    whatever stat() or open() said: "PATH: No such file or directory"
 * Syscalls: newfstatat, openat, fstat (newfstatat), fcntl; callers that
 * run after the drop phase need them in their seccomp role. */
__attribute__((warn_unused_result)) int host_open(const char *path, int flags, unsigned kinds,
						  char *err, size_t errlen);

#endif
