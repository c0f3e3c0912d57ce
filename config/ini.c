/* VM definitions from INI files (inih): what only a file has, FILE:LINE
 * in every message, its folder for relative paths, duplicate keys and
 * sections, continuation lines.  Every value goes through cfg_set_key(),
 * as the command line's do. */
#include <ctype.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <ini.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "config/keys.h"

/* ---- INI files ----
 *
 * inih reads through read_line() rather than by file name, for four
 * reasons.  It tells us each line's number (Debian builds inih without
 * INI_HANDLER_LINENO).  It catches lines longer than inih's buffer
 * (ini_max_line, 200), which inih would silently split, parsing the tail
 * as a line of its own.  It sees each raw line, which is the only way
 * to tell a continuation line (indented; inih hands it to the handler
 * under the previous key's name) from a repeated key.  Continuations are
 * how a cmdline longer than one line is written:
 *
 *     cmdline = console=ttyS0 reboot=k panic=1
 *               root=/dev/vda rw          ; joined with one space
 *
 * And it sees "[section]" lines, which inih does not report (and cuts to
 * 49 characters, shorter than [block.NAME] may be): a device section is
 * checked on its own line, and opens its device even without keys.
 */
struct parse {
	struct vm_config *c;
	struct base base;
	FILE *f;
	int lineno;	   /* of the line inih is working on */
	bool indented;	   /* that line starts with a blank */
	bool have_prev;	   /* a key since the last [section]: inih's prev_name */
	char section[256]; /* the current section, in full (lines are shorter) */
	struct seen seen;
	/* the line of each device's section in this file, 0 = none yet */
	int block_line[CFG_MAX_BLOCKS];
	int net_line[CFG_MAX_NETS];
	int err_line; /* first error of ours, 0 = none */
	int read_errno;
	char why[CFG_ERR_MAX];
};

/* A "[name]" line, name being len bytes at s.  0, or -EINVAL with the
 * reason in p->why. */
static int open_section(struct parse *p, const char *s, size_t len)
{
	char why[CFG_ERR_MAX];
	struct section sec;
	bool added;
	int i, *line;

	memcpy(p->section, s, len);
	p->section[len] = '\0';
	i = cfg_parse_section(p->section, &sec, why, sizeof(why));
	if (!i && sec.kind == KIND_RNG)
		p->c->rng.enabled = true; /* "[rng]" alone adds the device */
	if (i == -ENOENT || (!i && !sec.dev))
		return 0; /* an unknown section is an error once it has a key */
	if (!i)
		i = cfg_dev_get(p->c, sec.kind, sec.dev, &added, why, sizeof(why));
	if (i < 0)
		return cfg_fail(p->why, sizeof(p->why), "[%.80s]: %s", p->section, why);
	line = sec.kind == KIND_BLOCK ? &p->block_line[i] : &p->net_line[i];
	if (*line)
		return cfg_fail(p->why, sizeof(p->why),
				"duplicate section [%.80s], first at line %d", p->section, *line);
	*line = p->lineno;
	return 0;
}

static char *read_line(char *buf, int size, void *stream)
{
	struct parse *p = stream;
	const char *s = buf;
	size_t len;

	if (p->err_line || p->read_errno)
		return NULL; /* the first error is all we report */
	/* fgets() would not say how many bytes it read, and past a NUL byte
	 * neither inih nor strlen() sees them: a long line with one would
	 * pass the length check below and be split after all. */
	errno = 0;
	len = 0;
	while (len < (size_t)size - 1) {
		int ch = getc(p->f);

		if (ch == EOF)
			break;
		buf[len++] = (char)ch;
		if (ch == '\n')
			break;
	}
	if (ferror(p->f)) {
		p->read_errno = errno ? errno : EIO;
		return NULL;
	}
	if (!len)
		return NULL;
	buf[len] = '\0';
	p->lineno++;
	if (memchr(buf, '\0', len)) {
		p->err_line = p->lineno;
		snprintf(p->why, sizeof(p->why), "a NUL byte in this line (an INI file is text)");
		return NULL;
	}
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
	if (p->lineno == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
		s += 3; /* a UTF-8 BOM, which inih skips */
	while (*s && isspace((unsigned char)*s))
		s++;
	p->indented = s > buf;
	/* inih takes an indented line after a key as its continuation, even
	 * one that starts with '['; any other '[' line opens a section. */
	if (*s == '[' && !(p->indented && p->have_prev)) {
		const char *end = ++s;

		p->have_prev = false;
		/* Up to ']', as inih: one not found, or after an inline comment
		 * (';' after a blank), is inih's syntax error on this line. */
		while (*end && *end != ']' &&
		       !(*end == ';' && end > s && isspace((unsigned char)end[-1])))
			end++;
		if (*end == ']' && open_section(p, s, (size_t)(end - s))) {
			p->err_line = p->lineno;
			return NULL;
		}
	}
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

/* inih's section argument is ignored for p->section: the same, but not
 * cut short. */
static int on_key(void *user, const char *inih_section, const char *name, const char *value)
{
	struct parse *p = user;
	const char *section = p->section;
	bool cont = p->indented && p->have_prev;
	char why[CFG_ERR_MAX];
	int rc;

	p->have_prev = true;
	if (p->err_line)
		return 1; /* keep inih's error line at the first one */
	if (!value)
		rc = cfg_fail(why, sizeof(why), "no value"); /* only if INI_ALLOW_NO_VALUE */
	else if (!cont)
		rc = cfg_set_key(p->c, section, name, value, &p->base, &p->seen, why, sizeof(why));
	else if (!strcmp(section, "vm") && !strcmp(name, "cmdline"))
		rc = cfg_put_cmdline(p->c, true, value, uncommented(value), why, sizeof(why));
	else
		rc = cfg_fail(
		    why, sizeof(why),
		    "indented line \"%.64s\" continues this value; only cmdline may (a new key "
		    "must not be indented)",
		    value);
	if (rc == 0)
		return 1;
	p->err_line = p->lineno;
	if (*section)
		cfg_fail(p->why, sizeof(p->why), "[%.80s] %.64s: %s", section, name, why);
	else
		cfg_fail(p->why, sizeof(p->why), "%.64s: %s", name, why);
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
	/* O_NONBLOCK, then only a regular file: a FIFO must not hang the
	 * open (there may be no --timeout yet), a device is not a file. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		e = errno;
		if (fd >= 0)
			close(fd);
		cfg_fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		cfg_fail(err, errlen, "%s: cannot open: not a regular file", path);
		return -EINVAL;
	}
	p.f = fdopen(fd, "r");
	if (!p.f) {
		e = errno;
		close(fd);
		cfg_fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	rc = ini_parse_stream(read_line, &p, on_key, &p);
	fclose(p.f);

	if (rc < 0) { /* -2: out of memory; -1 (cannot open) is ours to see, above */
		e = rc == -2 ? ENOMEM : EIO;
		cfg_fail(err, errlen, "%s: cannot parse: %s", path, strerror(e));
		return -e;
	}
	if (p.read_errno) {
		cfg_fail(err, errlen, "%s: cannot read: %s", path, strerror(p.read_errno));
		return -p.read_errno;
	}
	/* inih's rc is its first error: ours (same line) or a syntax error
	 * that our handler never saw. */
	if (rc > 0 && (!p.err_line || rc < p.err_line))
		return cfg_fail(err, errlen,
				"%s:%d: syntax error (expected [section] or key = value)", path,
				rc);
	if (p.err_line)
		return cfg_fail(err, errlen, "%s:%d: %s", path, p.err_line, p.why);
	*c = tmp;
	return 0;
}
