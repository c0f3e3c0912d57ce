/* ember-jailer's pure parts: arguments, ids, limits, cgroup specs and
 * paths (v1 and v2), /proc parsing, and the static-ELF check; and its
 * symlink-free walks (jailer_fs.c), in a temporary folder (no root
 * needed). */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "jail/jailer.h"

static char err[JAILER_ERR_MAX];

/* Parse a NULL-terminated list of arguments. */
static int parse(struct jailer_args *a, ...)
{
	static char *argv[64];
	int argc = 0;
	va_list ap;
	va_start(ap, a);
	for (char *s; (s = va_arg(ap, char *)) != NULL && argc < 64;)
		argv[argc++] = s;
	va_end(ap);
	err[0] = '\0';
	return jailer_parse_args(argc, argv, a, err, sizeof(err));
}

#define BASE "--id", "vm-1", "--exec-file", "/usr/bin/ember", "--uid", "123", "--gid", "100"

/* BASE with some of its options given other values (each option may be
 * given once), then the rest of a NULL-terminated list. */
static int parse_over(struct jailer_args *a, ...)
{
	static const char *const base[] = {BASE};
	static char *extra[64], *argv[80];
	int nextra = 0, argc = 0;
	va_list ap;
	va_start(ap, a);
	for (char *s; (s = va_arg(ap, char *)) != NULL && nextra < 64;)
		extra[nextra++] = s;
	va_end(ap);
	for (unsigned i = 0; i < sizeof(base) / sizeof(base[0]); i += 2) {
		bool over = false;
		for (int k = 0; k < nextra; k++)
			over |= strcmp(extra[k], base[i]) == 0;
		if (!over) {
			argv[argc++] = (char *)base[i];
			argv[argc++] = (char *)base[i + 1];
		}
	}
	for (int k = 0; k < nextra; k++)
		argv[argc++] = extra[k];
	err[0] = '\0';
	return jailer_parse_args(argc, argv, a, err, sizeof(err));
}

static void test_ids(void **state)
{
	assert_int_equal(jailer_check_id("a"), 0);
	assert_int_equal(jailer_check_id("551e7604-e35c-42b3-b825-416853441234"), 0);
	assert_int_equal(jailer_check_id("ABC-xyz-09"), 0);
	char max[JAILER_ID_MAX + 2];
	memset(max, 'x', JAILER_ID_MAX);
	max[JAILER_ID_MAX] = '\0';
	assert_int_equal(jailer_check_id(max), 0);
	max[JAILER_ID_MAX] = 'x';
	max[JAILER_ID_MAX + 1] = '\0';
	assert_int_equal(jailer_check_id(max), -EINVAL); /* 65 */
	assert_int_equal(jailer_check_id(""), -EINVAL);
	assert_int_equal(jailer_check_id("a_b"), -EINVAL);
	assert_int_equal(jailer_check_id("a.b"), -EINVAL);
	assert_int_equal(jailer_check_id("../x"), -EINVAL);
	assert_int_equal(jailer_check_id("a/b"), -EINVAL);
	assert_int_equal(jailer_check_id("a b"), -EINVAL);
	assert_int_equal(jailer_check_id("caf\xc3\xa9"), -EINVAL);
}

static void test_parse_minimal_and_defaults(void **state)
{
	struct jailer_args a;
	assert_int_equal(parse(&a, BASE, NULL), 0);
	assert_string_equal(a.id, "vm-1");
	assert_string_equal(a.exec_file, "/usr/bin/ember");
	assert_string_equal(a.uid, "123");
	assert_string_equal(a.gid, "100");
	assert_string_equal(a.chroot_base, "/srv/jailer");
	assert_int_equal(a.cgroup_version, 1);
	assert_null(a.parent_cgroup);
	assert_null(a.netns);
	assert_false(a.daemonize);
	assert_false(a.new_pid_ns);
	assert_int_equal(a.nr_cgroups, 0);
	assert_int_equal(a.nr_rlimits, 0);
	assert_int_equal(a.exec_argc, 0);
}

static void test_parse_everything(void **state)
{
	struct jailer_args a;
	assert_int_equal(parse(&a, BASE, "--chroot-base-dir=/var/jail", "--netns",
			       "/var/run/netns/n1", "--daemonize", "--new-pid-ns",
			       "--cgroup-version", "2", "--cgroup", "cpu.max=50000 100000",
			       "--cgroup=memory.max=256M", "--parent-cgroup", "vms/ext",
			       "--resource-limit", "no-file=1024", "--resource-limit=fsize=4096",
			       "--", "run", "--kernel", "/k.elf", "--", "x", NULL),
			 0);
	assert_string_equal(a.chroot_base, "/var/jail");
	assert_string_equal(a.netns, "/var/run/netns/n1");
	assert_true(a.daemonize && a.new_pid_ns);
	assert_int_equal(a.cgroup_version, 2);
	assert_int_equal(a.nr_cgroups, 2);
	assert_string_equal(a.cgroups[0].controller, "cpu");
	assert_string_equal(a.cgroups[0].file, "cpu.max");
	assert_string_equal(a.cgroups[0].value, "50000 100000");
	assert_string_equal(a.cgroups[1].controller, "memory");
	assert_string_equal(a.cgroups[1].value, "256M");
	assert_string_equal(a.parent_cgroup, "vms/ext");
	assert_int_equal(a.nr_rlimits, 2);
	assert_int_equal(a.rlimits[0].resource, RLIMIT_NOFILE);
	assert_int_equal(a.rlimits[0].value, 1024);
	assert_int_equal(a.rlimits[1].resource, RLIMIT_FSIZE);
	assert_int_equal(a.rlimits[1].value, 4096);
	/* everything after the first "--" is the program's, "--" included */
	assert_int_equal(a.exec_argc, 5);
	assert_string_equal(a.exec_argv[0], "run");
	assert_string_equal(a.exec_argv[3], "--");
}

static void test_parse_errors(void **state)
{
	struct jailer_args a;
	assert_int_equal(parse(&a, "--help", NULL), 1);
	assert_int_equal(parse(&a, "--exec-file", "/e", "--uid", "1", "--gid", "1", NULL), -EINVAL);
	assert_non_null(strstr(err, "--id is required"));
	assert_int_equal(parse(&a, "--id", "x", "--uid", "1", "--gid", "1", NULL), -EINVAL);
	assert_non_null(strstr(err, "--exec-file is required"));
	assert_int_equal(parse(&a, "--id", "x", "--exec-file", "/e", "--gid", "1", NULL), -EINVAL);
	assert_non_null(strstr(err, "--uid is required"));
	assert_int_equal(parse(&a, "--id", "x", "--exec-file", "/e", "--uid", "1", NULL), -EINVAL);
	assert_non_null(strstr(err, "--gid is required"));
	assert_int_equal(parse_over(&a, "--id", "bad id", NULL), -EINVAL);
	assert_non_null(strstr(err, "--id \"bad id\""));
	assert_int_equal(parse(&a, BASE, "--bogus", NULL), -EINVAL);
	assert_non_null(strstr(err, "unknown option --bogus"));
	assert_int_equal(parse(&a, BASE, "stray", NULL), -EINVAL);
	assert_int_equal(parse(&a, BASE, "--netns", NULL), -EINVAL);
	assert_non_null(strstr(err, "--netns needs a value"));
	assert_int_equal(parse(&a, BASE, "--cgroup-version", "3", NULL), -EINVAL);
	assert_int_equal(parse(&a, BASE, "--cgroup", "blkio.weight=1", NULL), -EINVAL);
	assert_int_equal(parse(&a, BASE, "--cgroup", "cpu.shares", NULL), -EINVAL);
	assert_int_equal(parse(&a, BASE, "--resource-limit", "nproc=1", NULL), -EINVAL);
	assert_int_equal(parse(&a, BASE, "--chroot-base-dir", "rel/dir", NULL), -EINVAL);
	assert_int_equal(parse(&a, BASE, "--parent-cgroup", "/abs", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--uid", "-1", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--uid", "4294967295", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--uid", "99999999999999999999", NULL), -EINVAL);
	/* a name is fine here: it is looked up later */
	assert_int_equal(parse_over(&a, "--uid", "nobody", "--gid", "nogroup", NULL), 0);
	assert_int_equal(parse_over(&a, "--exec-file", "/usr/bin/", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--exec-file", "/usr/bin/..", NULL), -EINVAL);
	/* its copy goes to root/<name>, where the jail's own folders are */
	assert_int_equal(parse_over(&a, "--exec-file", "/x/dev", NULL), -EINVAL);
	assert_non_null(strstr(err, "the jail has a /dev of its own"));
	assert_int_equal(parse_over(&a, "--exec-file", "/x/run", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--exec-file", "/x/dev2", NULL), 0);
	/* the default parent cgroup is the exec file's name: it must be one */
	assert_int_equal(parse_over(&a, "--exec-file", "/x/em ber", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--exec-file", "/x/em ber", "--parent-cgroup", "vms", NULL),
			 0);
}

/* Each option once: the second of two is refused, naming both values. */
static void test_parse_repeats(void **state)
{
	struct jailer_args a;
	assert_int_equal(parse(&a, BASE, "--id", "vm-1", NULL), -EINVAL);
	assert_string_equal(err, "--id given twice (\"vm-1\", then \"vm-1\")");
	assert_int_equal(parse(&a, BASE, "--exec-file=/x/ember", NULL), -EINVAL);
	assert_string_equal(err, "--exec-file given twice (\"/usr/bin/ember\", then \"/x/ember\")");
	assert_int_equal(parse(&a, BASE, "--uid", "7", NULL), -EINVAL);
	assert_non_null(strstr(err, "--uid given twice"));
	assert_int_equal(parse(&a, BASE, "--gid", "7", NULL), -EINVAL);
	assert_non_null(strstr(err, "--gid given twice"));
	static const char *const once[] = {"--chroot-base-dir", "/a", "--netns",	 "/a",
					   "--cgroup-version",	"1",  "--parent-cgroup", "a"};
	for (unsigned i = 0; i < 8; i += 2) {
		assert_int_equal(parse(&a, BASE, once[i], once[i + 1], NULL), 0);
		assert_int_equal(parse(&a, BASE, once[i], once[i + 1], once[i], once[i + 1], NULL),
				 -EINVAL);
		assert_non_null(strstr(err, "given twice"));
		assert_non_null(strstr(err, once[i]));
	}
	assert_int_equal(parse(&a, BASE, "--daemonize", "--daemonize", NULL), -EINVAL);
	assert_string_equal(err, "--daemonize given twice");
	assert_int_equal(parse(&a, BASE, "--new-pid-ns", "--new-pid-ns", NULL), -EINVAL);
	assert_string_equal(err, "--new-pid-ns given twice");
	/* --cgroup and --resource-limit repeat, once per file or resource */
	assert_int_equal(parse(&a, BASE, "--cgroup", "cpu.shares=1", "--cgroup",
			       "cpu.cfs_quota_us=1", "--resource-limit", "fsize=1",
			       "--resource-limit", "no-file=9", NULL),
			 0);
	assert_int_equal(parse(&a, BASE, "--cgroup", "pids.max=1", "--cgroup=pids.max=2", NULL),
			 -EINVAL);
	assert_string_equal(err, "--cgroup pids.max given twice (\"1\", then \"2\")");
	assert_int_equal(
	    parse(&a, BASE, "--resource-limit", "fsize=1", "--resource-limit", "fsize=1", NULL),
	    -EINVAL);
	assert_string_equal(err, "--resource-limit fsize given twice");
}

/* uid 0 and gid 0 are root's: refused as numbers here, as names once
 * they are looked up (jail/jailer.c). */
static void test_parse_root_ids(void **state)
{
	struct jailer_args a;
	assert_int_equal(parse_over(&a, "--uid", "0", NULL), -EINVAL);
	assert_string_equal(err, "--uid \"0\": uid 0 is root; the jail needs an unprivileged uid");
	assert_int_equal(parse_over(&a, "--uid", "000", NULL), -EINVAL);
	assert_int_equal(parse_over(&a, "--gid", "0", NULL), -EINVAL);
	assert_string_equal(
	    err, "--gid \"0\": gid 0 is root's group; the jail needs an unprivileged gid");
	assert_int_equal(parse_over(&a, "--uid", "1", "--gid", "1", NULL), 0);
	assert_int_equal(parse_over(&a, "--uid", "root", "--gid", "root", NULL), 0);
}

static void test_rlimits(void **state)
{
	struct jailer_rlimit l;
	assert_int_equal(jailer_parse_rlimit("no-file=2048", &l), 0);
	assert_int_equal(l.resource, RLIMIT_NOFILE);
	assert_string_equal(l.name, "no-file");
	assert_int_equal(l.value, 2048);
	assert_int_equal(jailer_parse_rlimit("fsize=0", &l), 0);
	assert_int_equal(l.resource, RLIMIT_FSIZE);
	assert_int_equal(l.value, 0);
	assert_int_equal(jailer_parse_rlimit("fsize=18446744073709551614", &l), 0);
	assert_int_equal(jailer_parse_rlimit("fsize=18446744073709551615", &l),
			 -EINVAL); /* infinity */
	assert_int_equal(jailer_parse_rlimit("fsize=18446744073709551616", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("no-file=", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("no-file=-1", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("no-file=1k", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("no-file= 1", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("nofile=1", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("no-file", &l), -EINVAL);
	assert_int_equal(jailer_parse_rlimit("=1", &l), -EINVAL);
}

static void test_cgroup_specs(void **state)
{
	struct jailer_cgroup c;
	assert_int_equal(jailer_parse_cgroup("cpuset.cpus=0-3", &c), 0);
	assert_string_equal(c.controller, "cpuset");
	assert_string_equal(c.file, "cpuset.cpus");
	assert_string_equal(c.value, "0-3");
	assert_int_equal(jailer_parse_cgroup("memory.limit_in_bytes=268435456", &c), 0);
	assert_string_equal(c.controller, "memory");
	assert_int_equal(jailer_parse_cgroup("pids.max=max", &c), 0);
	assert_int_equal(jailer_parse_cgroup("cpu.cfs_quota_us=50000", &c), 0);
	/* the value may hold '=' and spaces (cpu.max "quota period") */
	assert_int_equal(jailer_parse_cgroup("cpu.max=50000 100000", &c), 0);
	assert_string_equal(c.value, "50000 100000");
	assert_int_equal(jailer_parse_cgroup("cpu.x=a=b", &c), 0);
	assert_string_equal(c.value, "a=b");

	assert_int_equal(jailer_parse_cgroup("blkio.weight=100", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpuacct.usage=0", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu=1", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup(".shares=1", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu.=1", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu.shares=", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu.shares=1\n2", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu.shares", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu./../../tasks=1", &c), -EINVAL);
	assert_int_equal(jailer_parse_cgroup("cpu.a/b=1", &c), -EINVAL);
}

static void test_id_numbers(void **state)
{
	uint32_t v;
	assert_int_equal(jailer_parse_id_number("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(jailer_parse_id_number("123", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(jailer_parse_id_number("4294967294", &v), 0);
	assert_int_equal(jailer_parse_id_number("4294967295", &v), -EINVAL);
	assert_int_equal(jailer_parse_id_number("", &v), -EINVAL);
	assert_int_equal(jailer_parse_id_number("nobody", &v), -ENOENT);
	assert_int_equal(jailer_parse_id_number("12ab", &v), -EINVAL);
	assert_int_equal(jailer_parse_id_number("-1", &v), -EINVAL);
	assert_int_equal(jailer_parse_id_number("_apt", &v), -ENOENT);
	assert_int_equal(jailer_parse_id_number("machine$", &v), -ENOENT);
	assert_int_equal(jailer_parse_id_number("a b", &v), -EINVAL);
	assert_int_equal(jailer_parse_id_number("../x", &v), -EINVAL);
}

static void test_cgroup_paths(void **state)
{
	assert_int_equal(jailer_check_cgroup_path("ember"), 0);
	assert_int_equal(jailer_check_cgroup_path("all_uvms/external_uvms"), 0);
	assert_int_equal(jailer_check_cgroup_path("a.b-c_d"), 0);
	assert_int_equal(jailer_check_cgroup_path(""), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path("/abs"), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path("a//b"), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path("a/"), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path(".."), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path("a/../b"), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path("./a"), -EINVAL);
	assert_int_equal(jailer_check_cgroup_path("a b"), -EINVAL);

	char p[64];
	assert_int_equal(jailer_path_join(p, sizeof(p), "/sys/fs/cgroup/cpu", "ember", "vm-1"), 0);
	assert_string_equal(p, "/sys/fs/cgroup/cpu/ember/vm-1");
	assert_int_equal(jailer_path_join(p, sizeof(p), "/srv/jailer", "ember", NULL), 0);
	assert_string_equal(p, "/srv/jailer/ember");
	assert_int_equal(jailer_path_join(p, 10, "/srv/jailer", "ember", NULL), -ENAMETOOLONG);

	assert_string_equal(jailer_exec_name("/usr/bin/ember"), "ember");
	assert_string_equal(jailer_exec_name("ember"), "ember");
	assert_string_equal(jailer_exec_name("./build/ember"), "ember");
	assert_string_equal(jailer_exec_name("/usr/bin/"), "");
}

/* The host's own layout: v1 controllers each on its mount, a named
 * systemd hierarchy, and cgroup2 beside them ("hybrid"). */
static const char mounts_hybrid[] =
    "/dev/vda / ext4 rw,relatime 0 0\n"
    "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
    "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
    "cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n"
    "cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\n"
    "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
    "cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n"
    "cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

/* A distribution's v1 with joined controllers and an escaped space. */
static const char mounts_joined[] =
    "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n"
    "cgroup /sys/fs/cgroup/my\\040pids cgroup rw,pids 0 0\n";

/* Pure v2 (systemd's unified layout). */
static const char mounts_v2[] =
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n";

static void test_cgroup_mounts(void **state)
{
	char m[256];
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 1, "cpu", m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/cpu"); /* not cpuacct: whole words */
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 1, "cpuset", m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/cpuset");
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 1, "memory", m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/memory");
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 1, "pids", m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/pids");
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 2, NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/unified");
	/* "rw" and "relatime" are options, not controllers */
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 1, "rw", m, sizeof(m)), 0);
	assert_int_equal(jailer_cgroup_mount(mounts_hybrid, 1, "blkio", m, sizeof(m)), -ENOENT);

	assert_int_equal(jailer_cgroup_mount(mounts_joined, 1, "cpu", m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/cpu,cpuacct");
	assert_int_equal(jailer_cgroup_mount(mounts_joined, 1, "pids", m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup/my pids");
	assert_int_equal(jailer_cgroup_mount(mounts_joined, 2, NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(jailer_cgroup_mount(mounts_joined, 1, "cpu", m, 8), -ENAMETOOLONG);

	assert_int_equal(jailer_cgroup_mount(mounts_v2, 2, NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "/sys/fs/cgroup");
	assert_int_equal(jailer_cgroup_mount(mounts_v2, 1, "cpu", m, sizeof(m)), -ENOENT);
	assert_int_equal(jailer_cgroup_mount("", 1, "cpu", m, sizeof(m)), -ENOENT);
	assert_int_equal(jailer_cgroup_mount("garbage\n\n  \n", 2, NULL, m, sizeof(m)), -ENOENT);
}

static void test_self_cgroup(void **state)
{
	static const char self[] = "9:name=systemd:/\n"
				   "8:pids:/\n"
				   "4:memory:/process_api/ad28\n"
				   "2:cpu,cpuacct:/user.slice\n"
				   "0::/init.scope\n";
	char p[64];
	assert_int_equal(jailer_self_cgroup(self, 1, "memory", p, sizeof(p)), 0);
	assert_string_equal(p, "process_api/ad28");
	assert_int_equal(jailer_self_cgroup(self, 1, "pids", p, sizeof(p)), 0);
	assert_string_equal(p, "");
	assert_int_equal(jailer_self_cgroup(self, 1, "cpuacct", p, sizeof(p)), 0);
	assert_string_equal(p, "user.slice");
	assert_int_equal(jailer_self_cgroup(self, 1, "cpuset", p, sizeof(p)), -ENOENT);
	assert_int_equal(jailer_self_cgroup(self, 2, NULL, p, sizeof(p)), 0);
	assert_string_equal(p, "init.scope");
	assert_int_equal(jailer_self_cgroup("0::/\n", 2, NULL, p, sizeof(p)), 0);
	assert_string_equal(p, "");
	assert_int_equal(jailer_self_cgroup(self, 1, "memory", p, 8), -ENAMETOOLONG);
}

static void test_v2_subtree_line(void **state)
{
	struct jailer_args a;
	char line[64];
	assert_int_equal(parse(&a, BASE, "--cgroup-version", "2", "--cgroup", "cpu.weight=100",
			       "--cgroup", "memory.max=1G", "--cgroup", "cpu.max=max", "--cgroup",
			       "pids.max=10", NULL),
			 0);
	assert_int_equal(jailer_subtree_line(&a, line, sizeof(line)), 0);
	assert_string_equal(line, "+cpu +memory +pids"); /* each controller once */
	assert_int_equal(jailer_subtree_line(&a, line, 8), -ENAMETOOLONG);
	assert_int_equal(parse(&a, BASE, NULL), 0);
	assert_int_equal(jailer_subtree_line(&a, line, sizeof(line)), 0);
	assert_string_equal(line, "");
}

static void test_words(void **state)
{
	assert_true(jailer_has_word("cpuset cpu io memory pids\n", "cpu"));
	assert_true(jailer_has_word("cpuset cpu io memory pids\n", "pids"));
	assert_false(jailer_has_word("cpuset io memory\n", "cpu"));
	assert_true(jailer_has_word("rw,relatime,cpu,cpuacct", "cpuacct"));
	assert_false(jailer_has_word("rw,relatime,cpuacct", "cpu"));
	assert_false(jailer_has_word("", "cpu"));
	assert_false(jailer_has_word("cpu", ""));
}

/* A minimal ELF: header plus program headers of the given types. */
static size_t elf(uint8_t *buf, uint16_t type, uint16_t machine, const uint32_t *phtypes,
		  unsigned n)
{
	Elf64_Ehdr eh = {0};
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = type;
	eh.e_machine = machine;
	eh.e_phoff = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = (uint16_t)n;
	memcpy(buf, &eh, sizeof(eh));
	for (unsigned i = 0; i < n; i++) {
		Elf64_Phdr ph = {.p_type = phtypes[i]};
		memcpy(buf + sizeof(eh) + i * sizeof(ph), &ph, sizeof(ph));
	}
	return sizeof(eh) + n * sizeof(Elf64_Phdr);
}

static void test_static_elf(void **state)
{
	uint8_t img[1024];
	char why[160];
	const uint32_t stat[] = {PT_LOAD, PT_LOAD, PT_TLS, PT_GNU_STACK};
	const uint32_t dyn[] = {PT_PHDR, PT_INTERP, PT_LOAD, PT_DYNAMIC};
	size_t n = elf(img, ET_EXEC, EM_X86_64, stat, 4);
	assert_int_equal(jailer_check_static_elf(img, n, why, sizeof(why)), 0);
	n = elf(img, ET_DYN, EM_X86_64, stat, 4); /* static-pie */
	assert_int_equal(jailer_check_static_elf(img, n, why, sizeof(why)), 0);
	n = elf(img, ET_DYN, EM_X86_64, dyn, 4);
	assert_int_equal(jailer_check_static_elf(img, n, why, sizeof(why)), -ENOEXEC);
	assert_non_null(strstr(why, "dynamically linked"));
	n = elf(img, ET_EXEC, EM_AARCH64, stat, 4);
	assert_int_equal(jailer_check_static_elf(img, n, why, sizeof(why)), -ENOEXEC);
	n = elf(img, ET_REL, EM_X86_64, stat, 4);
	assert_int_equal(jailer_check_static_elf(img, n, why, sizeof(why)), -ENOEXEC);
	n = elf(img, ET_EXEC, EM_X86_64, stat, 4);
	/* program headers cut off */
	assert_int_equal(jailer_check_static_elf(img, n - 1, why, sizeof(why)), -ENOEXEC);
	assert_int_equal(jailer_check_static_elf(img, 10, why, sizeof(why)), -ENOEXEC);
	const char script[] = "#!/bin/sh\nexec true\n";
	assert_int_equal(
	    jailer_check_static_elf((const uint8_t *)script, sizeof(script), why, sizeof(why)),
	    -ENOEXEC);
	assert_non_null(strstr(why, "not an ELF"));
	/* e_phoff far outside the image */
	Elf64_Ehdr eh;
	n = elf(img, ET_EXEC, EM_X86_64, stat, 4);
	memcpy(&eh, img, sizeof(eh));
	eh.e_phoff = UINT64_MAX - 8;
	memcpy(img, &eh, sizeof(eh));
	assert_int_equal(jailer_check_static_elf(img, n, why, sizeof(why)), -ENOEXEC);
}

static void test_kinds(void **state)
{
	assert_string_equal(jailer_kind(S_IFIFO | 0644), "a FIFO");
	assert_string_equal(jailer_kind(S_IFLNK | 0777), "a symbolic link");
	assert_string_equal(jailer_kind(S_IFREG), "a regular file");
	assert_string_equal(jailer_kind(S_IFDIR | 0755), "a directory");
	assert_string_equal(jailer_kind(S_IFSOCK), "a socket");
	assert_string_equal(jailer_kind(S_IFCHR), "a character device");
	assert_string_equal(jailer_kind(S_IFBLK), "a block device");
	assert_string_equal(jailer_kind(0), "of an unknown kind");
}

/* A folder with what a last tenant could leave: T/jail/{a/, link -> T/host,
 * fifo, file}, and T/host/sentinel outside. */
static struct jailer wj;
static char top[64];
static int jail_fd;

static int walk_setup(void **state)
{
	char p[128];
	snprintf(top, sizeof(top), "/tmp/ember-test-jailer-XXXXXX");
	if (!mkdtemp(top))
		return -1;
	snprintf(p, sizeof(p), "%s/host", top);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/host/sentinel", top);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0 || write(fd, "sentinel\n", 9) != 9)
		return -1;
	close(fd);
	snprintf(p, sizeof(p), "%s/jail", top);
	mkdir(p, 0755);
	jail_fd = open(p, O_PATH | O_DIRECTORY);
	snprintf(p, sizeof(p), "%s/host", top);
	if (jail_fd < 0 || mkdirat(jail_fd, "a", 0755) || symlinkat(p, jail_fd, "link") ||
	    mkfifoat(jail_fd, "fifo", 0644))
		return -1;
	fd = openat(jail_fd, "file", O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		return -1;
	close(fd);
	memset(&wj, 0, sizeof(wj));
	return 0;
}

static int walk_teardown(void **state)
{
	char cmd[128];
	close(jail_fd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", top);
	return system(cmd) == 0 ? 0 : -1;
}

/* The host folder holds its sentinel and nothing else. */
static void assert_host_intact(void)
{
	char p[128], buf[16] = {0};
	snprintf(p, sizeof(p), "%s/host/sentinel", top);
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 9);
	close(fd);
	assert_string_equal(buf, "sentinel\n");
	struct stat st;
	snprintf(p, sizeof(p), "%s/host", top);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_nlink, 2); /* no folder made in it */
	snprintf(p, sizeof(p), "%s/host/x", top);
	assert_int_equal(access(p, F_OK), -1);
}

static void test_walk(void **state)
{
	int fd;
	assert_int_equal(jailer_walk(&wj, jail_fd, "J", "a/b/c", JAILER_WALK_CREATE, UNDO_DIR, &fd),
			 0);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(wj.nr_undo, 2); /* b and c were made; a was there */
	assert_int_equal(faccessat(jail_fd, "a/b/c", F_OK, 0), 0);
	jailer_undo_all(&wj);
	assert_int_equal(faccessat(jail_fd, "a/b", F_OK, 0), -1);
	assert_int_equal(faccessat(jail_fd, "a", F_OK, 0), 0);

	/* without JAILER_WALK_CREATE a missing folder is no error */
	assert_int_equal(jailer_walk(&wj, jail_fd, "J", "a/none/x", 0, UNDO_DIR, &fd), 0);
	assert_int_equal(fd, -1);
	assert_int_equal(wj.nr_undo, 0);

	static const struct {
		const char *path, *err;
	} refused[] = {
	    {"link/x", "J/link: is a symbolic link, not a directory (ember-jailer follows no link "
		       "in a jail)"},
	    {"link", "J/link: is a symbolic link"},
	    {"fifo/x", "J/fifo: is a FIFO, not a directory"},
	    {"file/x", "J/file: is a regular file, not a directory"},
	    {"a/../link/x", "J/a/..: "},
	};
	for (unsigned i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		for (unsigned how = 0; how <= JAILER_WALK_CREATE; how++) {
			int r = jailer_walk(&wj, jail_fd, "J", refused[i].path, how, UNDO_DIR, &fd);
			assert_int_not_equal(r, 0);
			assert_int_equal(fd, -1);
			assert_non_null(strstr(wj.err, refused[i].err));
		}
	}
	assert_int_equal(wj.nr_undo, 0);
	assert_host_intact();
}

static void test_open_beneath(void **state)
{
	int fd = jailer_open_beneath(jail_fd, "link", O_PATH | O_CLOEXEC, 0);
	assert_int_equal(fd, -ELOOP);
	assert_int_equal(jailer_open_beneath(jail_fd, "../host/sentinel", O_RDONLY, 0), -EXDEV);
	assert_int_equal(jailer_open_beneath(jail_fd, "link/sentinel", O_RDONLY, 0), -ELOOP);
	fd = jailer_open_beneath(jail_fd, "file", O_RDONLY | O_CLOEXEC, 0);
	assert_true(fd >= 0);
	close(fd);
}

static void test_open_file(void **state)
{
	int fd;
	/* a FIFO is looked at, not opened: no hang */
	assert_int_equal(
	    jailer_open_file(&wj, jail_fd, "fifo", "F", 0, O_RDONLY, "a regular file", &fd),
	    JAILER_EXIT_USAGE);
	assert_string_equal(wj.err, "F: is a FIFO, not a regular file");
	assert_int_equal(fd, -1);
	assert_int_equal(
	    jailer_open_file(&wj, jail_fd, "link", "L", 0, O_RDONLY, "a regular file", &fd),
	    JAILER_EXIT_USAGE);
	assert_non_null(strstr(wj.err, "L: is a symbolic link, not a regular file"));
	assert_int_equal(jailer_open_file(&wj, jail_fd, "a", "A", 0, O_RDONLY, "a thing", &fd),
			 JAILER_EXIT_USAGE);
	assert_string_equal(wj.err, "A: is a directory, not a thing");
	assert_int_equal(jailer_open_file(&wj, jail_fd, "none", "N", JAILER_OPEN_MISSING_OK,
					  O_RDONLY, "a regular file", &fd),
			 0);
	assert_int_equal(fd, -1);
	assert_int_equal(jailer_open_file(&wj, jail_fd, "none", "N", JAILER_OPEN_HOST_ERRORS,
					  O_RDONLY, "a regular file", &fd),
			 JAILER_EXIT_HOST);
	assert_int_equal(
	    jailer_open_file(&wj, jail_fd, "file", "R", 0, O_RDWR, "a regular file", &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_GETFL) & (O_NONBLOCK | O_ACCMODE), O_RDWR);
	close(fd);
	/* the operator's paths are followed: through the link to the file */
	assert_int_equal(jailer_open_file(&wj, jail_fd, "link/sentinel", "S", JAILER_WALK_FOLLOW,
					  O_RDONLY, "a regular file", &fd),
			 0);
	close(fd);
	assert_host_intact();
}

static void test_replace_file(void **state)
{
	int fd;
	/* whatever is there goes, never followed; a new file takes its place */
	static const char *const names[] = {"link", "fifo", "file", "new"};
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(jailer_replace_file(&wj, jail_fd, "J", names[i], 0600, &fd), 0);
		assert_int_equal(write(fd, "x", 1), 1);
		close(fd);
		struct stat st;
		assert_int_equal(fstatat(jail_fd, names[i], &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_size, 1);
	}
	assert_int_equal(wj.nr_undo, 4);
	jailer_undo_all(&wj);
	assert_int_equal(faccessat(jail_fd, "new", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	/* a directory is not removed */
	assert_int_equal(jailer_replace_file(&wj, jail_fd, "J", "a", 0600, &fd), JAILER_EXIT_USAGE);
	assert_string_equal(wj.err, "J/a: is a directory, where the jail needs a file of its own");
	assert_int_equal(faccessat(jail_fd, "a", F_OK, 0), 0);
	assert_int_equal(wj.nr_undo, 0);
	assert_host_intact();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ids),
	    cmocka_unit_test(test_parse_minimal_and_defaults),
	    cmocka_unit_test(test_parse_everything),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_parse_repeats),
	    cmocka_unit_test(test_parse_root_ids),
	    cmocka_unit_test(test_rlimits),
	    cmocka_unit_test(test_cgroup_specs),
	    cmocka_unit_test(test_id_numbers),
	    cmocka_unit_test(test_cgroup_paths),
	    cmocka_unit_test(test_cgroup_mounts),
	    cmocka_unit_test(test_self_cgroup),
	    cmocka_unit_test(test_v2_subtree_line),
	    cmocka_unit_test(test_words),
	    cmocka_unit_test(test_static_elf),
	    cmocka_unit_test(test_kinds),
	    cmocka_unit_test_setup_teardown(test_walk, walk_setup, walk_teardown),
	    cmocka_unit_test_setup_teardown(test_open_beneath, walk_setup, walk_teardown),
	    cmocka_unit_test_setup_teardown(test_open_file, walk_setup, walk_teardown),
	    cmocka_unit_test_setup_teardown(test_replace_file, walk_setup, walk_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
