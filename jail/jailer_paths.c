/* ember-jailer's pure helpers: where the cgroup hierarchies are mounted,
 * path building, and the check that the exec file can live alone in an
 * empty chroot. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "jail/jailer.h"

static bool sep(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == ',';
}

bool jailer_has_word(const char *list, const char *word)
{
	size_t n = strlen(word);
	if (n == 0)
		return false;
	for (const char *p = list; *p;) {
		while (*p && sep(*p))
			p++;
		const char *start = p;
		while (*p && !sep(*p))
			p++;
		if ((size_t)(p - start) == n && strncmp(start, word, n) == 0)
			return true;
	}
	return false;
}

/* Copy one /proc/mounts field, decoding \ooo escapes.  Returns the length,
 * or -1 if it does not fit. */
static int field(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '\\' && i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' &&
		    s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
			c = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			i += 3;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	return (int)o;
}

int jailer_cgroup_mount(const char *mounts, int version, const char *controller, char *out,
			size_t outlen)
{
	for (const char *line = mounts; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t llen = end ? (size_t)(end - line) : strlen(line);
		/* device mountpoint fstype options dump pass */
		const char *f[4];
		size_t fl[4];
		const char *p = line, *lend = line + llen;
		unsigned nf = 0;
		while (nf < 4 && p < lend) {
			while (p < lend && *p == ' ')
				p++;
			f[nf] = p;
			while (p < lend && *p != ' ')
				p++;
			fl[nf] = (size_t)(p - f[nf]);
			if (fl[nf])
				nf++;
		}
		line = end ? end + 1 : NULL;
		if (nf < 4)
			continue;
		bool match;
		if (version == 2) {
			match = fl[2] == 7 && strncmp(f[2], "cgroup2", 7) == 0;
		} else {
			char opts[256];
			match = fl[2] == 6 && strncmp(f[2], "cgroup", 6) == 0 &&
				fl[3] < sizeof(opts) &&
				field(f[3], fl[3], opts, sizeof(opts)) >= 0 &&
				jailer_has_word(opts, controller);
		}
		if (!match)
			continue;
		return field(f[1], fl[1], out, outlen) < 0 ? -ENAMETOOLONG : 0;
	}
	return -ENOENT;
}

int jailer_self_cgroup(const char *text, int version, const char *controller, char *out,
		       size_t outlen)
{
	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t llen = end ? (size_t)(end - line) : strlen(line);
		const char *c1 = memchr(line, ':', llen);
		const char *c2 = c1 ? memchr(c1 + 1, ':', llen - (size_t)(c1 + 1 - line)) : NULL;
		const char *cur = line;
		line = end ? end + 1 : NULL;
		if (!c2)
			continue;
		char ctls[256];
		size_t clen = (size_t)(c2 - c1 - 1);
		if (clen >= sizeof(ctls))
			continue;
		memcpy(ctls, c1 + 1, clen);
		ctls[clen] = '\0';
		bool match = version == 2 ? (clen == 0 && c1 - cur == 1 && cur[0] == '0')
					  : jailer_has_word(ctls, controller);
		if (!match)
			continue;
		const char *path = c2 + 1;
		size_t plen = llen - (size_t)(path - cur);
		while (plen && *path == '/') {
			path++;
			plen--;
		}
		if (plen >= outlen)
			return -ENAMETOOLONG;
		memcpy(out, path, plen);
		out[plen] = '\0';
		return 0;
	}
	return -ENOENT;
}

int jailer_path_join(char *out, size_t outlen, const char *a, const char *b, const char *c)
{
	int n =
	    c ? snprintf(out, outlen, "%s/%s/%s", a, b, c) : snprintf(out, outlen, "%s/%s", a, b);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int jailer_subtree_line(const struct jailer_args *a, char *out, size_t outlen)
{
	size_t used = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < a->nr_cgroups; i++) {
		const char *ctl = a->cgroups[i].controller;
		bool seen = false;
		for (unsigned j = 0; j < i; j++)
			seen |= strcmp(a->cgroups[j].controller, ctl) == 0;
		if (seen)
			continue;
		int n = snprintf(out + used, outlen - used, "%s+%s", used ? " " : "", ctl);
		if (n < 0 || (size_t)n >= outlen - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	return 0;
}

int jailer_check_static_elf(const uint8_t *img, size_t len, char *why, size_t whylen)
{
#define NO(...) (snprintf(why, whylen, __VA_ARGS__), -ENOEXEC)
	Elf64_Ehdr eh;
	if (len < SELFMAG || memcmp(img, ELFMAG, SELFMAG) != 0)
		return NO("not an ELF file (a script needs an interpreter the jail lacks)");
	if (len < sizeof(eh))
		return NO("too short for an ELF header");
	memcpy(&eh, img, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64)
		return NO("not an x86-64 ELF");
	if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
		return NO("not an executable");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
		return NO("no program headers");
	uint64_t end = eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr);
	if (eh.e_phoff > len || end > len || end < eh.e_phoff)
		return NO("program headers lie outside the file");
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, img + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_INTERP)
			return NO(
			    "dynamically linked (it needs a loader and libraries the jail lacks; "
			    "build it static)");
	}
	return 0;
#undef NO
}
