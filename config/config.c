/* VM definitions from INI files and the command line.  One table of keys
 * serves both spellings: cfg_set() is the only validator of values, and
 * cfg_parse_ini() adds what only a file has (FILE:LINE, its folder for
 * relative paths, duplicate keys). */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PAGE_SIZE 4096u

/* Where a value's relative paths are taken from: the first dirlen bytes of
 * an INI file's path (its folder, trailing '/' included).  dirlen 0: as
 * given, relative to the working directory (command line, or an INI file
 * named without a folder). */
struct base {
	const char *dir;
	size_t dirlen;
};

struct key {
	const char *section;
	const char *name;
	int (*set)(struct vm_config *c, const char *v, const struct base *b, char *err,
		   size_t errlen);
};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						      ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- sizes and durations ---- */

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* ASCII only: tolower() would follow the locale. */
static char lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Leading decimal digits of *s into *n, advancing *s.  Returns how many
 * there were; *overflow is set (not cleared) when they exceed 64 bits.
 * Done by hand because strtoull also takes blanks, signs and "0x". */
static size_t digits(const char **s, uint64_t *n, bool *overflow)
{
	const char *p = *s;

	*n = 0;
	for (; is_digit(*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (*n > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			*n = *n * 10 + d;
	}
	size_t len = (size_t)(p - *s);
	*s = p;
	return len;
}

/* cfg_parse_size without refusing 0, so that cfg_set can say "below the
 * minimum" for "0M".  Fractions ("1.5G") are refused: write 1536M; an
 * exact integer is never rounded. */
static int parse_size(const char *s, uint64_t *bytes)
{
	bool overflow = false;
	unsigned shift;
	uint64_t n;

	if (!digits(&s, &n, &overflow))
		return -EINVAL;
	switch (lower(*s)) {
	case '\0':
		shift = 20; /* bare number: MiB, as QEMU's -m */
		break;
	case 'b':
		shift = 0; /* "4096B": bytes, as QEMU */
		break;
	case 'k':
		shift = 10;
		break;
	case 'm':
		shift = 20;
		break;
	case 'g':
		shift = 30;
		break;
	case 't':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*s && lower(*s) != 'b') {
		s++;
		if (lower(*s) == 'i' && lower(s[1]) == 'b')
			s += 2;
		else if (lower(*s) == 'b')
			s++;
	} else if (*s) {
		s++;
	}
	if (*s)
		return -EINVAL;
	if (overflow || n > (UINT64_MAX >> shift))
		return -ERANGE;
	*bytes = n << shift;
	return 0;
}

int cfg_parse_size(const char *s, uint64_t *bytes)
{
	uint64_t b;
	int rc = parse_size(s, &b);

	if (rc)
		return rc;
	if (b == 0)
		return -EINVAL;
	*bytes = b;
	return 0;
}

/* Digits and '.' then "ms", "s" (the default) or "m".  The result must be
 * a whole number of milliseconds: "1.5ms" and "0.0001" are refused rather
 * than rounded.  Suffixes are lower case only, so "M" (mega? minutes?)
 * never has to be guessed. */
int cfg_parse_duration(const char *s, uint64_t *ms)
{
	static const uint64_t pow10[] = {1,	 10,	  100,	    1000,      10000,
					 100000, 1000000, 10000000, 100000000, 1000000000};
	bool overflow = false;
	uint64_t whole, frac = 0, mult;
	size_t nfrac = 0;

	if (!digits(&s, &whole, &overflow))
		return -EINVAL;
	if (*s == '.') {
		const char *f = ++s;

		if (!digits(&s, &frac, &overflow))
			return -EINVAL;
		/* Trailing zeros change nothing; more than 9 other digits are
		 * finer than 1 ms even in minutes. */
		nfrac = (size_t)(s - f);
		while (nfrac && f[nfrac - 1] == '0')
			nfrac--;
		if (nfrac >= sizeof(pow10) / sizeof(pow10[0]))
			return -EINVAL;
		frac = 0;
		for (size_t i = 0; i < nfrac; i++)
			frac = frac * 10 + (uint64_t)(f[i] - '0');
	}
	if (!strcmp(s, "ms"))
		mult = 1;
	else if (!strcmp(s, "s") || !*s)
		mult = 1000;
	else if (!strcmp(s, "m"))
		mult = 60000;
	else
		return -EINVAL;
	/* frac < 10^9 and mult <= 60000: no overflow here. */
	if (frac * mult % pow10[nfrac])
		return -EINVAL;
	if (overflow || whole > (UINT64_MAX - frac * mult / pow10[nfrac]) / mult)
		return -ERANGE;
	*ms = whole * mult + frac * mult / pow10[nfrac];
	return 0;
}

/* "64M" rather than 67108864 in messages, where that is exact. */
static void fmt_size(char *buf, size_t len, uint64_t b)
{
	static const char units[] = "TGMK";

	for (unsigned i = 0; i < 4; i++) {
		unsigned shift = 40 - 10 * i;

		if (b && b % (1ULL << shift) == 0) {
			snprintf(buf, len, "%" PRIu64 "%c", b >> shift, units[i]);
			return;
		}
	}
	snprintf(buf, len, "%" PRIu64 " bytes", b);
}

/* ---- one setter per key ---- */

/* Memory checks shared by cfg_set and cfg_validate.  what: how the message
 * names the value (as written, or the field and its value). */
static int check_mem(uint64_t b, const char *what, char *err, size_t errlen)
{
	char lim[32];

	if (b < CFG_MIN_MEM) {
		fmt_size(lim, sizeof(lim), CFG_MIN_MEM);
		return fail(err, errlen, "%s is below the minimum %s", what, lim);
	}
	if (b > CFG_MAX_MEM) {
		fmt_size(lim, sizeof(lim), CFG_MAX_MEM);
		return fail(err, errlen, "%s is above the maximum %s", what, lim);
	}
	if (b % PAGE_SIZE)
		return fail(err, errlen, "%s is not a multiple of 4K", what);
	return 0;
}

/* Jail ids and file names are made from the name, so it must be one
 * harmless path component. */
static int set_name(struct vm_config *c, const char *v, const struct base *b, char *err,
		    size_t errlen)
{
	static const char ok[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
	size_t n = strlen(v), span = strspn(v, ok);

	if (n < 1 || n > CFG_NAME_MAX)
		return fail(err, errlen, "must be 1..%d characters, not %zu", CFG_NAME_MAX, n);
	if (span != n)
		return fail(err, errlen, "\"%.64s\" has '%c': use only A-Z a-z 0-9 _ . -", v,
			    v[span]);
	if (!strcmp(v, ".") || !strcmp(v, ".."))
		return fail(err, errlen, "\"%s\" cannot be a name: it means a folder", v);
	memcpy(c->name, v, n + 1);
	return 0;
}

static int set_vcpus(struct vm_config *c, const char *v, const struct base *b, char *err,
		     size_t errlen)
{
	bool overflow = false;
	const char *p = v;
	uint64_t n;

	if (!digits(&p, &n, &overflow) || *p)
		return fail(err, errlen, "\"%.64s\" is not a number: must be 1..%d", v,
			    CFG_MAX_VCPUS);
	if (overflow || n < 1 || n > CFG_MAX_VCPUS)
		return fail(err, errlen, "\"%.64s\" is out of range: must be 1..%d", v,
			    CFG_MAX_VCPUS);
	c->vcpus = (unsigned)n;
	return 0;
}

static int set_memory(struct vm_config *c, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	char what[80], lim[32];
	uint64_t bytes;
	int rc = parse_size(v, &bytes);

	snprintf(what, sizeof(what), "\"%.64s\"", v);
	if (rc == -ERANGE) {
		fmt_size(lim, sizeof(lim), CFG_MAX_MEM);
		return fail(err, errlen, "%s is too large (at most %s)", what, lim);
	}
	if (rc)
		return fail(err, errlen, "%s is not a size (use e.g. 64M, 1G)", what);
	rc = check_mem(bytes, what, err, errlen);
	if (rc)
		return rc;
	c->mem_size = bytes;
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
		return fail(err, errlen, "empty path");
	if (n >= CFG_PATH_MAX)
		return fail(err, errlen, "path is %zu bytes, longer than %d", n, CFG_PATH_MAX - 1);
	memcpy(dst, b->dir, dirlen);
	memcpy(dst + dirlen, v, n - dirlen + 1);
	return 0;
}

static int set_kernel(struct vm_config *c, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	return set_path(c->kernel, v, b, false, err, errlen);
}

static int set_initrd(struct vm_config *c, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	return set_path(c->initrd, v, b, true, err, errlen);
}

/* Set the cmdline to v[0..n), or extend it (an INI continuation line) with
 * one space between, once the whole is known to fit. */
static int put_cmdline(struct vm_config *c, bool extend, const char *v, size_t n, char *err,
		       size_t errlen)
{
	size_t at = extend && c->cmdline_len ? c->cmdline_len + 1 : 0;

	if (at + n > CFG_CMDLINE_MAX)
		return fail(err, errlen, "%zu bytes, longer than %d", at + n, CFG_CMDLINE_MAX);
	if (at)
		c->cmdline[at - 1] = ' ';
	memcpy(c->cmdline + at, v, n);
	c->cmdline[at + n] = '\0';
	c->cmdline_len = at + n;
	return 0;
}

/* Verbatim: quotes and inner blanks belong to the kernel. */
static int set_cmdline(struct vm_config *c, const char *v, const struct base *b, char *err,
		       size_t errlen)
{
	return put_cmdline(c, false, v, strlen(v), err, errlen);
}

static int set_timeout(struct vm_config *c, const char *v, const struct base *b, char *err,
		       size_t errlen)
{
	uint64_t ms;
	int rc = cfg_parse_duration(v, &ms);

	if (rc == -ERANGE)
		return fail(err, errlen, "\"%.64s\" is too long", v);
	if (rc)
		return fail(err, errlen,
			    "\"%.64s\" is not a duration (use e.g. 30, 2.5, 500ms, 10s, 5m)", v);
	c->timeout_ms = ms;
	return 0;
}

static int set_irqchip(struct vm_config *c, const char *v, const struct base *b, char *err,
		       size_t errlen)
{
	if (!strcmp(v, "auto"))
		c->irqchip = CFG_IRQCHIP_AUTO;
	else if (!strcmp(v, "on"))
		c->irqchip = CFG_IRQCHIP_ON;
	else if (!strcmp(v, "off"))
		c->irqchip = CFG_IRQCHIP_OFF;
	else
		return fail(err, errlen, "\"%.64s\" is not one of auto, on, off", v);
	return 0;
}

/* "stdout" and "none" are words, anything else a file ("./none" for a
 * file of that name). */
static int set_output(struct vm_config *c, const char *v, const struct base *b, char *err,
		      size_t errlen)
{
	static const struct base here = {"", 0};

	if (!*v)
		return fail(err, errlen, "empty (use stdout, none or a file path)");
	if (!strcmp(v, "stdout") || !strcmp(v, "none"))
		b = &here;
	return set_path(c->serial_out, v, b, false, err, errlen);
}

/* Order within a section is the order of the "known:" list in messages.
 * Index = bit in struct parse.seen. */
/* clang-format off */
static const struct key keys[] = {
	{"vm", "name", set_name},
	{"vm", "vcpus", set_vcpus},
	{"vm", "memory", set_memory},
	{"vm", "kernel", set_kernel},
	{"vm", "initrd", set_initrd},
	{"vm", "cmdline", set_cmdline},
	{"vm", "timeout", set_timeout},
	{"vm", "irqchip", set_irqchip},
	{"serial", "output", set_output},
};
/* clang-format on */
#define NKEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(NKEYS <= 32, "struct parse.seen is a uint32_t");

static bool section_known(const char *section)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].section, section))
			return true;
	return false;
}

static int unknown_key(const char *section, char *err, size_t errlen)
{
	char list[256];
	size_t len = 0;

	list[0] = '\0';
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].section, section) && len < sizeof(list))
			len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
						len ? ", " : "", keys[i].name);
	return fail(err, errlen, "unknown key (known: %s)", list);
}

/* The one setter for both spellings.  seen: the INI file's keys so far
 * (a bit per keys[] entry), NULL from the command line, which may
 * override a key as often as it likes. */
static int set_key(struct vm_config *c, const char *section, const char *name, const char *value,
		   const struct base *b, uint32_t *seen, char *err, size_t errlen)
{
	if (!*section)
		return fail(err, errlen, "not in a section (put it under [vm] or [serial])");
	if (!section_known(section))
		return fail(err, errlen, "unknown section [%.64s]", section);
	for (size_t i = 0; i < NKEYS; i++) {
		int rc;

		if (strcmp(keys[i].section, section) || strcmp(keys[i].name, name))
			continue;
		if (seen && (*seen & (1u << i)))
			return fail(err, errlen, "duplicate key");
		rc = keys[i].set(c, value, b, err, errlen);
		if (rc == 0 && seen)
			*seen |= 1u << i;
		return rc;
	}
	return unknown_key(section, err, errlen);
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
		return fail(err, errlen, "missing section, key or value");
	return set_key(c, section, key, value, &as_given, NULL, err, errlen);
}

int cfg_validate(const struct vm_config *c, char *err, size_t errlen)
{
	char what[48];

	if (!c->kernel[0])
		return fail(err, errlen, "no kernel: give --kernel PATH or [vm] kernel");
	if (c->vcpus < 1 || c->vcpus > CFG_MAX_VCPUS)
		return fail(err, errlen, "vcpus: %u is out of range: must be 1..%d", c->vcpus,
			    CFG_MAX_VCPUS);
	strcpy(what, "memory: ");
	fmt_size(what + strlen(what), sizeof(what) - strlen(what), c->mem_size);
	return check_mem(c->mem_size, what, err, errlen);
}

/* ---- INI files ----
 *
 * inih reads through read_line() rather than by file name, for three
 * reasons.  It tells us each line's number (Debian builds inih without
 * INI_HANDLER_LINENO).  It catches lines longer than inih's buffer
 * (ini_max_line, 200), which inih would silently split, parsing the tail
 * as a line of its own.  And it sees each raw line, which is the only way
 * to tell a continuation line (indented; inih hands it to the handler
 * under the previous key's name) from a repeated key.  Continuations are
 * how a cmdline longer than one line is written:
 *
 *     cmdline = console=ttyS0 reboot=k panic=1
 *               root=/dev/vda rw          ; joined with one space
 */
struct parse {
	struct vm_config *c;
	struct base base;
	FILE *f;
	int lineno;	/* of the line inih is working on */
	bool indented;	/* that line starts with a blank */
	bool have_prev; /* a key since the last [section]: inih's prev_name */
	uint32_t seen;
	int err_line; /* first error of ours, 0 = none */
	int read_errno;
	char why[CFG_ERR_MAX];
};

static char *read_line(char *buf, int size, void *stream)
{
	struct parse *p = stream;
	const char *s = buf;
	size_t len;

	if (p->err_line || p->read_errno)
		return NULL; /* the first error is all we report */
	errno = 0;
	if (!fgets(buf, size, p->f)) {
		if (ferror(p->f))
			p->read_errno = errno ? errno : EIO;
		return NULL;
	}
	p->lineno++;
	len = strlen(buf);
	if (len == (size_t)size - 1 && buf[len - 1] != '\n') {
		int ch = getc(p->f);

		if (ch != EOF) {
			p->err_line = p->lineno;
			snprintf(p->why, sizeof(p->why),
				 "line too long (at most %d characters; continue a long cmdline "
				 "on indented lines)",
				 size - 3);
			return NULL;
		}
	}
	while (*s && isspace((unsigned char)*s))
		s++;
	p->indented = s > buf;
	/* inih takes an indented line after a key as its continuation, even
	 * one that starts with '['; any other '[' line opens a section. */
	if (*s == '[' && !(p->indented && p->have_prev))
		p->have_prev = false;
	return buf;
}

/* Length of a continuation value without its inline comment: inih 55
 * keeps " ; ..." there, though it drops it from a key's first line (and
 * later inih from both).  Same rule as inih: ';' after a blank. */
static size_t uncommented(const char *v)
{
	size_t n = strlen(v);

	for (size_t i = 1; i < n; i++)
		if (v[i] == ';' && isspace((unsigned char)v[i - 1])) {
			n = i;
			break;
		}
	while (n && isspace((unsigned char)v[n - 1]))
		n--;
	return n;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	bool cont = p->indented && p->have_prev;
	char why[CFG_ERR_MAX];
	int rc;

	p->have_prev = true;
	if (p->err_line)
		return 1; /* keep inih's error line at the first one */
	if (!value)
		rc = fail(why, sizeof(why), "no value"); /* only if INI_ALLOW_NO_VALUE */
	else if (!cont)
		rc = set_key(p->c, section, name, value, &p->base, &p->seen, why, sizeof(why));
	else if (!strcmp(section, "vm") && !strcmp(name, "cmdline"))
		rc = put_cmdline(p->c, true, value, uncommented(value), why, sizeof(why));
	else
		rc = fail(
		    why, sizeof(why),
		    "indented line \"%.64s\" continues this value; only cmdline may (a new key "
		    "must not be indented)",
		    value);
	if (rc == 0)
		return 1;
	p->err_line = p->lineno;
	if (*section)
		fail(p->why, sizeof(p->why), "[%.64s] %.64s: %s", section, name, why);
	else
		fail(p->why, sizeof(p->why), "%.64s: %s", name, why);
	return 0;
}

int cfg_parse_ini(const char *path, struct vm_config *c, char *err, size_t errlen)
{
	/* Parsed into a copy, so that a file with an error changes nothing. */
	struct vm_config tmp = *c;
	struct parse p = {.c = &tmp};
	const char *slash = strrchr(path, '/');
	int rc, e;

	p.base.dir = path;
	p.base.dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	p.f = fopen(path, "re");
	if (!p.f) {
		e = errno;
		fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	rc = ini_parse_stream(read_line, &p, on_key, &p);
	fclose(p.f);

	if (rc < 0) { /* -2: out of memory; -1 (cannot open) is ours to see, above */
		e = rc == -2 ? ENOMEM : EIO;
		fail(err, errlen, "%s: cannot parse: %s", path, strerror(e));
		return -e;
	}
	if (p.read_errno) {
		fail(err, errlen, "%s: cannot read: %s", path, strerror(p.read_errno));
		return -p.read_errno;
	}
	/* inih's rc is its first error: ours (same line) or a syntax error
	 * that our handler never saw. */
	if (rc > 0 && (!p.err_line || rc < p.err_line))
		return fail(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
			    path, rc);
	if (p.err_line)
		return fail(err, errlen, "%s:%d: %s", path, p.err_line, p.why);
	*c = tmp;
	return 0;
}
