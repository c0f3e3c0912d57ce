/* A cache of KVM_GET_SUPPORTED_CPUID.  The call costs ~0.4 ms on nested
 * hosts (each CPUID the kernel runs traps to the outer hypervisor), 40% of
 * ember's start budget, and its answer only changes when the host reboots
 * or the KVM module is reloaded.  So the answer is kept in a file keyed by
 * the boot id and the KVM module's sysfs inode time; any mismatch, short
 * read or bad checksum is a miss, and a miss costs only the ioctl. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vcpu/vcpu.h"

#define CACHE_MAGIC "EMBRCPU1"
#define CACHE_MAX_ENTRIES 256

struct cache_hdr {
	char magic[8];
	char boot_id[40];  /* /proc/sys/kernel/random/boot_id, NUL-padded */
	int64_t kvm_ctime; /* ctime of /sys/module/kvm: changes on reload */
	uint32_t nent;
	uint32_t crc; /* of the entries */
};
_Static_assert(sizeof(struct cache_hdr) == 64, "cache header layout");

/* CRC-32 (IEEE), bitwise: ~10 KiB once per start is nothing. */
static uint32_t crc32(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = 0xffffffff;
	while (len--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320 & -(c & 1));
	}
	return ~c;
}

static int host_key(struct cache_hdr *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, CACHE_MAGIC, 8);
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, h->boot_id, sizeof(h->boot_id) - 1);
	close(fd);
	if (n < 36)
		return -EIO;
	struct stat st;
	if (stat("/sys/module/kvm", &st) < 0)
		return -errno;
	h->kvm_ctime = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
	return 0;
}

static struct kvm_cpuid2 *load(const char *path, const struct cache_hdr *key)
{
	struct {
		struct cache_hdr h;
		struct kvm_cpuid_entry2 e[CACHE_MAX_ENTRIES];
	} *buf = malloc(sizeof(*buf));
	if (!buf)
		return NULL;
	struct kvm_cpuid2 *c = NULL;
	/* O_NONBLOCK: a FIFO at the cache's path must not stop the start;
	 * only a regular file is a cache. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		goto out;
	struct stat st;
	ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, buf, sizeof(*buf)) : -1;
	close(fd);
	if (n < (ssize_t)sizeof(buf->h) || memcmp(buf->h.magic, CACHE_MAGIC, 8) ||
	    (key && memcmp(buf->h.boot_id, key->boot_id, sizeof(key->boot_id))) ||
	    (key && buf->h.kvm_ctime != key->kvm_ctime) || buf->h.nent == 0 ||
	    buf->h.nent > CACHE_MAX_ENTRIES ||
	    (size_t)n != sizeof(buf->h) + buf->h.nent * sizeof(buf->e[0]) ||
	    crc32(buf->e, buf->h.nent * sizeof(buf->e[0])) != buf->h.crc)
		goto out;
	c = malloc(sizeof(*c) + buf->h.nent * sizeof(buf->e[0]));
	if (!c)
		goto out;
	c->nent = buf->h.nent;
	c->padding = 0;
	memcpy(c->entries, buf->e, buf->h.nent * sizeof(buf->e[0]));
out:
	free(buf);
	return c;
}

/* Write to a temp name and rename: readers see the old file or the new
 * one, never a torn one.  Best effort; errors are ignored (it is a cache). */
static void store(const char *path, struct cache_hdr *key, const struct kvm_cpuid2 *c)
{
	char tmp[4096 + 32];
	if (c->nent > CACHE_MAX_ENTRIES ||
	    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp))
		return;
	/* the folder, once: /run/ember by default */
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		mkdir(dir, 0755);
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	size_t len = c->nent * sizeof(c->entries[0]);
	key->nent = c->nent;
	key->crc = crc32(c->entries, len);
	bool ok = write(fd, key, sizeof(*key)) == (ssize_t)sizeof(*key) &&
		  write(fd, c->entries, len) == (ssize_t)len;
	close(fd);
	if (!ok || rename(tmp, path) < 0)
		unlink(tmp);
}

int vcpu_cpuid_cache_valid(const char *path)
{
	struct cache_hdr key;
	int r = host_key(&key);
	if (r)
		return r;
	struct kvm_cpuid2 *c = load(path, &key);
	if (!c)
		return -ESTALE;
	free(c);
	return 0;
}

int vcpu_supported_cpuid_cached(int kvm_fd, const char *cache_path, struct kvm_cpuid2 **out,
				bool *hit)
{
	struct cache_hdr key;
	*hit = false;
	if (!cache_path || !cache_path[0])
		return vcpu_supported_cpuid(kvm_fd, out);
	bool keyed = host_key(&key) == 0;
	/* In a jail there is no /proc or /sys to key on: a cache file there
	 * was put by ember-jailer, which checked it against this host. */
	*out = load(cache_path, keyed ? &key : NULL);
	if (*out) {
		*hit = true;
		return 0;
	}
	int r = vcpu_supported_cpuid(kvm_fd, out);
	if (r == 0 && keyed)
		store(cache_path, &key, *out);
	return r;
}
