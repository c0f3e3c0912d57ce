/* config/: INI files, cfg_set, sizes, durations and cfg_validate.  INI
 * files are written to a fresh temporary folder, so relative paths and
 * line numbers are checked on real files. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>

#include "config_fixture.h"

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static void test_defaults(void **state)
{
	struct vm_config c;

	(void)state;
	memset(&c, 0xa5, sizeof(c));
	cfg_defaults(&c);
	assert_string_equal(c.name, "ember");
	assert_int_equal(c.vcpus, 1);
	assert_int_equal(c.mem_size, 64ULL << 20);
	assert_string_equal(c.kernel, "");
	assert_string_equal(c.initrd, "");
	assert_string_equal(c.cmdline, "");
	assert_int_equal(c.cmdline_len, 0);
	assert_string_equal(c.serial_out, "stdout");
	assert_int_equal(c.timeout_ms, 0);
	assert_int_equal(c.irqchip, CFG_IRQCHIP_AUTO);
}

static void test_ini_good(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "good.ini",
				      "; a comment\n"
				      "# another\n"
				      "\n"
				      "[vm]\n"
				      "name = web-1.test_A\n"
				      "vcpus = 4\n"
				      "memory = 256MiB   ; inline comment\n"
				      "kernel = /boot/vmlinuz\n"
				      "initrd = /boot/initrd.img\n"
				      "cmdline = console=ttyS0 \"quoted arg\"  reboot=k\n"
				      "timeout = 2.5\n"
				      "irqchip = off\n"
				      "\n"
				      "[serial]\n"
				      "output: none\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.name, "web-1.test_A");
	assert_int_equal(c.vcpus, 4);
	assert_int_equal(c.mem_size, 256ULL << 20);
	assert_string_equal(c.kernel, "/boot/vmlinuz");
	assert_string_equal(c.initrd, "/boot/initrd.img");
	assert_string_equal(c.cmdline, "console=ttyS0 \"quoted arg\"  reboot=k");
	assert_int_equal(c.cmdline_len, strlen(c.cmdline));
	assert_int_equal(c.timeout_ms, 2500);
	assert_int_equal(c.irqchip, CFG_IRQCHIP_OFF);
	assert_string_equal(c.serial_out, "none");
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);
}

/* On top of what c holds: keys the file leaves out keep their values. */
static void test_ini_partial_keeps_rest(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "partial.ini", "[vm]\nvcpus = 2\n[empty]\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_set(&c, "vm", "kernel", "/k", err, sizeof(err)), 0);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.vcpus, 2);
	assert_string_equal(c.kernel, "/k");
	assert_string_equal(c.name, "ember");
	assert_int_equal(c.mem_size, CFG_DEFAULT_MEM);
}

/* emberd's [emberd] section (docs/ha.md) is emberd's to check: ember
 * skips it, whatever its keys, and reads the rest as usual. */
static void test_ini_emberd_skipped(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "emberd.ini",
				      "[vm]\nkernel = /k\nvcpus = 2\n[emberd]\nrestart = always\n"
				      "anything = goes\n[serial]\noutput = none\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.vcpus, 2);
	assert_string_equal(c.serial_out, "none");
}

static void test_ini_relative_paths(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", want[256];
	const char *path;

	assert_int_equal(mkdir(strcat(strcpy(want, fx->dir), "/sub"), 0700), 0);
	path = write_file(fx, "sub/rel.ini",
			  "[vm]\nkernel = bzImage\ninitrd = ../img/initrd\n"
			  "[serial]\noutput = logs/console.log\n");
	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/sub/bzImage", fx->dir);
	assert_string_equal(c.kernel, want);
	snprintf(want, sizeof(want), "%s/sub/../img/initrd", fx->dir);
	assert_string_equal(c.initrd, want);
	snprintf(want, sizeof(want), "%s/sub/logs/console.log", fx->dir);
	assert_string_equal(c.serial_out, want);

	/* Absolute paths, the words stdout/none and an empty initrd stay. */
	path = write_file(fx, "abs.ini",
			  "[vm]\nkernel = /abs/k\ninitrd =\n[serial]\noutput = stdout\n");
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.kernel, "/abs/k");
	assert_string_equal(c.initrd, "");
	assert_string_equal(c.serial_out, "stdout");
	path = write_file(fx, "none.ini", "[serial]\noutput = ./none\n");
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/./none", fx->dir);
	assert_string_equal(c.serial_out, want);
}

/* An INI file named without a folder is in the working directory, and so
 * are its relative paths: they stay as written. */
static void test_ini_relative_no_folder(void **state)
{
	struct vm_config c;

	parse_ini_in_dir(*state, "[vm]\nkernel = bzImage\n", &c);
	assert_string_equal(c.kernel, "bzImage");
}

static void test_ini_crlf(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", want[128];
	const char *path = write_file(fx, "crlf.ini",
				      "[vm]\r\nname = dos\r\nmemory = 128M\r\n"
				      "cmdline = a b\r\nkernel = k\r\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.name, "dos");
	assert_int_equal(c.mem_size, 128ULL << 20);
	assert_string_equal(c.cmdline, "a b");
	assert_int_equal(c.cmdline_len, 3);
	snprintf(want, sizeof(want), "%s/k", fx->dir);
	assert_string_equal(c.kernel, want);

	path = write_file(fx, "crlf-bad.ini", "[vm]\r\n\r\nname = ok\r\nmemory = 12Q\r\n");
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:4: [vm] memory: \"12Q\" is not a size", path);
	assert_contains(err, want);
}

static void test_ini_bom(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "bom.ini", "\xEF\xBB\xBF[vm]\nvcpus = 3\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.vcpus, 3);
}

/* A long cmdline is written on indented continuation lines. */
static void test_ini_cmdline_continuation(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "cont.ini",
				      "[vm]\n"
				      "cmdline = console=ttyS0 reboot=k\n"
				      "    panic=1 pci=off\n"
				      "\n"
				      "; a comment between\n"
				      "\troot=/dev/vda   ; and one after\n"
				      "vcpus = 2\n"
				      "[serial]\n"
				      "  output = none\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.cmdline, "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda");
	assert_int_equal(c.cmdline_len, strlen(c.cmdline));
	assert_int_equal(c.vcpus, 2);
	/* Indented, but the first key of its section: a key, not a continuation. */
	assert_string_equal(c.serial_out, "none");

	/* An empty first line adds no leading space. */
	path = write_file(fx, "cont2.ini", "[vm]\ncmdline =\n  a=1\n  b=2\n");
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.cmdline, "a=1 b=2");
}

static void test_ini_cmdline_too_long(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", want[256];
	/* 1 + 60 lines of 150 characters: well over CFG_CMDLINE_MAX. */
	size_t cap = 64 * 160;
	char *text = malloc(cap), *p = text;
	const char *path;

	assert_non_null(text);
	p += sprintf(p, "[vm]\ncmdline = x\n");
	for (int i = 0; i < 60; i++) {
		*p++ = ' ';
		memset(p, 'a', 150);
		p += 150;
		*p++ = '\n';
	}
	*p = '\0';
	path = write_file(fx, "longcmd.ini", text);
	free(text);
	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
	/* 1 + 54 * 151 = 8155 fits; line 2 + 55 adds the 55th piece. */
	snprintf(want, sizeof(want), "%s:57: [vm] cmdline: 8306 bytes, longer than 8192", path);
	assert_string_equal(err, want);
	assert_int_equal(c.cmdline_len, 0); /* a failed file changes nothing */
}

static void test_ini_line_too_long(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", text[512], want[256];
	const char *path;

	/* Exactly 197 characters fits, even with CRLF. */
	memset(text, 0, sizeof(text));
	strcpy(text, "[vm]\r\ncmdline = ");
	memset(text + strlen(text), 'a', 197 - strlen("cmdline = "));
	strcat(text, "\r\n");
	path = write_file(fx, "line197.ini", text);
	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.cmdline_len, 187);

	/* 300 would be split by inih and its tail parsed as a line. */
	memset(text, 0, sizeof(text));
	strcpy(text, "[vm]\n\ncmdline = ");
	memset(text + strlen(text), 'a', 290);
	strcat(text, " root=/dev/vda\nvcpus = 2\n");
	path = write_file(fx, "line300.ini", text);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:3: line too long (at most 197 characters", path);
	assert_contains(err, want);
}

/* Write n bytes, NULs included, to DIR/name; returns its path. */
static const char *write_bytes(struct fixture *fx, const char *name, const char *bytes, size_t n)
{
	FILE *f;

	snprintf(fx->path, sizeof(fx->path), "%s/%s", fx->dir, name);
	f = fopen(fx->path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(bytes, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
	return fx->path;
}

/* A NUL byte: inih and strlen() stop there, so the rest of the line would
 * go unseen, and a long line with one passed the length check and was
 * split, its tail parsed as a line of its own (found by fuzz_ini). */
static void test_ini_nul_byte(void **state)
{
	static const char short_line[] = "[vm]\nkernel = k\0ignored\n";
	struct fixture *fx = *state;
	struct vm_config c, before;
	char err[CFG_ERR_MAX] = "", text[512], want[256];
	const char *path;
	size_t n;

	/* Line 3: "name = a", NUL, 250 blanks, "vcpus = 7" (the old split). */
	n = (size_t)sprintf(text, "[vm]\nkernel = k\nname = a");
	text[n++] = '\0';
	memset(text + n, ' ', 250);
	n += 250;
	n += (size_t)sprintf(text + n, "vcpus = 7\nmemory = 32M\n");
	path = write_bytes(fx, "nul.ini", text, n);
	cfg_defaults(&c);
	before = c;
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:3: a NUL byte in this line", path);
	assert_contains(err, want);
	assert_memory_equal(&c, &before, sizeof(c));

	path = write_bytes(fx, "nul-short.ini", short_line, sizeof(short_line) - 1);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: a NUL byte in this line", path);
	assert_contains(err, want);
}

static const struct bad_case bad_cases[] = {
    {"[vm]\nname = x\nmemory = 12Q\n", 3, "[vm] memory: \"12Q\" is not a size (use e.g. 64M, 1G)"},
    {"[vm]\nname = x\n\n\ncolour = red\n", 5,
     "[vm] colour: unknown key (known: name, vcpus, memory, kernel, initrd, cmdline, timeout, "
     "irqchip, dumpcore)"},
    {"[vm]\nname = x\n[serial]\nfile = x\n", 4, "[serial] file: unknown key (known: output)"},
    {"[vm]\nname = x\n\n\n\n[disk]\nsize = 1G\n", 7,
     "[disk] size: unknown section [disk] (known: [vm], [serial], [block.NAME], [net.NAME], [vsock], [rng], [drive.NAME])"},
    {"[vm]\nmemory = 64M\nvcpus = 1\nmemory = 128M\n", 4, "[vm] memory: duplicate key"},
    {"[vm]\nmemory = 64M\n[serial]\noutput = none\n[vm]\nmemory = 64M\n", 6,
     "[vm] memory: duplicate key"},
    {"[vm]\nvcpus = 0\n", 2, "[vm] vcpus: \"0\" is out of range: must be 1..32"},
    {"[vm]\nvcpus = 33\n", 2, "[vm] vcpus: \"33\" is out of range: must be 1..32"},
    {"[vm]\nvcpus = 99999999999999999999999\n", 2,
     "[vm] vcpus: \"99999999999999999999999\" is out"},
    {"[vm]\nvcpus = two\n", 2, "[vm] vcpus: \"two\" is not a number: must be 1..32"},
    {"[vm]\nvcpus = -1\n", 2, "[vm] vcpus: \"-1\" is not a number"},
    {"[vm]\nvcpus = 0x2\n", 2, "[vm] vcpus: \"0x2\" is not a number"},
    {"[vm]\nname = a/b\n", 2, "[vm] name: \"a/b\" has '/': use only A-Z a-z 0-9 _ . -"},
    {"[vm]\nname = two words\n", 2, "[vm] name: \"two words\" has ' '"},
    {"[vm]\nname = ..\n", 2, "[vm] name: \"..\" cannot be a name"},
    {"[vm]\nname =\n", 2, "[vm] name: must be 1..64 characters, not 0"},
    {"[vm]\nname = "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
     2, "[vm] name: must be 1..64 characters, not 65"},
    {"[vm]\nmemory = 0\n", 2, "[vm] memory: \"0\" is below the minimum 1M"},
    {"[vm]\nmemory = 512K\n", 2, "[vm] memory: \"512K\" is below the minimum 1M"},
    {"[vm]\nmemory = 2T\n", 2, "[vm] memory: \"2T\" is above the maximum 1T"},
    {"[vm]\nmemory = 4097K\n", 2, "[vm] memory: \"4097K\" is not a multiple of 4K"},
    {"[vm]\nmemory = 99999999999999999999G\n", 2,
     "[vm] memory: \"99999999999999999999G\" is too large (at most 1T)"},
    {"[vm]\nmemory = 1.5G\n", 2, "[vm] memory: \"1.5G\" is not a size"},
    {"[vm]\nkernel =\n", 2, "[vm] kernel: empty path"},
    {"[vm]\ntimeout = soon\n", 2,
     "[vm] timeout: \"soon\" is not a duration (use e.g. 30, 2.5, 500ms, 10s, 5m)"},
    {"[vm]\ntimeout = 99999999999999999999\n", 2,
     "[vm] timeout: \"99999999999999999999\" is too long"},
    {"[vm]\nirqchip = yes\n", 2, "[vm] irqchip: \"yes\" is not one of auto, on, off"},
    {"[serial]\noutput =\n", 2, "[serial] output: empty (use stdout, none or a file path)"},
    {"name = x\n[vm]\n", 1, "name: not in a section (put it under [vm] or [serial])"},
    {"[vm]\nname = x\nvcpus\n", 3, "syntax error (expected [section] or key = value)"},
    {"[vm\nname = x\n", 1, "syntax error"},
    /* inih's first error is a syntax error that the handler never saw... */
    {"[vm]\nvcpus\nmemory = 12Q\n", 2, "syntax error"},
    /* ...or ours, before a syntax error. */
    {"[vm]\nmemory = 12Q\nvcpus\n", 2, "[vm] memory: \"12Q\" is not a size"},
    /* Only the first of several errors is reported. */
    {"[vm]\nvcpus = 0\nmemory = 12Q\n[disk]\nx = 1\n", 2, "[vm] vcpus:"},
    /* An indented key after another is inih's continuation of it. */
    {"[vm]\nname = x\n  vcpus = 2\n", 3,
     "[vm] name: indented line \"vcpus = 2\" continues this value; only cmdline may"},
    {"[vm]\nkernel = k\n  [serial]\n", 3, "[vm] kernel: indented line \"[serial]\" continues"},
    {"[vm]\r\nname = x\r\nvcpus = 0\r\n", 3, "[vm] vcpus: \"0\" is out of range"},
};

/* Each message is checked up to its end: some cases give only its start. */
static void test_ini_bad(void **state)
{
	expect_bad_inis(*state, bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]), true);
}

static void test_ini_missing_file(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", path[128], want[256];

	snprintf(path, sizeof(path), "%s/no-such.ini", fx->dir);
	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: cannot open: %s", path, strerror(ENOENT));
	assert_string_equal(err, want);

	/* A folder (or a FIFO, a device) is not an INI file: refused before
	 * anything is read, without blocking. */
	assert_int_equal(cfg_parse_ini(fx->dir, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s: cannot open: not a regular file", fx->dir);
	assert_string_equal(err, want);
	snprintf(path, sizeof(path), "%s/fifo.ini", fx->dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
	unlink(path);
}

static void test_ini_empty_file(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c, before;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "empty.ini", "");

	cfg_defaults(&c);
	memcpy(&before, &c, sizeof(c));
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_memory_equal(&c, &before, sizeof(c));
}

/* The command line overrides the file, as often as it likes; cfg_set
 * takes paths as given and says why without a FILE:LINE prefix. */
static void test_set_overrides_ini(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path =
	    write_file(fx, "base.ini", "[vm]\nmemory = 128M\nkernel = bzImage\nvcpus = 2\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "vm", "memory", "256M", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "vm", "memory", "512M", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "vm", "kernel", "other/vmlinux", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "serial", "output", "out.log", err, sizeof(err)), 0);
	assert_int_equal(c.mem_size, 512ULL << 20);
	assert_string_equal(c.kernel, "other/vmlinux");
	assert_string_equal(c.serial_out, "out.log");
	assert_int_equal(c.vcpus, 2);

	/* A bad value leaves the old one. */
	assert_int_equal(cfg_set(&c, "vm", "memory", "12Q", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "\"12Q\" is not a size (use e.g. 64M, 1G)");
	assert_int_equal(c.mem_size, 512ULL << 20);
	assert_int_equal(cfg_set(&c, "vm", "vcpus", "0", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "\"0\" is out of range: must be 1..32");
	assert_int_equal(c.vcpus, 2);
	assert_int_equal(cfg_set(&c, "vm", "colour", "red", err, sizeof(err)), -EINVAL);
	assert_string_equal(err,
			    "unknown key (known: name, vcpus, memory, kernel, initrd, cmdline, "
			    "timeout, irqchip, dumpcore)");
	assert_int_equal(cfg_set(&c, "disk", "size", "1G", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown section [disk] (known: [vm], [serial], [block.NAME], "
				 "[net.NAME], [vsock], [rng], [drive.NAME])");
	assert_int_equal(cfg_set(&c, "vm", "timeout", "1.5G", err, sizeof(err)), -EINVAL);
	/* Overflow is -EINVAL too from cfg_set, as its contract says. */
	assert_int_equal(cfg_set(&c, "vm", "memory", "99999999999999999999G", err, sizeof(err)),
			 -EINVAL);
	/* No error buffer: still refused, nothing written. */
	assert_int_equal(cfg_set(&c, "vm", "irqchip", "maybe", NULL, 0), -EINVAL);
	assert_int_equal(cfg_set(&c, "vm", "irqchip", "on", NULL, 0), 0);
	assert_int_equal(c.irqchip, CFG_IRQCHIP_ON);
	assert_int_equal(cfg_set(&c, "vm", "irqchip", "auto", err, 4), 0);
	assert_int_equal(c.irqchip, CFG_IRQCHIP_AUTO);
	/* A short buffer is truncated, not overrun. */
	assert_int_equal(cfg_set(&c, "vm", "memory", "12Q", err, 5), -EINVAL);
	assert_string_equal(err, "\"12Q");
}

static void test_set_cmdline_and_paths(void **state)
{
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	char *big = malloc(CFG_CMDLINE_MAX + 2);

	(void)state;
	assert_non_null(big);
	cfg_defaults(&c);
	memset(big, 'c', CFG_CMDLINE_MAX + 1);
	big[CFG_CMDLINE_MAX] = '\0';
	assert_int_equal(cfg_set(&c, "vm", "cmdline", big, err, sizeof(err)), 0);
	assert_int_equal(c.cmdline_len, CFG_CMDLINE_MAX);
	big[CFG_CMDLINE_MAX] = 'c';
	big[CFG_CMDLINE_MAX + 1] = '\0';
	assert_int_equal(cfg_set(&c, "vm", "cmdline", big, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "8193 bytes, longer than 8192");
	assert_int_equal(c.cmdline_len, CFG_CMDLINE_MAX);
	assert_int_equal(cfg_set(&c, "vm", "cmdline", "", err, sizeof(err)), 0);
	assert_int_equal(c.cmdline_len, 0);
	free(big);

	big = malloc(CFG_PATH_MAX + 1);
	assert_non_null(big);
	memset(big, 'p', CFG_PATH_MAX);
	big[CFG_PATH_MAX - 1] = '\0';
	assert_int_equal(cfg_set(&c, "vm", "initrd", big, err, sizeof(err)), 0);
	assert_int_equal(strlen(c.initrd), CFG_PATH_MAX - 1);
	big[CFG_PATH_MAX - 1] = 'p';
	big[CFG_PATH_MAX] = '\0';
	assert_int_equal(cfg_set(&c, "vm", "kernel", big, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "path is 4096 bytes, longer than 4095");
	free(big);

	assert_int_equal(cfg_set(&c, "vm", "initrd", "", err, sizeof(err)), 0);
	assert_string_equal(c.initrd, "");
	assert_int_equal(cfg_set(&c, "vm", "name", "a", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "vm", "name",
				 "0123456789012345678901234567890123456789012345678901234567890123",
				 err, sizeof(err)),
			 0);
	assert_int_equal(strlen(c.name), 64);
	assert_int_equal(cfg_set(&c, "vm", "timeout", "5m", err, sizeof(err)), 0);
	assert_int_equal(c.timeout_ms, 300000);
}

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		uint64_t want;
	} good[] = {
	    {"64M", 64ULL << 20},
	    {"64m", 64ULL << 20},
	    {"64MiB", 64ULL << 20},
	    {"64mib", 64ULL << 20},
	    {"64MB", 64ULL << 20},
	    {"64mb", 64ULL << 20},
	    {"1G", 1ULL << 30},
	    {"1g", 1ULL << 30},
	    {"512K", 512ULL << 10},
	    {"512KiB", 512ULL << 10},
	    {"2T", 2ULL << 40},
	    {"4096", 4096ULL << 20}, /* bare = MiB */
	    {"1", 1ULL << 20},
	    {"007M", 7ULL << 20},
	    {"4096B", 4096},
	    {"4096b", 4096},
	    {"18446744073709551615B", UINT64_MAX},
	    {"16777215T", 16777215ULL << 40},
	};
	static const char *const invalid[] = {
	    "",	      "M",     "-1M",	" 64M",	 "64M ", "6 4M", "64 M",   "64Q",
	    "64MiBx", "64iB",  "64Mi",	"64Bi",	 "0",	 "0M",	 "0000",   "1.5G",
	    "+64M",   "0x40M", "64MBB", "64K\n", "KiB",	 "64BB", "64MiB ", "\t64",
	};
	static const char *const range[] = {
	    "99999999999999999999G",
	    "18446744073709551616B",
	    "18446744073709551615K",
	    "17179869184G",
	    "16777216T",
	    "99999999999999999999",
	    "17592186044416",
	};
	uint64_t b;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		b = 0;
		if (cfg_parse_size(good[i].s, &b) || b != good[i].want)
			fail_msg("\"%s\" gave %" PRIu64, good[i].s, b);
	}
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		b = 12345;
		if (cfg_parse_size(invalid[i], &b) != -EINVAL || b != 12345)
			fail_msg("\"%s\" not refused with -EINVAL", invalid[i]);
	}
	for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++) {
		b = 12345;
		if (cfg_parse_size(range[i], &b) != -ERANGE || b != 12345)
			fail_msg("\"%s\" not refused with -ERANGE", range[i]);
	}
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		uint64_t want;
	} good[] = {
	    {"5", 5000},
	    {"2.5", 2500},
	    {"0.001", 1},
	    {"2.5000", 2500},
	    {"0", 0},
	    {"500ms", 500},
	    {"0ms", 0},
	    {"10s", 10000},
	    {"1.25s", 1250},
	    {"5m", 300000},
	    {"1.5m", 90000},
	    {"0.0001m", 6}, /* 6 ms exactly */
	    {"18446744073709551615ms", UINT64_MAX},
	    {"18446744073709551s", 18446744073709551000ULL},
	};
	static const char *const invalid[] = {
	    "",	   "s",	  "ms",	  "-1",	  "+1",	  " 5",	  "5 ",	      "5x",
	    ".5",  "5.",  "5..1", "5h",	  "10S",  "10MS", "1.5ms",    "0.0005",
	    "1e3", "5 s", "1,5",  "0x10", "5sec", "5mss", "0.00001m",
	};
	static const char *const range[] = {
	    "99999999999999999999",
	    "18446744073709552s",
	    "18446744073709551616ms",
	    "307445734561825861m",
	};
	uint64_t ms;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ms = 12345;
		if (cfg_parse_duration(good[i].s, &ms) || ms != good[i].want)
			fail_msg("\"%s\" gave %" PRIu64, good[i].s, ms);
	}
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		ms = 12345;
		if (cfg_parse_duration(invalid[i], &ms) != -EINVAL || ms != 12345)
			fail_msg("\"%s\" not refused with -EINVAL", invalid[i]);
	}
	for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++) {
		ms = 12345;
		if (cfg_parse_duration(range[i], &ms) != -ERANGE || ms != 12345)
			fail_msg("\"%s\" not refused with -ERANGE", range[i]);
	}
}

static void test_validate(void **state)
{
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";

	(void)state;
	cfg_defaults(&c);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "no kernel: give --kernel PATH or [vm] kernel");
	strcpy(c.kernel, "/k");
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);

	c.vcpus = 0;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "vcpus: 0 is out of range: must be 1..32");
	c.vcpus = 33;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_contains(err, "vcpus: 33");
	c.vcpus = 32;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);

	c.mem_size = (1ULL << 20) - 4096;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "memory: 1020K is below the minimum 1M");
	c.mem_size = (1ULL << 40) + 4096;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_contains(err, "memory: ");
	assert_contains(err, "above the maximum 1T");
	c.mem_size = (64ULL << 20) + 1;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "memory: 67108865 bytes is not a multiple of 4K");
	c.mem_size = CFG_MIN_MEM;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);
	c.mem_size = CFG_MAX_MEM;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, NULL, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_ini_good),
	    cmocka_unit_test(test_ini_partial_keeps_rest),
	    cmocka_unit_test(test_ini_emberd_skipped),
	    cmocka_unit_test(test_ini_relative_paths),
	    cmocka_unit_test(test_ini_relative_no_folder),
	    cmocka_unit_test(test_ini_crlf),
	    cmocka_unit_test(test_ini_bom),
	    cmocka_unit_test(test_ini_cmdline_continuation),
	    cmocka_unit_test(test_ini_cmdline_too_long),
	    cmocka_unit_test(test_ini_line_too_long),
	    cmocka_unit_test(test_ini_nul_byte),
	    cmocka_unit_test(test_ini_bad),
	    cmocka_unit_test(test_ini_missing_file),
	    cmocka_unit_test(test_ini_empty_file),
	    cmocka_unit_test(test_set_overrides_ini),
	    cmocka_unit_test(test_set_cmdline_and_paths),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_validate),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
