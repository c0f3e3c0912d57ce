/* Tap backend: one host tap interface, opened through /dev/net/tun. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/backend.h"

int tap_open(struct tap_backend *t, const char *name, char *err, size_t errlen)
{
	struct ifreq ifr;
	t->fd = -1;
	if (strlen(name) >= sizeof(ifr.ifr_name) || !name[0]) {
		snprintf(err, errlen, "tap '%s': not a valid interface name", name);
		return -EINVAL;
	}
	/* As solo5-hvt: the interface must exist and be up.  TUNSETIFF would
	 * quietly create a new, unconfigured one (a typo then "works" and
	 * every frame vanishes). */
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock >= 0) {
		memset(&ifr, 0, sizeof(ifr));
		memcpy(ifr.ifr_name, name, strlen(name));
		int r = ioctl(sock, SIOCGIFFLAGS, &ifr);
		int e = errno;
		close(sock);
		if (r < 0) {
			snprintf(err, errlen, "tap %s: %s%s", name, strerror(e),
				 e == ENODEV ? " (create it first: ip tuntap add dev NAME mode tap)"
					     : "");
			return e == ENODEV ? -ENOENT : -e;
		}
		if (!(ifr.ifr_flags & IFF_UP)) {
			snprintf(err, errlen, "tap %s: interface is down (ip link set %s up)", name,
				 name);
			return -ENETDOWN;
		}
	}
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "tap %s: /dev/net/tun: %s", name, strerror(e));
		return -e;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		snprintf(err, errlen, "tap %s: cannot attach: %s%s", name, strerror(e),
			 e == EBUSY   ? " (another process holds it)"
			 : e == EPERM ? " (needs CAP_NET_ADMIN, or a tap owned by this user)"
				      : "");
		close(fd);
		return -e;
	}
	t->fd = fd;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

ssize_t tap_read(struct tap_backend *t, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = read(t->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

int tap_write(struct tap_backend *t, const void *buf, size_t len)
{
	for (;;) {
		ssize_t n = write(t->fd, buf, len);
		if (n == (ssize_t)len)
			return 0;
		if (n >= 0)
			return -EIO;
		if (errno != EINTR)
			return -errno;
	}
}

void tap_close(struct tap_backend *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

void tap_random_mac(uint8_t mac[6])
{
	if (getrandom(mac, 6, 0) != 6)
		memcpy(mac, "\x02\x00\x00\x00\x00\x01", 6);
	mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
}

int tap_mtu(const char *name, unsigned *mtu)
{
	struct ifreq ifr;
	if (strlen(name) >= sizeof(ifr.ifr_name))
		return -EINVAL;
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, name, strlen(name));
	int r = ioctl(sock, SIOCGIFMTU, &ifr) < 0 ? -errno : 0;
	close(sock);
	if (!r)
		*mtu = (unsigned)ifr.ifr_mtu;
	return r;
}
