/* A migration record that carries a file descriptor (snapshot.h,
 * snap_mig_put_fd / snap_mig_get_hdr_fd): the same-host hand-over sends
 * guest RAM's memfd with MEMF's header over the stream, a unix socket.
 * The fd rides on the header's bytes, so the reader takes them with
 * recvmsg: a read() would drop it. */
#include "snapshot/snap_priv.h"
#include "snapshot/snapshot.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 4 /* room to see (and close) fds beyond the one wanted */

/* A call on fd returned n: whether to make it again (interrupted, or the
 * non-blocking fd was full or empty: waited for ev first). */
static bool again(ssize_t n, int fd, short ev)
{
	if (n >= 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
		return false;
	struct pollfd pf = {.fd = fd, .events = ev};
	if (errno != EINTR)
		(void)!ppoll(&pf, 1, NULL, NULL);
	return true;
}

int snap_mig_put_fd(struct snap_stream *s, uint32_t type, uint64_t a, uint64_t b, int fd, char *err,
		    size_t errlen)
{
	uint8_t hdr[SNAP_MIG_HDR];
	char n[12];
	snap_mig_encode(hdr, type, a, b, NULL, 0);
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	memset(&c, 0, sizeof(c));
	struct iovec iov = {.iov_base = hdr, .iov_len = sizeof(hdr)};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = c.buf,
			     .msg_controllen = sizeof(c.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	for (;;) {
		ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
		if (again(w, s->fd, POLLOUT))
			continue;
		if (w < 0) {
			int e = -errno;
			snap_fail(err, errlen, "stream: byte %" PRIu64 ": writing record %s: %s",
				  s->off, snap_mig_name(type, n), strerror(-e));
			return e;
		}
		s->off += (uint64_t)w;
		/* the fd went with the first bytes; the rest as any record's */
		return (size_t)w == sizeof(hdr)
			   ? 0
			   : snap_stream_write(s, hdr + w, sizeof(hdr) - (size_t)w,
					       "a record header", err, errlen);
	}
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The fds in msg's control data: the first into *fd (if it is -1), the
 * others closed; how many came. */
static unsigned take_fds(struct msghdr *msg, int *fd)
{
	unsigned count = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++, count++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*fd < 0)
				*fd = f;
			else
				close(f);
		}
	}
	return count;
}

int snap_mig_get_hdr_fd(struct snap_stream *s, struct snap_mig_rec *r, int *fd, char *err,
			size_t errlen)
{
	uint8_t hdr[SNAP_MIG_HDR];
	uint64_t at = s->off, have = 0;
	unsigned fds = 0;
	bool trunc = false;
	int e = 0;
	*fd = -1;
	while (have < sizeof(hdr)) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
		} c;
		struct iovec iov = {.iov_base = hdr + have, .iov_len = sizeof(hdr) - have};
		struct msghdr msg = {.msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = c.buf,
				     .msg_controllen = sizeof(c.buf)};
		ssize_t n = recvmsg(s->fd, &msg, MSG_CMSG_CLOEXEC);
		if (again(n, s->fd, POLLIN))
			continue;
		if (n < 0) {
			e = -errno;
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64 ": reading a record header: %s", s->off,
				  strerror(-e));
			break;
		}
		fds += take_fds(&msg, fd);
		trunc |= (msg.msg_flags & MSG_CTRUNC) != 0;
		if (n == 0) {
			e = have ? -EINVAL : -EPIPE;
			if (have)
				snap_fail(err, errlen,
					  "stream: byte %" PRIu64 ": truncated in a record header",
					  s->off);
			else
				snap_fail(err, errlen,
					  "stream: byte %" PRIu64 ": the peer closed the stream",
					  at);
			break;
		}
		have += (uint64_t)n, s->off += (uint64_t)n;
	}
	if (!e)
		e = snap_mig_decode(hdr, at, r, err, errlen);
	if (!e)
		e = snap_mig_crc_check(r, NULL, err, errlen);
	if (!e && (fds > 1 || trunc)) {
		snap_fail(err, errlen,
			  "stream: byte %" PRIu64
			  ": more than one file descriptor came with a record",
			  at);
		e = -EINVAL;
	}
	if (e)
		close_fd(fd);
	return e;
}
