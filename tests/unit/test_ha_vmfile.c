/* emberd's VM files (ha/emberd/vmfile.c): the [emberd] keys and their
 * refusals ("FILE:LINE: [emberd] key: why"), the ember keys emberd reads
 * (name, size, kernel, drives; relative paths from the file's folder),
 * and the jail's copy of the file (paths rewritten, [emberd] left out,
 * continuation lines carried). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ha/emberd/local.h"

static char dir[] = "/tmp/test_ha_vmfile.XXXXXX";

static const char *file(const char *name, const char *text)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void test_good(void **state)
{
	(void)state;
	struct ed_vmfile f;
	char err[ED_ERR_MAX] = "";
	const char *p =
	    file("web-1.ini", "[vm]\nkernel = k.elf\nmemory = 128M\nvcpus = 2\n"
			      "[drive.root]\npath = /img/root\nread_only = on\n"
			      "[block.data]\npath = data.img\n"
			      "[emberd]\nrestart = always ; a comment\nrestart_attempts = 7\n"
			      "restart_interval = 2m\nrestart_delay = 250ms\n"
			      "restart_max_delay = 10s\nsnapshot_interval = 30s\n"
			      "resume = rollback\nautostart = false\nhosts = a, b\n"
			      "avoid_hosts = c\n");
	assert_int_equal(ed_vmfile_parse(p, &f, err, sizeof(err)), 0);
	assert_string_equal(f.name, "web-1"); /* the stem */
	assert_int_equal(f.mem_bytes, 128ULL << 20);
	assert_int_equal(f.vcpus, 2);
	char want[300];
	snprintf(want, sizeof(want), "%s/k.elf", dir);
	assert_string_equal(f.kernel, want);
	assert_int_equal(f.nr_drives, 2);
	assert_string_equal(f.drives[0].id, "root");
	assert_true(f.drives[0].ro);
	snprintf(want, sizeof(want), "%s/data.img", dir);
	assert_string_equal(f.drives[1].path, want);
	assert_false(f.drives[1].ro);
	assert_false(ed_vmfile_all_ro(&f));
	assert_int_equal(f.pol.restart, ED_RESTART_ALWAYS);
	assert_int_equal(f.pol.attempts, 7);
	assert_int_equal(f.pol.interval_ms, 120000);
	assert_int_equal(f.pol.delay_ms, 250);
	assert_int_equal(f.pol.max_delay_ms, 10000);
	assert_int_equal(f.pol.snapshot_ms, 30000);
	assert_int_equal(f.pol.resume, ED_RESUME_ROLLBACK);
	assert_false(f.pol.autostart);
	assert_string_equal(f.hosts[0], "a");
	assert_string_equal(f.hosts[1], "b");
	assert_null(f.hosts[2]);
	assert_string_equal(f.avoid[0], "c");
	assert_null(f.avoid[1]);
	ed_vmfile_free(&f);
}

static void test_defaults(void **state)
{
	(void)state;
	struct ed_vmfile f;
	char err[ED_ERR_MAX] = "";
	const char *p = file("d.ini", "[vm]\nkernel = /k\nname = other\n");
	assert_int_equal(ed_vmfile_parse(p, &f, err, sizeof(err)), 0);
	assert_string_equal(f.name, "other");
	assert_int_equal(f.mem_bytes, 64ULL << 20);
	assert_int_equal(f.pol.restart, ED_RESTART_ON_FAILURE);
	assert_int_equal(f.pol.attempts, 5);
	assert_int_equal(f.pol.interval_ms, 60000);
	assert_int_equal(f.pol.delay_ms, 100);
	assert_int_equal(f.pol.max_delay_ms, 30000);
	assert_int_equal(f.pol.snapshot_ms, 0);
	assert_int_equal(f.pol.resume, ED_RESUME_AUTO);
	assert_true(f.pol.autostart);
	assert_null(f.hosts[0]);
	assert_true(ed_vmfile_all_ro(&f)); /* no drive at all */
	ed_vmfile_free(&f);
}

static void refused(const char *name, const char *text, const char *want)
{
	struct ed_vmfile f;
	char err[ED_ERR_MAX] = "", full[600];
	const char *p = file(name, text);
	assert_int_equal(ed_vmfile_parse(p, &f, err, sizeof(err)), -EINVAL);
	snprintf(full, sizeof(full), "%s/%s%s", dir, name, want);
	if (strncmp(err, full, strlen(full))) {
		fprintf(stderr, "got:  %s\nwant: %s...\n", err, full);
		fail();
	}
}

static void test_refusals(void **state)
{
	(void)state;
	const char *k = "[vm]\nkernel = /k\n[emberd]\n";
	char t[512];
	static const struct {
		const char *key, *msg;
	} bad[] = {
	    {"restart = sometimes", ":4: [emberd] restart: \"sometimes\": expected always"},
	    {"restart_delay = 5", ":4: [emberd] restart_delay: \"5\" is not a duration"},
	    {"restart_interval = 0", ":4: [emberd] restart_interval: must be more than 0"},
	    {"snapshot_interval = 10ms", ":4: [emberd] snapshot_interval: at least 100ms"},
	    {"restart_attempts = -1", ":4: [emberd] restart_attempts: \"-1\": expected a number"},
	    {"resume = maybe", ":4: [emberd] resume: \"maybe\": expected auto, never or rollback"},
	    {"autostart = perhaps", ":4: [emberd] autostart: \"perhaps\": expected true or false"},
	    {"hosts = a,b_c", ":4: [emberd] hosts: \"b_c\" is not a host name"},
	    {"colour = red", ":4: [emberd] colour: unknown key (known: restart,"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(t, sizeof(t), "%s%s\n", k, bad[i].key);
		refused("bad.ini", t, bad[i].msg);
	}
	refused("bad.ini", "[vm]\nname = has_underscore\nkernel = /k\n",
		":2: [vm] name: \"has_underscore\": emberd's VM names");
	refused("bad.ini", "[vm]\nmemory = lots\nkernel = /k\n", ":2: [vm] memory: \"lots\"");
	refused("bad.ini", "[vm]\nvcpus = 1\n", ": [vm] kernel: missing");
	refused("a_b.ini", "[vm]\nkernel = /k\n", ": the VM's name (the file's stem");
	refused("bad.ini", "[vm]\nkernel = /k\n[drive.d]\nread_only = on\n",
		": [drive.d] path: missing");
	refused("bad.ini", "[vm]\nkernel = /k\nthis is not ini\n", ":3: not an INI line");
}

static void test_jail_copy(void **state)
{
	(void)state;
	struct ed_vmfile f;
	char err[ED_ERR_MAX] = "", out[300], buf[2048] = "";
	const char *p =
	    file("j.ini", "; top comment\n[vm]\nkernel = /host/k.elf\n"
			  "cmdline = console=ttyS0\n  quiet\ninitrd = /host/initrd\n"
			  "[emberd]\nrestart = always\n[drive.d0]\npath = /host/d0.img\n"
			  "read_only = off\n[vsock]\ncid = 3\nuds = /host/v.sock\n");
	assert_int_equal(ed_vmfile_parse(p, &f, err, sizeof(err)), 0);
	snprintf(out, sizeof(out), "%s/vm.ini", dir);
	assert_int_equal(ed_vmfile_write_jail(&f, out, err, sizeof(err)), 0);
	FILE *in = fopen(out, "r");
	assert_non_null(in);
	size_t n = fread(buf, 1, sizeof(buf) - 1, in);
	buf[n] = '\0';
	fclose(in);
	assert_string_equal(buf,
			    "; top comment\n[vm]\nkernel = /vm/kernel\n"
			    "cmdline = console=ttyS0\n  quiet\ninitrd = /vm/initrd\n"
			    "[drive.d0]\npath = /vm/drive-d0\nread_only = off\n[vsock]\ncid = 3\n"
			    "uds = /vsock.sock\n[serial]\noutput = stdout\n");
	ed_vmfile_free(&f);
	/* a [serial] section of its own: its output goes to the console log */
	p = file("s.ini", "[vm]\nkernel = /k\n[serial]\noutput = /var/log/x\n");
	assert_int_equal(ed_vmfile_parse(p, &f, err, sizeof(err)), 0);
	assert_int_equal(ed_vmfile_write_jail(&f, out, err, sizeof(err)), 0);
	in = fopen(out, "r");
	n = fread(buf, 1, sizeof(buf) - 1, in);
	buf[n] = '\0';
	fclose(in);
	assert_string_equal(buf, "[vm]\nkernel = /vm/kernel\n[serial]\noutput = stdout\n");
	ed_vmfile_free(&f);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_jail_copy),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
