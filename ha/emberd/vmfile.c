/* VM files (docs/ha.md, "VM files"): ember's INI format plus emberd's
 * [emberd] section.  emberd reads with inih what it needs itself (the
 * policy, the paths it stages in the jail, the size for placement); ember
 * (`ember run FILE --dry-run`, host.c) checks all the rest. */
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ha/emberd/local.h"

struct parse {
	struct ed_vmfile *f;
	FILE *in;
	int line;
	char dir[PATH_MAX]; /* the file's folder, for relative paths */
	char *err;
	size_t errlen;
	bool failed;
};

/* inih's reader, one line per call: the line numbers of our messages. */
static char *reader(char *str, int num, void *stream)
{
	struct parse *p = stream;
	char *r = fgets(str, num, p->in);
	if (r)
		p->line++;
	return r;
}

__attribute__((format(printf, 4, 5))) static int fail(struct parse *p, const char *section,
						      const char *key, const char *fmt, ...)
{
	if (p->failed)
		return 0;
	p->failed = true;
	int n = snprintf(p->err, p->errlen, "%s:%d: [%s] %s: ", p->f->file, p->line, section, key);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < p->errlen)
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return 0;
}

static int set_path(struct parse *p, char *dst, const char *v)
{
	int n = v[0] == '/' ? snprintf(dst, PATH_MAX, "%s", v)
			    : snprintf(dst, PATH_MAX, "%s/%s", p->dir, v);
	return n > 0 && n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

static int parse_bool(const char *v, bool *b)
{
	if (!strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "1"))
		*b = true;
	else if (!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "0"))
		*b = false;
	else
		return -EINVAL;
	return 0;
}

/* "64M", "1G", "512K", a bare number in MiB (ember's spellings). */
static int parse_mem(const char *v, uint64_t *bytes)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || end == v || *v == '-')
		return -EINVAL;
	uint64_t mul = !*end		       ? 1ULL << 20
		       : !strcasecmp(end, "K") ? 1ULL << 10
		       : !strcasecmp(end, "M") ? 1ULL << 20
		       : !strcasecmp(end, "G") ? 1ULL << 30
					       : 0;
	if (!mul || !n || n > UINT64_MAX / mul)
		return -EINVAL;
	*bytes = n * mul;
	return 0;
}

/* "a,b" -> NULL-terminated list of host names. */
static int parse_hosts(struct parse *p, const char *key, const char *v, char **list)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", v);
	for (int i = 0; list[i]; i++) {
		free(list[i]);
		list[i] = NULL;
	}
	int n = 0;
	for (char *save, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
		if (n == ED_MAX_HOSTS)
			return fail(p, "emberd", key, "at most %d hosts", ED_MAX_HOSTS);
		if (strlen(t) > ED_NAME_MAX ||
		    strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs"
			      "tuvwxyz0123456789-") != strlen(t))
			return fail(p, "emberd", key,
				    "\"%s\" is not a host name ([A-Za-z0-9-], "
				    "at most %d)",
				    t, ED_NAME_MAX);
		list[n] = strdup(t);
		if (!list[n])
			return fail(p, "emberd", key, "out of memory");
		list[++n] = NULL;
	}
	return 1;
}

static int emberd_key(struct parse *p, const char *k, const char *v)
{
	struct ed_policy *pol = &p->f->pol;
	static const struct {
		const char *key;
		size_t off;
	} durations[] = {
	    {"restart_interval", offsetof(struct ed_policy, interval_ms)},
	    {"restart_delay", offsetof(struct ed_policy, delay_ms)},
	    {"restart_max_delay", offsetof(struct ed_policy, max_delay_ms)},
	    {"snapshot_interval", offsetof(struct ed_policy, snapshot_ms)},
	};
	for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++)
		if (!strcmp(k, durations[i].key)) {
			uint64_t *ms = (uint64_t *)((char *)pol + durations[i].off);
			if (ed_parse_duration(v, ms))
				return fail(p, "emberd", k,
					    "\"%s\" is not a duration (e.g. 100ms, 2s, 1m, 1h; 0)",
					    v);
			if (!strcmp(k, "restart_interval") && !*ms)
				return fail(p, "emberd", k, "must be more than 0");
			if (!strcmp(k, "snapshot_interval") && *ms && *ms < 100)
				return fail(p, "emberd", k, "at least 100ms (or 0: none)");
			return 1;
		}
	if (!strcmp(k, "restart")) {
		pol->restart = !strcmp(v, "always")	  ? ED_RESTART_ALWAYS
			       : !strcmp(v, "on-failure") ? ED_RESTART_ON_FAILURE
			       : !strcmp(v, "never")	  ? ED_RESTART_NEVER
							  : (enum ed_restart) - 1;
		if ((int)pol->restart < 0)
			return fail(p, "emberd", k, "\"%s\": expected always, on-failure or never",
				    v);
	} else if (!strcmp(k, "resume")) {
		pol->resume = !strcmp(v, "auto")       ? ED_RESUME_AUTO
			      : !strcmp(v, "never")    ? ED_RESUME_NEVER
			      : !strcmp(v, "rollback") ? ED_RESUME_ROLLBACK
						       : (enum ed_resume) - 1;
		if ((int)pol->resume < 0)
			return fail(p, "emberd", k, "\"%s\": expected auto, never or rollback", v);
	} else if (!strcmp(k, "restart_attempts")) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(v, &end, 10);
		if (errno || end == v || *end || *v == '-' || n > 1000)
			return fail(p, "emberd", k, "\"%s\": expected a number 0..1000", v);
		pol->attempts = (unsigned)n;
	} else if (!strcmp(k, "autostart")) {
		if (parse_bool(v, &pol->autostart))
			return fail(p, "emberd", k, "\"%s\": expected true or false", v);
	} else if (!strcmp(k, "hosts")) {
		return parse_hosts(p, k, v, p->f->hosts);
	} else if (!strcmp(k, "avoid_hosts")) {
		return parse_hosts(p, k, v, p->f->avoid);
	} else {
		return fail(
		    p, "emberd", k,
		    "unknown key (known: restart, restart_attempts, restart_interval, "
		    "restart_delay, restart_max_delay, snapshot_interval, resume, autostart, "
		    "hosts, avoid_hosts)");
	}
	return 1;
}

static struct ed_drive *drive(struct parse *p, const char *section)
{
	const char *id = strchr(section, '.') + 1;
	for (unsigned i = 0; i < p->f->nr_drives; i++)
		if (!strcmp(p->f->drives[i].id, id))
			return &p->f->drives[i];
	if (p->f->nr_drives == ED_MAX_DRIVES || strlen(id) > ED_ID_MAX || !*id)
		return NULL; /* ember's dry run names the fault */
	struct ed_drive *d = &p->f->drives[p->f->nr_drives++];
	snprintf(d->id, sizeof(d->id), "%s", id);
	snprintf(d->section, sizeof(d->section), "%s", section);
	return d;
}

static int handler(void *user, const char *section, const char *k, const char *v)
{
	struct parse *p = user;
	struct ed_vmfile *f = p->f;
	if (p->failed)
		return 1;
	if (!strcmp(section, "emberd"))
		return emberd_key(p, k, v);
	if (!strcmp(section, "vm")) {
		if (!strcmp(k, "name")) {
			if (!*v || strlen(v) > ED_NAME_MAX ||
			    strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz01234567"
				      "89-") != strlen(v))
				return fail(p, section, k,
					    "\"%s\": emberd's VM names are 1..%d of A-Z a-z 0-9 -",
					    v, ED_NAME_MAX);
			snprintf(f->name, sizeof(f->name), "%s", v);
		} else if (!strcmp(k, "memory")) {
			if (parse_mem(v, &f->mem_bytes))
				return fail(p, section, k, "\"%s\": expected a size (64M, 1G)", v);
		} else if (!strcmp(k, "vcpus")) {
			f->vcpus = (unsigned)strtoul(v, NULL, 10); /* ember checks the range */
		} else if (!strcmp(k, "kernel") || !strcmp(k, "initrd")) {
			if (set_path(p, k[0] == 'k' ? f->kernel : f->initrd, v))
				return fail(p, section, k, "path too long");
		}
	} else if (!strncmp(section, "drive.", 6) || !strncmp(section, "block.", 6)) {
		struct ed_drive *d = drive(p, section);
		if (d && !strcmp(k, "path") && set_path(p, d->path, v))
			return fail(p, section, k, "path too long");
		if (d && !strcmp(k, "read_only") && parse_bool(v, &d->ro))
			return fail(p, section, k, "\"%s\": expected on or off", v);
	}
	return 1;
}

int ed_vmfile_parse(const char *path, struct ed_vmfile *f, char *err, size_t errlen)
{
	memset(f, 0, sizeof(*f));
	ed_policy_defaults(&f->pol);
	f->mem_bytes = 64ULL << 20; /* ember run's default */
	f->vcpus = 1;
	if (snprintf(f->file, sizeof(f->file), "%s", path) >= (int)sizeof(f->file)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	/* the name defaults to the file's stem */
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	const char *dot = strrchr(base, '.');
	size_t n = dot ? (size_t)(dot - base) : strlen(base);
	snprintf(f->name, sizeof(f->name), "%.*s", (int)(n < ED_NAME_MAX ? n : ED_NAME_MAX), base);

	struct parse p = {.f = f, .err = err, .errlen = errlen};
	snprintf(p.dir, sizeof(p.dir), "%.*s", (int)(base > path ? base - path - 1 : 1),
		 base > path ? path : ".");
	p.in = fopen(path, "re");
	if (!p.in) {
		int r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	struct stat st;
	if (fstat(fileno(p.in), &st) == 0) {
		f->mtime_ns =
		    (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec;
		f->size = (uint64_t)st.st_size;
	}
	int r = ini_parse_stream(reader, &p, handler, &p);
	fclose(p.in);
	if (!p.failed && r > 0) {
		snprintf(err, errlen, "%s:%d: not an INI line", path, r);
		p.failed = true;
	}
	if (!p.failed &&
	    (n == 0 || n > ED_NAME_MAX ||
	     strspn(f->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") !=
		 strlen(f->name))) {
		snprintf(
		    err, errlen,
		    "%s: the VM's name (the file's stem, or [vm] name) must be 1..%d of A-Z a-z "
		    "0-9 -",
		    path, ED_NAME_MAX);
		p.failed = true;
	}
	if (!p.failed && !f->kernel[0]) {
		snprintf(err, errlen, "%s: [vm] kernel: missing (emberd boots the file as it is)",
			 path);
		p.failed = true;
	}
	for (unsigned i = 0; !p.failed && i < f->nr_drives; i++)
		if (!f->drives[i].path[0]) {
			snprintf(err, errlen, "%s: [%s] path: missing", path, f->drives[i].section);
			p.failed = true;
		}
	if (p.failed) {
		ed_vmfile_free(f);
		return -EINVAL;
	}
	return 0;
}

void ed_vmfile_free(struct ed_vmfile *f)
{
	for (int i = 0; f->hosts[i]; i++)
		free(f->hosts[i]);
	for (int i = 0; f->avoid[i]; i++)
		free(f->avoid[i]);
	f->hosts[0] = f->avoid[0] = NULL;
}

bool ed_vmfile_all_ro(const struct ed_vmfile *f)
{
	for (unsigned i = 0; i < f->nr_drives; i++)
		if (!f->drives[i].ro)
			return false;
	return true;
}

/* The key of an INI line "  key = value" into key; false for others. */
static bool line_key(const char *line, char *key, size_t len)
{
	while (*line == ' ' || *line == '\t')
		line++;
	size_t n = strcspn(line, "=:");
	if (!line[n])
		return false;
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	snprintf(key, len, "%.*s", (int)n, line);
	return true;
}

int ed_vmfile_write_jail(const struct ed_vmfile *f, const char *out, char *err, size_t errlen)
{
	FILE *in = fopen(f->file, "re");
	if (!in) {
		int r = -errno;
		snprintf(err, errlen, "%s: %s", f->file, strerror(errno));
		return r;
	}
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap), line[4096], section[128] = "";
	bool skip = false, serial = false;
	int r = buf ? 0 : -ENOMEM;
	while (!r && fgets(line, sizeof(line), in)) {
		char outl[PATH_MAX + 64], key[64];
		const char *emit = line;
		const char *s = line + strspn(line, " \t");
		if (*s == '[') {
			size_t n = strcspn(s + 1, "]");
			snprintf(section, sizeof(section), "%.*s", (int)n, s + 1);
			skip = !strcmp(section, "emberd");
			serial |= !strcmp(section, "serial");
		} else if (skip) {
			continue;
		} else if (line[0] != ' ' && line[0] != '\t' && *s != ';' && *s != '#' &&
			   line_key(line, key, sizeof(key))) {
			/* a key at column 0; indented lines are continuations */
			const char *to = NULL;
			char drv[ED_ID_MAX + 16];
			if (!strcmp(section, "vm") && !strcmp(key, "kernel"))
				to = "/vm/kernel";
			else if (!strcmp(section, "vm") && !strcmp(key, "initrd"))
				to = "/vm/initrd";
			else if (!strcmp(section, "serial") && !strcmp(key, "output"))
				to = "stdout"; /* the console log */
			else if (!strcmp(section, "vsock") && !strcmp(key, "uds"))
				to = "/vsock.sock";
			else if ((!strncmp(section, "drive.", 6) ||
				  !strncmp(section, "block.", 6)) &&
				 !strcmp(key, "path")) {
				ed_fmt(drv, sizeof(drv), "/vm/drive-%s", section + 6);
				to = drv;
			}
			if (to) {
				snprintf(outl, sizeof(outl), "%s = %s\n", key, to);
				emit = outl;
			}
		}
		if (skip)
			continue;
		size_t n = strlen(emit);
		if (len + n + 64 > cap) {
			char *nb = realloc(buf, cap = (len + n) * 2 + 64);
			if (!nb) {
				r = -ENOMEM;
				break;
			}
			buf = nb;
		}
		memcpy(buf + len, emit, n);
		len += n;
		if (n && emit[n - 1] != '\n')
			buf[len++] = '\n';
	}
	fclose(in);
	if (!r && !serial)
		len += (size_t)sprintf(buf + len, "[serial]\noutput = stdout\n");
	if (!r)
		r = ed_write_file(out, buf, len, false); /* remade at every start */
	if (r)
		snprintf(err, errlen, "%s: %s", out, strerror(-r));
	free(buf);
	return r;
}
