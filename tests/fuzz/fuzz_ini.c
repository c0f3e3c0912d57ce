/* libFuzzer target for the INI reader (config/ini.c over config.c's keys).
 *
 * The input is an INI file.  cfg_parse_ini() reads files by path and takes
 * relative paths from the file's folder, so each input is written to one
 * file in a temporary folder of its own, made once with an absolute path:
 * a relative path in the input comes out starting with it.  The file is
 * parsed over cfg_defaults(), then, if that succeeded, checked with
 * cfg_validate().  The harness checks what callers rely on:
 *   - a refused file: -errno, the config unchanged, and a message that is
 *     NUL-terminated, starts "FILE:LINE: " with LINE a line of the input;
 *   - a parsed one: every string NUL-terminated in its buffer; values in
 *     range (vcpus, memory, cmdline_len == strlen, device counts, names of
 *     [A-Za-z0-9_], tap names, MACs, CIDs); each path absolute (from the
 *     folder) or written so in the file; unused device slots zero; the
 *     same file parsed again on top changes nothing;
 *   - cfg_validate(): 0 with the whole-config rules holding, or a message. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "tests/fuzz/fuzz.h"


static char dir[64], path[96];
static size_t dirlen; /* of dir, with its '/' */
static int fd = -1;   /* path, open for writing all along */
/* ~100 KiB each: static rather than on the stack. */
static struct vm_config before, c, again;

static void cleanup(void)
{
	close(fd);
	unlink(path);
	rmdir(dir);
}

/* In /dev/shm when there is one, and rewritten in place (write_input):
 * ext4 flushes a file truncated to 0 and written again when it is closed
 * (auto_da_alloc), which made each input cost ~1.5 ms. */
static void init_once(void)
{
	if (dir[0])
		return;
	strcpy(dir, access("/dev/shm", W_OK) ? "/tmp/ember-fuzz-ini-XXXXXX"
					     : "/dev/shm/ember-fuzz-ini-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/f.ini", dir);
	dirlen = strlen(dir) + 1;
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	atexit(cleanup);
}

static void write_input(const uint8_t *data, size_t size)
{
	for (size_t at = 0; at < size;) {
		ssize_t n = pwrite(fd, data + at, size - at, (off_t)at);

		CHECK(n > 0 || (n < 0 && errno == EINTR));
		if (n > 0)
			at += (size_t)n;
	}
	CHECK(ftruncate(fd, (off_t)size) == 0);
}

/* A C string that ends inside its buffer. */
static size_t str_in(const char *s, size_t bufsize)
{
	const char *nul = memchr(s, '\0', bufsize);

	CHECK(nul);
	return (size_t)(nul - s);
}

static bool only(const char *s, const char *ok)
{
	return s[strspn(s, ok)] == '\0';
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* A path from the file: none (empty_ok), or taken from the file's folder,
 * or absolute as written in the file. */
static void check_path(const char *p, size_t bufsize, bool empty_ok, const uint8_t *data,
		       size_t size)
{
	size_t n = str_in(p, bufsize);

	if (!n) {
		CHECK(empty_ok);
		return;
	}
	CHECK(p[0] == '/');
	if (!strncmp(p, dir, dirlen - 1) && p[dirlen - 1] == '/' && n > dirlen)
		return;
	CHECK(memmem(data, size, p, n));
}

static void check_dev_name(const char *name)
{
	size_t n = str_in(name, CFG_NAME_MAX + 1);

	CHECK(n >= 1 && n <= CFG_NAME_MAX);
	CHECK(only(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"));
}

static void check_config(const struct vm_config *v, const uint8_t *data, size_t size)
{
	size_t n = str_in(v->name, sizeof(v->name));

	CHECK(n >= 1 && n <= CFG_NAME_MAX);
	CHECK(only(v->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"));
	CHECK(strcmp(v->name, ".") && strcmp(v->name, ".."));
	CHECK(v->vcpus >= 1 && v->vcpus <= CFG_MAX_VCPUS);
	CHECK(v->mem_size >= CFG_MIN_MEM && v->mem_size <= CFG_MAX_MEM);
	CHECK(v->mem_size % 4096 == 0);
	check_path(v->kernel, sizeof(v->kernel), true, data, size);
	check_path(v->initrd, sizeof(v->initrd), true, data, size);
	CHECK(v->cmdline_len <= CFG_CMDLINE_MAX);
	CHECK(str_in(v->cmdline, sizeof(v->cmdline)) == v->cmdline_len);
	str_in(v->serial_out, sizeof(v->serial_out));
	if (strcmp(v->serial_out, "stdout") && strcmp(v->serial_out, "none"))
		check_path(v->serial_out, sizeof(v->serial_out), false, data, size);
	CHECK(v->irqchip == CFG_IRQCHIP_AUTO || v->irqchip == CFG_IRQCHIP_ON ||
	      v->irqchip == CFG_IRQCHIP_OFF);

	CHECK(v->nr_blocks <= CFG_MAX_BLOCKS);
	for (unsigned i = 0; i < CFG_MAX_BLOCKS; i++) {
		const struct cfg_block *b = &v->blocks[i];

		if (i >= v->nr_blocks) {
			CHECK(all_zero(b, sizeof(*b)));
			continue;
		}
		check_dev_name(b->name);
		for (unsigned j = 0; j < i; j++)
			CHECK(strcmp(b->name, v->blocks[j].name));
		check_path(b->path, sizeof(b->path), true, data, size);
	}
	CHECK(v->nr_nets <= CFG_MAX_NETS);
	for (unsigned i = 0; i < CFG_MAX_NETS; i++) {
		const struct cfg_net *t = &v->nets[i];
		static const uint8_t zero[6];

		if (i >= v->nr_nets) {
			CHECK(all_zero(t, sizeof(*t)));
			continue;
		}
		check_dev_name(t->name);
		for (unsigned j = 0; j < i; j++)
			CHECK(strcmp(t->name, v->nets[j].name));
		n = str_in(t->tap, sizeof(t->tap));
		CHECK(n <= CFG_IFNAME_MAX);
		CHECK(strcmp(t->tap, ".") && strcmp(t->tap, ".."));
		for (size_t k = 0; k < n; k++) {
			unsigned char ch = (unsigned char)t->tap[k];

			CHECK(ch >= 0x20 && ch != 0x7f && !strchr(" /:%", ch));
		}
		if (t->has_mac)
			CHECK(!(t->mac[0] & 1) && memcmp(t->mac, zero, 6));
		else
			CHECK(!memcmp(t->mac, zero, 6));
	}

	check_path(v->vsock.uds, sizeof(v->vsock.uds), true, data, size);
	CHECK(strlen(v->vsock.uds) <= 107 - 11); /* room for "_PORT" in sun_path */
	if (v->vsock.enabled)
		CHECK(!v->vsock.cid || (v->vsock.cid >= 3 && v->vsock.cid <= 0xfffffffeu));
	else
		CHECK(!v->vsock.cid && !v->vsock.uds[0]);
}

/* What cfg_validate() promises on 0. */
static void check_valid(const struct vm_config *v)
{
	CHECK(v->kernel[0]);
	for (unsigned i = 0; i < v->nr_blocks; i++)
		CHECK(v->blocks[i].path[0]);
	for (unsigned i = 0; i < v->nr_nets; i++)
		CHECK(v->nets[i].tap[0]);
	if (v->vsock.enabled)
		CHECK(v->vsock.cid && v->vsock.uds[0]);
}

/* Lines as a reader of the file counts them. */
static unsigned long count_lines(const uint8_t *data, size_t size)
{
	unsigned long n = 0;

	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n + (size && data[size - 1] != '\n');
}

/* "FILE:LINE: why", LINE one of the input's.  The file is always there
 * and readable, so never "FILE: cannot ...". */
static void check_ini_error(const char *err, const uint8_t *data, size_t size)
{
	size_t plen = strlen(path), n = str_in(err, CFG_ERR_MAX);
	unsigned long line = 0;
	const char *s;

	CHECK(n > 0);
	CHECK(!strncmp(err, path, plen) && err[plen] == ':');
	s = err + plen + 1;
	CHECK(*s >= '1' && *s <= '9');
	for (; *s >= '0' && *s <= '9' && line <= size + 1; s++)
		line = line * 10 + (unsigned long)(*s - '0');
	CHECK(s[0] == ':' && s[1] == ' ' && s[2]);
	if (line > count_lines(data, size)) {
		fprintf(stderr, "line %lu of %lu: %s\n", line, count_lines(data, size), err);
		CHECK(line <= count_lines(data, size));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CFG_ERR_MAX];
	int rc;

	init_once();
	write_input(data, size);
	cfg_defaults(&c);
	before = c;
	memset(err, 0x5a, sizeof(err));
	rc = cfg_parse_ini(path, &c, err, sizeof(err));
	if (rc) {
		CHECK(rc < 0);
		check_ini_error(err, data, size);
		CHECK(!memcmp(&c, &before, sizeof(c))); /* a refused file changes nothing */
		return 0;
	}
	check_config(&c, data, size);

	/* Once more on top: the same keys to the same values, the same
	 * devices found by name. */
	again = c;
	memset(err, 0x5a, sizeof(err));
	rc = cfg_parse_ini(path, &again, err, sizeof(err));
	if (rc)
		fprintf(stderr, "parsed once, not twice: %s\n", err);
	CHECK(rc == 0);
	CHECK(!memcmp(&again, &c, sizeof(c)));

	memset(err, 0x5a, sizeof(err));
	rc = cfg_validate(&c, err, sizeof(err));
	if (rc) {
		CHECK(rc == -EINVAL);
		CHECK(str_in(err, sizeof(err)) > 0);
	} else {
		check_valid(&c);
	}
	return 0;
}
