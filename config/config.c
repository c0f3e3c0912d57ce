/* VM definitions from INI files and the command line.  One table of keys
 * serves both spellings: cfg_set() is the only validator of values, and
 * cfg_parse_ini() adds what only a file has (FILE:LINE, its folder for
 * relative paths, duplicate keys and sections).  Sizes and durations are
 * parsed in units.c. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/keys.h"
#include "config/units.h"

#define PAGE_SIZE 4096u

static const struct {
	const char *name; /* the section, or its part before the '.' */
	const char *what; /* devices: "block device" */
	unsigned max;	  /* devices: how many there may be; 0 for the others */
} kinds[NKINDS] = {
    [KIND_VM] = {"vm", NULL, 0},
    [KIND_SERIAL] = {"serial", NULL, 0},
    [KIND_BLOCK] = {"block", "block device", CFG_MAX_BLOCKS},
    [KIND_NET] = {"net", "net device", CFG_MAX_NETS},
    [KIND_VSOCK] = {"vsock", NULL, 0},
    [KIND_RNG] = {"rng", NULL, 0},
};

/* What a setter writes: the VM, and in a device section that device. */
struct target {
	struct vm_config *c;
	struct cfg_block *blk;
	struct cfg_net *net;
	int arg; /* the key's own (struct key.arg) */
};

struct key {
	enum kind kind;
	const char *name;
	int (*set)(const struct target *t, const char *v, const struct base *b, char *err,
		   size_t errlen);
	int arg; /* for setters that serve several keys */
};

__attribute__((format(printf, 3, 4))) int cfg_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- one setter per key ---- */

/* Memory checks shared by cfg_set and cfg_validate.  what: how the message
 * names the value (as written, or the field and its value). */
static int check_mem(uint64_t b, const char *what, char *err, size_t errlen)
{
	char lim[32];

	if (b < CFG_MIN_MEM) {
		units_fmt_size(lim, sizeof(lim), CFG_MIN_MEM);
		return cfg_fail(err, errlen, "%s is below the minimum %s", what, lim);
	}
	if (b > CFG_MAX_MEM) {
		units_fmt_size(lim, sizeof(lim), CFG_MAX_MEM);
		return cfg_fail(err, errlen, "%s is above the maximum %s", what, lim);
	}
	if (b % PAGE_SIZE)
		return cfg_fail(err, errlen, "%s is not a multiple of 4K", what);
	return 0;
}

/* Jail ids and file names are made from the name, so it must be one
 * harmless path component. */
static int set_name(const struct target *t, const char *v, const struct base *b, char *err,
		    size_t errlen)
{
	static const char ok[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
	size_t n = strlen(v), span = strspn(v, ok);

	if (n < 1 || n > CFG_NAME_MAX)
		return cfg_fail(err, errlen, "must be 1..%d characters, not %zu", CFG_NAME_MAX, n);
	if (span != n)
		return cfg_fail(err, errlen, "\"%.64s\" has '%c': use only A-Z a-z 0-9 _ . -", v,
				v[span]);
	if (!strcmp(v, ".") || !strcmp(v, ".."))
		return cfg_fail(err, errlen, "\"%s\" cannot be a name: it means a folder", v);
	memcpy(t->c->name, v, n + 1);
	return 0;
}

static int set_vcpus(const struct target *t, const char *v, const struct base *b, char *err,
		     size_t errlen)
{
	bool overflow = false;
	const char *p = v;
	uint64_t n;

	if (!units_digits(&p, &n, &overflow) || *p)
		return cfg_fail(err, errlen, "\"%.64s\" is not a number: must be 1..%d", v,
				CFG_MAX_VCPUS);
	if (overflow || n < 1 || n > CFG_MAX_VCPUS)
		return cfg_fail(err, errlen, "\"%.64s\" is out of range: must be 1..%d", v,
				CFG_MAX_VCPUS);
	t->c->vcpus = (unsigned)n;
	return 0;
}

static int set_memory(const struct target *t, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	char what[80], lim[32];
	uint64_t bytes;
	int rc = units_parse_size(v, &bytes);

	snprintf(what, sizeof(what), "\"%.64s\"", v);
	if (rc == -ERANGE) {
		units_fmt_size(lim, sizeof(lim), CFG_MAX_MEM);
		return cfg_fail(err, errlen, "%s is too large (at most %s)", what, lim);
	}
	if (rc)
		return cfg_fail(err, errlen, "%s is not a size (use e.g. 64M, 1G)", what);
	rc = check_mem(bytes, what, err, errlen);
	if (rc)
		return rc;
	t->c->mem_size = bytes;
	return 0;
}

/* Store a path, taking a relative one from b's folder.  An empty value
 * is refused unless empty_ok (initrd: "" = none). */
static int set_path(char dst[CFG_PATH_MAX], const char *v, const struct base *b, bool empty_ok,
		    char *err, size_t errlen)
{
	size_t dirlen = (*v && *v != '/') ? b->dirlen : 0;
	size_t n = dirlen + strlen(v);

	if (!*v && !empty_ok)
		return cfg_fail(err, errlen, "empty path");
	if (n >= CFG_PATH_MAX)
		return cfg_fail(err, errlen, "path is %zu bytes, longer than %d", n,
				CFG_PATH_MAX - 1);
	memcpy(dst, b->dir, dirlen);
	memcpy(dst + dirlen, v, n - dirlen + 1);
	return 0;
}

static int set_kernel(const struct target *t, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	return set_path(t->c->kernel, v, b, false, err, errlen);
}

static int set_initrd(const struct target *t, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	return set_path(t->c->initrd, v, b, true, err, errlen);
}

/* Set the cmdline to v[0..n), or extend it (an INI continuation line) with
 * one space between, once the whole is known to fit. */
int cfg_put_cmdline(struct vm_config *c, bool extend, const char *v, size_t n, char *err,
		    size_t errlen)
{
	size_t at = extend && c->cmdline_len ? c->cmdline_len + 1 : 0;

	if (at + n > CFG_CMDLINE_MAX)
		return cfg_fail(err, errlen, "%zu bytes, longer than %d", at + n, CFG_CMDLINE_MAX);
	if (at)
		c->cmdline[at - 1] = ' ';
	memcpy(c->cmdline + at, v, n);
	c->cmdline[at + n] = '\0';
	c->cmdline_len = at + n;
	return 0;
}

/* Verbatim: quotes and inner blanks belong to the kernel. */
static int set_cmdline(const struct target *t, const char *v, const struct base *b, char *err,
		       size_t errlen)
{
	return cfg_put_cmdline(t->c, false, v, strlen(v), err, errlen);
}

static int set_timeout(const struct target *t, const char *v, const struct base *b, char *err,
		       size_t errlen)
{
	uint64_t ms;
	int rc = cfg_parse_duration(v, &ms);

	if (rc == -ERANGE)
		return cfg_fail(err, errlen, "\"%.64s\" is too long", v);
	if (rc)
		return cfg_fail(err, errlen,
				"\"%.64s\" is not a duration (use e.g. 30, 2.5, 500ms, 10s, 5m)",
				v);
	t->c->timeout_ms = ms;
	return 0;
}

static int set_irqchip(const struct target *t, const char *v, const struct base *b, char *err,
		       size_t errlen)
{
	if (!strcmp(v, "auto"))
		t->c->irqchip = CFG_IRQCHIP_AUTO;
	else if (!strcmp(v, "on"))
		t->c->irqchip = CFG_IRQCHIP_ON;
	else if (!strcmp(v, "off"))
		t->c->irqchip = CFG_IRQCHIP_OFF;
	else
		return cfg_fail(err, errlen, "\"%.64s\" is not one of auto, on, off", v);
	return 0;
}

/* "stdout" and "none" are words, anything else a file ("./none" for a
 * file of that name). */
static int set_output(const struct target *t, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	static const struct base here = {"", 0};

	if (!*v)
		return cfg_fail(err, errlen, "empty (use stdout, none or a file path)");
	if (!strcmp(v, "stdout") || !strcmp(v, "none"))
		b = &here;
	return set_path(t->c->serial_out, v, b, false, err, errlen);
}

/* ---- devices: [block.NAME] and [net.NAME] ---- */

static int set_block_path(const struct target *t, const char *v, const struct base *b, char *err,
			  size_t errlen)
{
	return set_path(t->blk->path, v, b, false, err, errlen);
}

/* ASCII, case-insensitive: strcasecmp would follow the locale. */
static bool word_is(const char *v, const char *word)
{
	for (; *v && *word; v++, word++)
		if (units_lower(*v) != *word)
			return false;
	return *v == *word;
}

static int parse_bool(const char *v, bool *out, char *err, size_t errlen)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (word_is(v, yes[i]) || word_is(v, no[i])) {
			*out = word_is(v, yes[i]);
			return 0;
		}
	}
	return cfg_fail(err, errlen,
			"\"%.64s\" is not a boolean (use true/false, yes/no, on/off or 1/0)", v);
}

static int set_read_only(const struct target *t, const char *v, const struct base *b, char *err,
			 size_t errlen)
{
	return parse_bool(v, &t->blk->read_only, err, errlen);
}

static int set_direct(const struct target *t, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	return parse_bool(v, &t->blk->direct, err, errlen);
}

/* Solo5's rule (hvt_module_blk.c): a power of two, at least 512; its
 * block_size is 16 bits, so at most 32768. */
static int set_sector_size(const struct target *t, const char *v, const struct base *b,
			   char *err, size_t errlen)
{
	bool overflow = false;
	const char *p = v;
	uint64_t n;

	if (!units_digits(&p, &n, &overflow) || *p || overflow || n < CFG_SECTOR_MIN ||
	    n > CFG_SECTOR_MAX || (n & (n - 1)))
		return cfg_fail(err, errlen,
				"\"%.64s\": the sector size must be a power of two, %d..%d", v,
				CFG_SECTOR_MIN, CFG_SECTOR_MAX);
	t->blk->sector_size = (uint32_t)n;
	return 0;
}

static int set_dumpcore(const struct target *t, const char *v, const struct base *b, char *err,
			size_t errlen)
{
	return set_path(t->c->dumpcore, v, b, true, err, errlen);
}

/* A whole decimal number that fits 64 bits. */
static bool parse_count(const char *v, uint64_t *n)
{
	bool overflow = false;
	const char *p = v;
	return units_digits(&p, n, &overflow) && !*p && !overflow;
}

/* ---- rate limiters: one setter, key.arg = limiter * 8 + field ---- */

enum { RATE_BLOCK, RATE_NET_RX, RATE_NET_TX, RATE_RNG };
enum { F_BW_SIZE, F_BW_BURST, F_BW_REFILL, F_OPS_SIZE, F_OPS_BURST, F_OPS_REFILL };
#define RATE(limiter, field) ((limiter) * 8 + (field))

static int set_rate(const struct target *t, const char *v, const struct base *b, char *err,
		    size_t errlen)
{
	int field = t->arg % 8;
	struct cfg_rate *r = t->arg / 8 == RATE_BLOCK	 ? &t->blk->rate
			     : t->arg / 8 == RATE_NET_RX ? &t->net->rx_rate
			     : t->arg / 8 == RATE_NET_TX ? &t->net->tx_rate
							 : &t->c->rng.rate;
	uint64_t *dst[] = {&r->bw_size,	 &r->bw_burst,	&r->bw_refill_ms,
			   &r->ops_size, &r->ops_burst, &r->ops_refill_ms};
	uint64_t x;
	int rc;

	if (field == F_BW_REFILL || field == F_OPS_REFILL) {
		rc = cfg_parse_duration(v, &x);
		if (rc)
			return cfg_fail(err, errlen,
					"\"%.64s\" is not a duration (use e.g. 100ms, 1s, 2.5)", v);
	} else if (field == F_OPS_SIZE || field == F_OPS_BURST) {
		if (!parse_count(v, &x))
			return cfg_fail(err, errlen, "\"%.64s\" is not a count of operations", v);
	} else {
		/* Bytes: a bare number is bytes here, not MiB as for memory. */
		rc = parse_count(v, &x) ? 0 : units_parse_size(v, &x);
		if (rc)
			return cfg_fail(err, errlen, "\"%.64s\" is not a size in bytes (e.g. "
						     "1048576, 512K, 10M)", v);
	}
	*dst[field] = x;
	t->c->rng.enabled |= t->arg / 8 == RATE_RNG;
	return 0;
}

/* ---- [vsock] and [rng] ---- */

static int set_vsock_cid(const struct target *t, const char *v, const struct base *b, char *err,
			 size_t errlen)
{
	uint64_t n;

	/* 0-2 are the hypervisor, local and host; 2^32-1 is VMADDR_CID_ANY. */
	if (!parse_count(v, &n) || n < 3 || n > 0xfffffffeULL)
		return cfg_fail(err, errlen, "\"%.64s\" is not a guest CID: must be 3..4294967294",
				v);
	t->c->vsock.cid = (uint32_t)n;
	t->c->vsock.enabled = true;
	return 0;
}

static int set_vsock_uds(const struct target *t, const char *v, const struct base *b, char *err,
			 size_t errlen)
{
	/* sun_path is 108 bytes, and guest-initiated connections go to
	 * "<uds>_<port>": room for "_4294967295". */
	int rc = set_path(t->c->vsock.uds, v, b, false, err, errlen);
	if (!rc && strlen(t->c->vsock.uds) > 107 - 11)
		return cfg_fail(err, errlen, "path is %zu bytes: a unix socket path (with "
					     "\"_PORT\" added) must stay within 107",
				strlen(t->c->vsock.uds));
	if (!rc)
		t->c->vsock.enabled = true;
	return rc;
}

/* A host interface name as the kernel's dev_valid_name() takes it, less
 * '%', which TUNSETIFF would expand into a new interface's name: ember
 * attaches to a tap that exists, it does not make one. */
static int set_tap(const struct target *t, const char *v, const struct base *b, char *err,
		   size_t errlen)
{
	size_t n = strlen(v);

	if (!n)
		return cfg_fail(err, errlen, "empty (the name of a host tap interface)");
	if (n > CFG_IFNAME_MAX)
		return cfg_fail(err, errlen, "\"%.64s\" is %zu characters, longer than %d", v, n,
				CFG_IFNAME_MAX);
	if (!strcmp(v, ".") || !strcmp(v, ".."))
		return cfg_fail(err, errlen, "\"%s\" is not an interface name", v);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch < 0x20 || ch == 0x7f)
			return cfg_fail(err, errlen,
					"has a control character (0x%02x): not an interface name",
					ch);
		if (ch == ' ' || ch == '/' || ch == ':' || ch == '%')
			return cfg_fail(err, errlen,
					"\"%s\" has '%c': not allowed in an interface name", v, ch);
	}
	memcpy(t->net->tap, v, n + 1);
	return 0;
}

static int hex_digit(char ch)
{
	ch = units_lower(ch);
	if (units_is_digit(ch))
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Exactly "xx:xx:xx:xx:xx:xx", hex in either case. */
static bool parse_mac(const char *s, uint8_t mac[6])
{
	for (int i = 0; i < 6; i++, s += 3) {
		int hi = hex_digit(s[0]), lo = hi < 0 ? -1 : hex_digit(s[1]);

		if (lo < 0 || s[2] != (i < 5 ? ':' : '\0'))
			return false;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* A guest's own address must be unicast (multicast is the low bit of the
 * first octet, broadcast included) and not all zero. */
static int set_mac(const struct target *t, const char *v, const struct base *b, char *err,
		   size_t errlen)
{
	uint8_t mac[6];

	if (!parse_mac(v, mac))
		return cfg_fail(
		    err, errlen,
		    "\"%.64s\" is not a MAC address (use six hex pairs: 02:00:00:00:00:01)", v);
	if (mac[0] & 1)
		return cfg_fail(err, errlen,
				"\"%s\" is a multicast address (low bit of the first octet set): a "
				"device needs a unicast one, e.g. 02:00:00:00:00:01",
				v);
	if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return cfg_fail(err, errlen, "\"%s\" is all zero: not a usable address", v);
	memcpy(t->net->mac, mac, sizeof(mac));
	t->net->has_mac = true;
	return 0;
}

/* Order within a section is the order of the "known:" list in messages.
 * Index = bit in struct seen's words. */
/* clang-format off */
static const struct key keys[] = {
	{KIND_VM, "name", set_name, 0},
	{KIND_VM, "vcpus", set_vcpus, 0},
	{KIND_VM, "memory", set_memory, 0},
	{KIND_VM, "kernel", set_kernel, 0},
	{KIND_VM, "initrd", set_initrd, 0},
	{KIND_VM, "cmdline", set_cmdline, 0},
	{KIND_VM, "timeout", set_timeout, 0},
	{KIND_VM, "irqchip", set_irqchip, 0},
	{KIND_VM, "dumpcore", set_dumpcore, 0},
	{KIND_SERIAL, "output", set_output, 0},
	{KIND_BLOCK, "path", set_block_path, 0},
	{KIND_BLOCK, "read_only", set_read_only, 0},
	{KIND_BLOCK, "direct", set_direct, 0},
	{KIND_BLOCK, "sector_size", set_sector_size, 0},
#define RATE_KEYS(kind, prefix, limiter) \
	{kind, prefix "bandwidth_size", set_rate, RATE(limiter, F_BW_SIZE)}, \
	{kind, prefix "bandwidth_burst", set_rate, RATE(limiter, F_BW_BURST)}, \
	{kind, prefix "bandwidth_refill", set_rate, RATE(limiter, F_BW_REFILL)}, \
	{kind, prefix "ops_size", set_rate, RATE(limiter, F_OPS_SIZE)}, \
	{kind, prefix "ops_burst", set_rate, RATE(limiter, F_OPS_BURST)}, \
	{kind, prefix "ops_refill", set_rate, RATE(limiter, F_OPS_REFILL)}
	RATE_KEYS(KIND_BLOCK, "", RATE_BLOCK),
	{KIND_NET, "tap", set_tap, 0},
	{KIND_NET, "mac", set_mac, 0},
	RATE_KEYS(KIND_NET, "rx_", RATE_NET_RX),
	RATE_KEYS(KIND_NET, "tx_", RATE_NET_TX),
	{KIND_VSOCK, "cid", set_vsock_cid, 0},
	{KIND_VSOCK, "uds", set_vsock_uds, 0},
	RATE_KEYS(KIND_RNG, "", RATE_RNG),
};
/* clang-format on */
#define NKEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(NKEYS <= 64, "struct seen's words are uint64_t");

/* Solo5 manifest names: [A-Za-z0-9_], so also safe in messages and as
 * parts of file or jail names. */
static int check_dev_name(enum kind k, const char *name, char *err, size_t errlen)
{
	static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
	size_t n = strlen(name), span = strspn(name, ok);

	if (!n)
		return cfg_fail(err, errlen, "no device name (use [%s.NAME])", kinds[k].name);
	if (n > CFG_NAME_MAX)
		return cfg_fail(err, errlen, "device name must be 1..%d characters, not %zu",
				CFG_NAME_MAX, n);
	if (span != n)
		return cfg_fail(err, errlen,
				"device name \"%.64s\" has '%c': use only A-Z a-z 0-9 _", name,
				name[span]);
	return 0;
}

/* 0; -ENOENT for a section of no known kind; -EINVAL for a device
 * section without a good name.  err says why. */
int cfg_parse_section(const char *s, struct section *sec, char *err, size_t errlen)
{
	const char *dot = strchr(s, '.');
	size_t klen = dot ? (size_t)(dot - s) : strlen(s), len = 0;
	char list[160];

	/* [drive.NAME] is Firecracker's word for [block.NAME]. */
	if (klen == 5 && !strncmp(s, "drive", 5) && dot) {
		sec->kind = KIND_BLOCK;
		sec->dev = dot + 1;
		return check_dev_name(sec->kind, sec->dev, err, errlen);
	}
	for (int k = 0; k < NKINDS; k++) {
		if (strlen(kinds[k].name) != klen || strncmp(kinds[k].name, s, klen))
			continue;
		if (!kinds[k].max && dot)
			break; /* [vm.x] */
		sec->kind = (enum kind)k;
		sec->dev = kinds[k].max ? (dot ? dot + 1 : "") : NULL;
		return sec->dev ? check_dev_name(sec->kind, sec->dev, err, errlen) : 0;
	}
	list[0] = '\0';
	for (int k = 0; k < NKINDS && len < sizeof(list); k++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s[%s%s]", k ? ", " : "",
					kinds[k].name, kinds[k].max ? ".NAME" : "");
	if (len < sizeof(list))
		snprintf(list + len, sizeof(list) - len, ", [drive.NAME]");
	cfg_fail(err, errlen, "unknown section [%.80s] (known: %s)", s, list);
	return -ENOENT;
}

static unsigned *dev_count(struct vm_config *c, enum kind k)
{
	return k == KIND_BLOCK ? &c->nr_blocks : &c->nr_nets;
}

static char *dev_name(struct vm_config *c, enum kind k, unsigned i)
{
	return k == KIND_BLOCK ? c->blocks[i].name : c->nets[i].name;
}

/* The index of device name (checked) of kind k, added with nothing set if
 * there is none yet (*added), or -EINVAL when there are already as many
 * as may be. */
int cfg_dev_get(struct vm_config *c, enum kind k, const char *name, bool *added, char *err,
		size_t errlen)
{
	unsigned *nr = dev_count(c, k);

	*added = false;
	for (unsigned i = 0; i < *nr && i < kinds[k].max; i++)
		if (!strcmp(dev_name(c, k, i), name))
			return (int)i;
	if (*nr >= kinds[k].max)
		return cfg_fail(err, errlen, "too many %ss (at most %u)", kinds[k].what,
				kinds[k].max);
	if (k == KIND_BLOCK)
		memset(&c->blocks[*nr], 0, sizeof(c->blocks[0]));
	else
		memset(&c->nets[*nr], 0, sizeof(c->nets[0]));
	strcpy(dev_name(c, k, *nr), name);
	*added = true;
	return (int)(*nr)++;
}

/* Take back the device cfg_dev_get() has just added. */
static void dev_drop_last(struct vm_config *c, enum kind k)
{
	unsigned *nr = dev_count(c, k);

	(*nr)--;
	if (k == KIND_BLOCK)
		memset(&c->blocks[*nr], 0, sizeof(c->blocks[0]));
	else
		memset(&c->nets[*nr], 0, sizeof(c->nets[0]));
}

/* ---- one table for both spellings ---- */

static int unknown_key(enum kind k, char *err, size_t errlen)
{
	char list[512];
	size_t len = 0;

	list[0] = '\0';
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].kind == k && len < sizeof(list))
			len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
						len ? ", " : "", keys[i].name);
	return cfg_fail(err, errlen, "unknown key (known: %s)", list);
}

/* The one setter for both spellings.  A device section's device is added
 * on its first key, and taken back if that key's value is refused. */
int cfg_set_key(struct vm_config *c, const char *section, const char *name, const char *value,
		const struct base *b, struct seen *seen, char *err, size_t errlen)
{
	struct target t = {.c = c};
	const struct key *key = NULL;
	uint64_t *bits = NULL, bit = 0;
	struct section sec;
	bool added = false;
	int rc, i = 0;

	if (!*section)
		return cfg_fail(err, errlen, "not in a section (put it under [vm] or [serial])");
	/* emberd's own section (docs/ha.md, "VM files"): one file serves both
	 * ember and its supervisor, and emberd checks these keys itself. */
	if (!strcmp(section, "emberd"))
		return 0;
	if (cfg_parse_section(section, &sec, err, errlen))
		return -EINVAL;
	for (size_t j = 0; j < NKEYS && !key; j++)
		if (keys[j].kind == sec.kind && !strcmp(keys[j].name, name)) {
			key = &keys[j];
			bit = 1ULL << j;
		}
	if (!key)
		return unknown_key(sec.kind, err, errlen);
	if (sec.dev) {
		i = cfg_dev_get(c, sec.kind, sec.dev, &added, err, errlen);
		if (i < 0)
			return i;
		if (sec.kind == KIND_BLOCK)
			t.blk = &c->blocks[i];
		else
			t.net = &c->nets[i];
	}
	if (seen) {
		bits = !sec.dev			? &seen->vm
		       : sec.kind == KIND_BLOCK ? &seen->blocks[i]
						: &seen->nets[i];
		if (*bits & bit)
			return cfg_fail(err, errlen, "duplicate key");
	}
	t.arg = key->arg;
	rc = key->set(&t, value, b, err, errlen);
	if (rc && added)
		dev_drop_last(c, sec.kind);
	if (rc == 0 && bits)
		*bits |= bit;
	return rc;
}

void cfg_defaults(struct vm_config *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->name, "ember");
	c->vcpus = 1;
	c->mem_size = CFG_DEFAULT_MEM;
	strcpy(c->serial_out, "stdout");
	c->timeout_ms = 0;
	c->irqchip = CFG_IRQCHIP_AUTO;
}

int cfg_set(struct vm_config *c, const char *section, const char *key, const char *value, char *err,
	    size_t errlen)
{
	static const struct base as_given = {"", 0};

	if (!section || !key || !value)
		return cfg_fail(err, errlen, "missing section, key or value");
	return cfg_set_key(c, section, key, value, &as_given, NULL, err, errlen);
}

int cfg_validate(const struct vm_config *c, char *err, size_t errlen)
{
	if (!c->kernel[0])
		return cfg_fail(err, errlen, "no kernel: give --kernel PATH or [vm] kernel");
	return cfg_validate_machine(c, err, errlen);
}

int cfg_validate_machine(const struct vm_config *c, char *err, size_t errlen)
{
	char what[48];
	int rc;

	if (c->vcpus < 1 || c->vcpus > CFG_MAX_VCPUS)
		return cfg_fail(err, errlen, "vcpus: %u is out of range: must be 1..%d", c->vcpus,
				CFG_MAX_VCPUS);
	strcpy(what, "memory: ");
	units_fmt_size(what + strlen(what), sizeof(what) - strlen(what), c->mem_size);
	rc = check_mem(c->mem_size, what, err, errlen);
	if (rc)
		return rc;
	if (c->nr_blocks > CFG_MAX_BLOCKS || c->nr_nets > CFG_MAX_NETS)
		return cfg_fail(err, errlen, "%u block and %u net devices: at most %d and %d",
				c->nr_blocks, c->nr_nets, CFG_MAX_BLOCKS, CFG_MAX_NETS);
	for (unsigned i = 0; i < c->nr_blocks; i++)
		if (!c->blocks[i].path[0])
			return cfg_fail(err, errlen, "[block.%.64s]: no path given (path = FILE)",
					c->blocks[i].name);
	for (unsigned i = 0; i < c->nr_nets; i++)
		if (!c->nets[i].tap[0])
			return cfg_fail(err, errlen,
					c->nets[i].has_mac
					    ? "[net.%.64s]: mac given but no tap (tap = NAME)"
					    : "[net.%.64s]: no tap given (tap = NAME)",
					c->nets[i].name);
	if (c->vsock.enabled && (!c->vsock.cid || !c->vsock.uds[0]))
		return cfg_fail(err, errlen, "[vsock]: %s", c->vsock.cid ? "no uds given (uds = PATH)"
								       : "no cid given (cid = 3 or more)");
	return 0;
}
