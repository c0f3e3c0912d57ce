/* ember-jailer's command line, Firecracker's jailer spelling: every value
 * is checked here, before anything on the host is touched. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jail/jailer.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

int jailer_check_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > JAILER_ID_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return -EINVAL;
	}
	return 0;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* Decimal digits only (no sign, no spaces, no 0x), no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int jailer_parse_rlimit(const char *spec, struct jailer_rlimit *out)
{
	static const struct {
		const char *name;
		int resource;
	} known[] = {{"no-file", RLIMIT_NOFILE}, {"fsize", RLIMIT_FSIZE}};
	const char *eq = strchr(spec, '=');
	if (!eq)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strlen(known[i].name) != (size_t)(eq - spec) ||
		    strncmp(spec, known[i].name, (size_t)(eq - spec)) != 0)
			continue;
		uint64_t v;
		if (parse_u64(eq + 1, &v) || (rlim_t)v != v || (rlim_t)v == RLIM_INFINITY)
			return -EINVAL;
		out->resource = known[i].resource;
		out->name = known[i].name;
		out->value = (rlim_t)v;
		return 0;
	}
	return -EINVAL;
}

int jailer_parse_cgroup(const char *spec, struct jailer_cgroup *out)
{
	const char *eq = strchr(spec, '='), *dot = strchr(spec, '.');
	if (!eq || !dot || dot > eq || dot == spec || dot + 1 == eq)
		return -EINVAL;
	size_t flen = (size_t)(eq - spec), clen = (size_t)(dot - spec);
	if (flen >= sizeof(out->file) || clen >= sizeof(out->controller))
		return -EINVAL;
	for (size_t i = 0; i < flen; i++)
		if (!name_char(spec[i]))
			return -EINVAL;
	memcpy(out->controller, spec, clen);
	out->controller[clen] = '\0';
	if (!jailer_has_word(JAILER_CONTROLLERS, out->controller))
		return -EINVAL;
	memcpy(out->file, spec, flen);
	out->file[flen] = '\0';
	out->value = eq + 1;
	if (!out->value[0] || strchr(out->value, '\n'))
		return -EINVAL;
	return 0;
}

int jailer_parse_id_number(const char *s, uint32_t *out)
{
	uint64_t v;
	if (!*s)
		return -EINVAL;
	if (strspn(s, "0123456789") != strlen(s)) {
		/* a name: as useradd takes them (a letter or _ first) */
		bool ok =
		    (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_';
		for (const char *p = s; ok && *p; p++)
			ok = name_char(*p) || (*p == '$' && p[1] == '\0');
		return ok ? -ENOENT : -EINVAL;
	}
	if (parse_u64(s, &v))
		return -EINVAL;
	if (v >= UINT32_MAX) /* (uid_t)-1 means "unchanged" to the kernel */
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int jailer_check_cgroup_path(const char *path)
{
	if (!*path || *path == '/')
		return -EINVAL;
	const char *p = path;
	while (*p) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return -EINVAL;
		for (size_t i = 0; i < n; i++)
			if (!name_char(p[i]))
				return -EINVAL;
		if (!end)
			break;
		p = end + 1;
		if (!*p) /* trailing '/' */
			return -EINVAL;
	}
	return 0;
}

const char *jailer_exec_name(const char *exec_file)
{
	const char *slash = strrchr(exec_file, '/');
	return slash ? slash + 1 : exec_file;
}

static const char usage[] =
    "usage: ember-jailer --id ID --exec-file PATH --uid UID --gid GID [options]\n"
    "                    [-- ARGS for the jailed program]\n"
    "\n"
    "Build a jail in <chroot-base-dir>/<exec-file name>/<ID>/root, then exec\n"
    "the copy of PATH inside it as UID:GID (Firecracker's jailer contract;\n"
    "docs/jail.md).  Paths in ARGS are inside the jail.\n"
    "\n"
    "  --id ID                  [A-Za-z0-9-], at most 64 characters, unique\n"
    "  --exec-file PATH         a static executable (ember)\n"
    "  --uid UID, --gid GID     numbers, or names from the host's databases; not 0\n"
    "  --chroot-base-dir DIR    default /srv/jailer\n"
    "  --netns PATH             join this network namespace (/var/run/netns/NAME)\n"
    "  --daemonize              setsid, stdio to /dev/null\n"
    "  --new-pid-ns             run the program as pid 1 of a new pid namespace;\n"
    "                           its host pid goes to <root>/<exec name>.pid\n"
    "  --die-with-parent        the program is killed (SIGKILL) when the jailer's\n"
    "                           caller dies (a supervisor's VMs die with it)\n"
    "  --cgroup-version 1|2     default 1\n"
    "  --cgroup FILE=VALUE      e.g. cpu.shares=512, memory.limit_in_bytes=256M,\n"
    "                           pids.max=64, cpuset.cpus=0 (repeatable)\n"
    "  --parent-cgroup PATH     cgroups go in <hierarchy>/PATH/ID (default: the\n"
    "                           exec file's name)\n"
    "  --resource-limit no-file=N|fsize=N   (repeatable; default no-file=2048)\n"
    "  -h, --help               this text\n"
    "Each option once; --cgroup and --resource-limit once per file or resource.\n"
    "\n"
    "Exit: the jailed program's status when it runs in place (or under\n"
    "--new-pid-ns without --daemonize); 121 refused arguments, nothing made;\n"
    "122 a step failed, what was made is removed.\n";

const char *jailer_usage(void)
{
	return usage;
}

/* The first SINGLE_VALUED options of with_value[] (below) take one value;
 * the rest (--cgroup, --resource-limit) may repeat, once per file or
 * resource. */
#define SINGLE_VALUED 8

int jailer_parse_args(int argc, char **argv, struct jailer_args *a, char *err, size_t errlen)
{
	const char *given[SINGLE_VALUED] = {NULL}; /* each one's first value */
	memset(a, 0, sizeof(*a));
	a->chroot_base = JAILER_DEFAULT_BASE;
	a->cgroup_version = 1;
	for (int i = 0; i < argc; i++) {
		const char *opt = argv[i];
		if (strcmp(opt, "--") == 0) {
			a->exec_argv = argv + i + 1;
			a->exec_argc = argc - i - 1;
			break;
		}
		if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0)
			return 1;
		if (strcmp(opt, "--daemonize") == 0 || strcmp(opt, "--new-pid-ns") == 0 ||
		    strcmp(opt, "--die-with-parent") == 0) {
			bool *flag = opt[2] == 'n'	       ? &a->new_pid_ns
				     : !strcmp(opt, "--daemonize") ? &a->daemonize
								   : &a->die_with_parent;
			if (*flag)
				return ERR("%s given twice", opt);
			*flag = true;
			continue;
		}
		/* --opt VALUE or --opt=VALUE */
		const char *eq = strncmp(opt, "--", 2) == 0 ? strchr(opt, '=') : NULL;
		char name[32];
		size_t nlen = eq ? (size_t)(eq - opt) : strlen(opt);
		if (strncmp(opt, "--", 2) != 0 || nlen >= sizeof(name))
			return ERR("unknown argument %s (see --help)", opt);
		memcpy(name, opt, nlen);
		name[nlen] = '\0';
		const char *v = eq ? eq + 1 : NULL;
		static const char *const with_value[] = {
		    "--id",
		    "--exec-file",
		    "--uid",
		    "--gid",
		    "--chroot-base-dir",
		    "--netns",
		    "--cgroup-version",
		    "--parent-cgroup",
		    "--cgroup",
		    "--resource-limit",
		};
		size_t k = 0;
		while (k < sizeof(with_value) / sizeof(with_value[0]) &&
		       strcmp(name, with_value[k]) != 0)
			k++;
		if (k == sizeof(with_value) / sizeof(with_value[0]))
			return ERR("unknown option %s (see --help)", name);
		if (!v) {
			if (i + 1 >= argc)
				return ERR("%s needs a value", name);
			v = argv[++i];
		}
		/* One value each: which of two was meant cannot be told, so
		 * neither is taken. */
		if (k < SINGLE_VALUED && given[k])
			return ERR("%s given twice (\"%s\", then \"%s\")", name, given[k], v);
		if (k < SINGLE_VALUED)
			given[k] = v;
		if (strcmp(name, "--id") == 0) {
			if (jailer_check_id(v))
				return ERR(
				    "--id \"%s\": use 1 to %d characters of A-Z, a-z, 0-9 and -", v,
				    JAILER_ID_MAX);
			a->id = v;
		} else if (strcmp(name, "--exec-file") == 0) {
			if (!*v || !*jailer_exec_name(v) || strcmp(jailer_exec_name(v), ".") == 0 ||
			    strcmp(jailer_exec_name(v), "..") == 0)
				return ERR("--exec-file \"%s\": not a file name", v);
			/* the copy goes to root/<name>, beside the jail's folders */
			if (strcmp(jailer_exec_name(v), "dev") == 0 ||
			    strcmp(jailer_exec_name(v), "run") == 0)
				return ERR("--exec-file \"%s\": the jail has a /%s of its own; "
					   "give the file another name",
					   v, jailer_exec_name(v));
			a->exec_file = v;
		} else if (strcmp(name, "--uid") == 0 || strcmp(name, "--gid") == 0) {
			uint32_t n;
			int r = jailer_parse_id_number(v, &n);
			if (r == -EINVAL)
				return ERR("%s \"%s\": not an id (1 to 4294967294) or a name", name,
					   v);
			/* root's uid keeps what it owns on the host, and root's
			 * group what that group may write: neither is a jail */
			if (r == 0 && n == 0)
				return ERR(
				    "%s \"%s\": %s; the jail needs an unprivileged %s", name, v,
				    name[2] == 'u' ? "uid 0 is root" : "gid 0 is root's group",
				    name + 2);
			*(name[2] == 'u' ? &a->uid : &a->gid) = v;
		} else if (strcmp(name, "--chroot-base-dir") == 0) {
			if (v[0] != '/')
				return ERR("--chroot-base-dir \"%s\": must be an absolute path", v);
			a->chroot_base = v;
		} else if (strcmp(name, "--netns") == 0) {
			if (!*v)
				return ERR("--netns: empty path");
			a->netns = v;
		} else if (strcmp(name, "--cgroup-version") == 0) {
			if (strcmp(v, "1") != 0 && strcmp(v, "2") != 0)
				return ERR("--cgroup-version \"%s\": 1 or 2", v);
			a->cgroup_version = v[0] - '0';
		} else if (strcmp(name, "--cgroup") == 0) {
			if (a->nr_cgroups == JAILER_MAX_CGROUPS)
				return ERR("--cgroup: at most %d of them", JAILER_MAX_CGROUPS);
			struct jailer_cgroup *c = &a->cgroups[a->nr_cgroups];
			if (jailer_parse_cgroup(v, c))
				return ERR("--cgroup \"%s\": expected CONTROLLER.FILE=VALUE with "
					   "CONTROLLER one of %s",
					   v, JAILER_CONTROLLERS);
			for (unsigned m = 0; m < a->nr_cgroups; m++)
				if (strcmp(a->cgroups[m].file, c->file) == 0)
					return ERR("--cgroup %s given twice (\"%s\", then \"%s\")",
						   c->file, a->cgroups[m].value, c->value);
			a->nr_cgroups++;
		} else if (strcmp(name, "--parent-cgroup") == 0) {
			if (jailer_check_cgroup_path(v))
				return ERR(
				    "--parent-cgroup \"%s\": a relative path of A-Z, a-z, 0-9, "
				    "_ . - components",
				    v);
			a->parent_cgroup = v;
		} else { /* --resource-limit */
			if (a->nr_rlimits == JAILER_MAX_RLIMITS)
				return ERR("--resource-limit: at most %d of them",
					   JAILER_MAX_RLIMITS);
			struct jailer_rlimit *l = &a->rlimits[a->nr_rlimits];
			if (jailer_parse_rlimit(v, l))
				return ERR("--resource-limit \"%s\": expected no-file=N or fsize=N",
					   v);
			for (unsigned m = 0; m < a->nr_rlimits; m++)
				if (a->rlimits[m].resource == l->resource)
					return ERR("--resource-limit %s given twice", l->name);
			a->nr_rlimits++;
		}
	}
	if (!a->id)
		return ERR("--id is required");
	if (!a->exec_file)
		return ERR("--exec-file is required");
	if (!a->uid)
		return ERR("--uid is required");
	if (!a->gid)
		return ERR("--gid is required");
	/* The death signal follows the process that made it: with another
	 * process between the caller and the program it would not reach it. */
	if (a->die_with_parent && (a->daemonize || a->new_pid_ns))
		return ERR("--die-with-parent cannot go with %s: the program must be the "
			   "jailer itself (exec'd in place) for the caller's death to reach it",
			   a->daemonize ? "--daemonize" : "--new-pid-ns");
	if (!a->parent_cgroup && jailer_check_cgroup_path(jailer_exec_name(a->exec_file)))
		return ERR("--exec-file \"%s\": its name cannot name a cgroup; give "
			   "--parent-cgroup",
			   a->exec_file);
	return 0;
}
