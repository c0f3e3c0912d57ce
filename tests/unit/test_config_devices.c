/* config/: block and net devices, [block.NAME] and [net.NAME] in INI
 * files and "block.NAME" / "net.NAME" through cfg_set (the command line's
 * --block:NAME=PATH, --net:NAME=TAP, --net-mac:NAME=MAC). */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define CONFIG_FIXTURE_DIR "/tmp/ember-test-config-dev-XXXXXX"
#include "config_fixture.h"

/* A config that cfg_validate takes, so that tests see the device checks. */
static void defaults(struct vm_config *c)
{
	cfg_defaults(c);
	strcpy(c->kernel, "/k");
}

static const struct cfg_block *find_block(const struct vm_config *c, const char *name)
{
	for (unsigned i = 0; i < c->nr_blocks; i++)
		if (!strcmp(c->blocks[i].name, name))
			return &c->blocks[i];
	fail_msg("no block device \"%s\"", name);
	return NULL;
}

static const struct cfg_net *find_net(const struct vm_config *c, const char *name)
{
	for (unsigned i = 0; i < c->nr_nets; i++)
		if (!strcmp(c->nets[i].name, name))
			return &c->nets[i];
	fail_msg("no net device \"%s\"", name);
	return NULL;
}

static void test_defaults_no_devices(void **state)
{
	struct vm_config c;

	(void)state;
	memset(&c, 0xa5, sizeof(c));
	cfg_defaults(&c);
	assert_int_equal(c.nr_blocks, 0);
	assert_int_equal(c.nr_nets, 0);
}

static void test_ini_devices_good(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", want[256], long_name[CFG_NAME_MAX + 1], text[1024];
	const char *path;
	const struct cfg_block *blk;
	const struct cfg_net *net;

	/* 64 characters: longer than the 49 inih keeps of a section name. */
	memset(long_name, 'L', CFG_NAME_MAX);
	long_name[CFG_NAME_MAX] = '\0';
	snprintf(text, sizeof(text),
		 "[vm]\n"
		 "kernel = /boot/unikernel.hvt\n"
		 "\n"
		 "[block.storage]   ; the data disk\n"
		 "path = disk.img\n"
		 "read_only = no\n"
		 "\n"
		 "[net.service]\n"
		 "tap = tap0\n"
		 "mac = 02:00:00:00:00:01\n"
		 "\n"
		 "[block.Boot_2]\n"
		 "read_only = TRUE\n"
		 "path = /var/lib/ember/boot.img\n"
		 "\n"
		 "[net.admin]\n"
		 "tap: tap-admin.1\n"
		 "\n"
		 "[block.%s]\n"
		 "path = ../images/long.img\n"
		 "read_only = on\n",
		 long_name);
	path = write_file(fx, "devices.ini", text);
	cfg_defaults(&c);
	if (cfg_parse_ini(path, &c, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(c.nr_blocks, 3);
	assert_int_equal(c.nr_nets, 2);
	/* In the file's order. */
	assert_string_equal(c.blocks[0].name, "storage");
	assert_string_equal(c.blocks[1].name, "Boot_2");
	assert_string_equal(c.blocks[2].name, long_name);
	assert_string_equal(c.nets[0].name, "service");
	assert_string_equal(c.nets[1].name, "admin");

	blk = find_block(&c, "storage");
	snprintf(want, sizeof(want), "%s/disk.img", fx->dir);
	assert_string_equal(blk->path, want);
	assert_false(blk->read_only);
	blk = find_block(&c, "Boot_2");
	assert_string_equal(blk->path, "/var/lib/ember/boot.img");
	assert_true(blk->read_only);
	blk = find_block(&c, long_name);
	snprintf(want, sizeof(want), "%s/../images/long.img", fx->dir);
	assert_string_equal(blk->path, want);
	assert_true(blk->read_only);

	net = find_net(&c, "service");
	assert_string_equal(net->tap, "tap0");
	assert_true(net->has_mac);
	assert_memory_equal(net->mac, "\x02\x00\x00\x00\x00\x01", 6);
	net = find_net(&c, "admin");
	assert_string_equal(net->tap, "tap-admin.1");
	assert_false(net->has_mac);

	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);
}

/* Every spelling of read_only, either case. */
static void test_ini_read_only_words(void **state)
{
	static const struct {
		const char *v;
		bool want;
	} words[] = {
	    {"true", true}, {"yes", true},    {"on", true},	{"1", true},	{"True", true},
	    {"YES", true},  {"On", true},     {"false", false}, {"no", false},	{"off", false},
	    {"0", false},   {"FALSE", false}, {"No", false},	{"oFF", false},
	};
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", text[128];

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		snprintf(text, sizeof(text), "[block.d]\npath = /d\nread_only = %s\n", words[i].v);
		cfg_defaults(&c);
		c.blocks[0].read_only = !words[i].want; /* not left over from defaults */
		if (cfg_parse_ini(write_file(fx, "ro.ini", text), &c, err, sizeof(err)) ||
		    c.nr_blocks != 1 || c.blocks[0].read_only != words[i].want)
			fail_msg("read_only = %s: err \"%s\"", words[i].v, err);
	}
	/* Left out: writable. */
	cfg_defaults(&c);
	assert_int_equal(
	    cfg_parse_ini(write_file(fx, "rw.ini", "[block.d]\npath = /d\n"), &c, err, sizeof(err)),
	    0);
	assert_false(c.blocks[0].read_only);
}

/* An INI file named without a folder: device paths stay as written. */
static void test_ini_device_path_no_folder(void **state)
{
	struct vm_config c;

	parse_ini_in_dir(*state, "[block.d]\npath = disk.img\n", &c);
	assert_string_equal(c.blocks[0].path, "disk.img");
}

/* A section with no keys still makes its device, which cfg_validate then
 * finds without a path or tap. */
static void test_ini_empty_device_section(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "empty-dev.ini", "[block.storage]\n[net.service]\n");

	defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 1);
	assert_int_equal(c.nr_nets, 1);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[block.storage]: no path given (path = FILE)");
	/* The command line can complete them. */
	assert_int_equal(cfg_set(&c, "block.storage", "path", "disk.img", err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[net.service]: no tap given (tap = NAME)");
	assert_int_equal(cfg_set(&c, "net.service", "tap", "tap0", err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 1);
	assert_int_equal(c.nr_nets, 1);
}

/* "[block.x]" indented after a cmdline key is inih's continuation of it,
 * not a section. */
static void test_ini_device_header_as_continuation(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "cont.ini",
				      "[vm]\ncmdline = a\n  [block.x]\nvcpus = 2\n"
				      "[block.y]\n  [block.z]\n  path = /z\n");

	cfg_defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.cmdline, "a [block.x]");
	assert_int_equal(c.vcpus, 2);
	/* Indented, but after no key: sections, and then a key. */
	assert_int_equal(c.nr_blocks, 2);
	assert_string_equal(c.blocks[0].name, "y");
	assert_string_equal(c.blocks[0].path, "");
	assert_string_equal(c.blocks[1].name, "z");
	assert_string_equal(c.blocks[1].path, "/z");
}

/* A file is parsed on top of c: a device c has is the same device, and
 * is updated, not duplicated.  Each file may open it once. */
static void test_ini_devices_on_top(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path;

	cfg_defaults(&c);
	assert_int_equal(cfg_set(&c, "block.storage", "read_only", "yes", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "net.service", "mac", "02:00:00:00:00:02", err, sizeof(err)),
			 0);
	path = write_file(fx, "top.ini",
			  "[block.storage]\npath = /disk.img\n[net.service]\ntap = tap1\n");
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 1);
	assert_string_equal(c.blocks[0].path, "/disk.img");
	assert_true(c.blocks[0].read_only);
	assert_int_equal(c.nr_nets, 1);
	assert_string_equal(c.nets[0].tap, "tap1");
	assert_true(c.nets[0].has_mac);
	assert_memory_equal(c.nets[0].mac, "\x02\x00\x00\x00\x00\x02", 6);

	/* The same file again: its keys and sections count per file. */
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 1);
	assert_int_equal(c.nr_nets, 1);
}

#define NAME65 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KNOWN "(known: [vm], [serial], [block.NAME], [net.NAME], [vsock], [rng], [drive.NAME])"
#define NOT_MAC "is not a MAC address (use six hex pairs: 02:00:00:00:00:01)"
#define MULTICAST                                                                                  \
	"is a multicast address (low bit of the first octet set): a device needs a unicast "       \
	"one, e.g. 02:00:00:00:00:01"

static const struct bad_case bad_cases[] = {
    /* Section names. */
    {"[vm]\nvcpus = 1\n[block]\npath = x\n", 3, "[block]: no device name (use [block.NAME])"},
    {"[block]\n", 1, "[block]: no device name (use [block.NAME])"},
    {"[block.]\npath = x\n", 1, "[block.]: no device name (use [block.NAME])"},
    {"[net]\ntap = t\n", 1, "[net]: no device name (use [net.NAME])"},
    {"[net.]\n", 1, "[net.]: no device name (use [net.NAME])"},
    {"\n[block.bad-name!]\npath = x\n", 2,
     "[block.bad-name!]: device name \"bad-name!\" has '-': use only A-Z a-z 0-9 _"},
    {"[net.a.b]\ntap = t\n", 1, "[net.a.b]: device name \"a.b\" has '.': use only A-Z a-z 0-9 _"},
    {"[block.two words]\n", 1,
     "[block.two words]: device name \"two words\" has ' ': use only A-Z a-z 0-9 _"},
    {"[block." NAME65 "]\npath = x\n", 1,
     "[block." NAME65 "]: device name must be 1..64 characters, not 65"},
    /* Unknown kinds: errors once they have a key, as [disk]. */
    {"[vm.x]\nname = y\n", 2, "[vm.x] name: unknown section [vm.x] " KNOWN},
    {"[Block.x]\npath = y\n", 2, "[Block.x] path: unknown section [Block.x] " KNOWN},
    {"[blocks.x]\npath = y\n", 2, "[blocks.x] path: unknown section [blocks.x] " KNOWN},
    {"[block.x ; comment]\npath = y\n", 1, "syntax error (expected [section] or key = value)"},
    /* Duplicate sections and keys. */
    {"[block.storage]\npath = a\n[net.service]\ntap = t\n\n[block.storage]\nread_only = 1\n", 6,
     "duplicate section [block.storage], first at line 1"},
    {"[net.service]\n[vm]\nvcpus = 1\n[net.service]\n", 4,
     "duplicate section [net.service], first at line 1"},
    {"[block.s]\npath = a\nread_only = 1\npath = b\n", 4, "[block.s] path: duplicate key"},
    {"[net.s]\ntap = a\nmac = 02:00:00:00:00:01\nmac = 02:00:00:00:00:02\n", 4,
     "[net.s] mac: duplicate key"},
    /* Keys and values. */
    {"[block.s]\nsize = 1G\n", 2, "[block.s] size: unknown key (known: path, read_only, direct, sector_size, bandwidth_size, bandwidth_burst, bandwidth_refill, ops_size, ops_burst, ops_refill)"},
    {"[net.s]\nip = 10.0.0.2\n", 2, "[net.s] ip: unknown key (known: tap, mac, rx_bandwidth_size, rx_bandwidth_burst, rx_bandwidth_refill, rx_ops_size, rx_ops_burst, rx_ops_refill, tx_bandwidth_size, tx_bandwidth_burst, tx_bandwidth_refill, tx_ops_size, tx_ops_burst, tx_ops_refill)"},
    {"[block.s]\npath =\n", 2, "[block.s] path: empty path"},
    {"[block.s]\npath = x\nread_only = maybe\n", 3,
     "[block.s] read_only: \"maybe\" is not a boolean (use true/false, yes/no, on/off or 1/0)"},
    {"[block.s]\nread_only = 2\n", 2,
     "[block.s] read_only: \"2\" is not a boolean (use true/false, yes/no, on/off or 1/0)"},
    {"[block.s]\nread_only =\n", 2,
     "[block.s] read_only: \"\" is not a boolean (use true/false, yes/no, on/off or 1/0)"},
    {"[net.s]\ntap =\n", 2, "[net.s] tap: empty (the name of a host tap interface)"},
    {"[net.s]\ntap = tap0123456789abc\n", 2,
     "[net.s] tap: \"tap0123456789abc\" is 16 characters, longer than 15"},
    {"[net.s]\ntap = tap/0\n", 2,
     "[net.s] tap: \"tap/0\" has '/': not allowed in an interface name"},
    {"[net.s]\ntap = tap 0\n", 2,
     "[net.s] tap: \"tap 0\" has ' ': not allowed in an interface name"},
    {"[net.s]\ntap = tap:0\n", 2,
     "[net.s] tap: \"tap:0\" has ':': not allowed in an interface name"},
    {"[net.s]\ntap = tap%d\n", 2,
     "[net.s] tap: \"tap%d\" has '%': not allowed in an interface name"},
    {"[net.s]\ntap = .\n", 2, "[net.s] tap: \".\" is not an interface name"},
    {"[net.s]\ntap = ..\n", 2, "[net.s] tap: \"..\" is not an interface name"},
    {"[net.s]\ntap = t\nmac = 02:00:00:00:00\n", 3, "[net.s] mac: \"02:00:00:00:00\" " NOT_MAC},
    {"[net.s]\nmac = 02-00-00-00-00-01\n", 2, "[net.s] mac: \"02-00-00-00-00-01\" " NOT_MAC},
    {"[net.s]\nmac =\n", 2, "[net.s] mac: \"\" " NOT_MAC},
    {"[net.s]\nmac = 01:00:5e:00:00:01\n", 2, "[net.s] mac: \"01:00:5e:00:00:01\" " MULTICAST},
    {"[net.s]\nmac = FF:FF:FF:FF:FF:FF\n", 2, "[net.s] mac: \"FF:FF:FF:FF:FF:FF\" " MULTICAST},
    {"[net.s]\nmac = 00:00:00:00:00:00\n", 2,
     "[net.s] mac: \"00:00:00:00:00:00\" is all zero: not a usable address"},
    /* Only cmdline continues on indented lines. */
    {"[net.s]\ntap = t\n  mac = 02:00:00:00:00:01\n", 3,
     "[net.s] tap: indented line \"mac = 02:00:00:00:00:01\" continues this value; only cmdline "
     "may (a new key must not be indented)"},
    {"[block.a]\npath = x\n  [block.b]\n", 3,
     "[block.a] path: indented line \"[block.b]\" continues this value; only cmdline may (a new "
     "key must not be indented)"},
    {"[block.s]\r\npath = a\r\npath = b\r\n", 3, "[block.s] path: duplicate key"},
    {"\xEF\xBB\xBF[block.s]\n[block.s]\n", 2, "duplicate section [block.s], first at line 1"},
    /* The first error wins: a syntax error before a bad section... */
    {"[vm]\nvcpus\n[block.bad-]\n", 2, "syntax error (expected [section] or key = value)"},
    /* ...and a bad section before a syntax error. */
    {"[block.bad-]\n[vm]\nvcpus\n", 1,
     "[block.bad-]: device name \"bad-\" has '-': use only A-Z a-z 0-9 _"},
};

/* Each message is checked whole. */
static void test_ini_devices_bad(void **state)
{
	expect_bad_inis(*state, bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]), false);
}

/* CFG_MAX_BLOCKS / CFG_MAX_NETS sections fit; one more is an error on
 * its own line, naming the limit. */
static void test_ini_device_limits(void **state)
{
	static const struct {
		const char *kind, *key, *value;
		unsigned max;
	} kinds[] = {
	    {"block", "path", "/d", CFG_MAX_BLOCKS},
	    {"net", "tap", "t", CFG_MAX_NETS},
	};
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", want[CFG_ERR_MAX], text[2048];

	for (size_t k = 0; k < 2; k++) {
		size_t len = 0;
		const char *path;

		for (unsigned i = 0; i < kinds[k].max; i++)
			len +=
			    (size_t)snprintf(text + len, sizeof(text) - len, "[%s.d%u]\n%s = %s\n",
					     kinds[k].kind, i, kinds[k].key, kinds[k].value);
		path = write_file(fx, "max.ini", text);
		cfg_defaults(&c);
		assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
		assert_int_equal(k ? c.nr_nets : c.nr_blocks, kinds[k].max);

		snprintf(text + len, sizeof(text) - len, "\n[%s.more]\n%s = %s\n", kinds[k].kind,
			 kinds[k].key, kinds[k].value);
		path = write_file(fx, "over.ini", text);
		cfg_defaults(&c);
		assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), -EINVAL);
		snprintf(want, sizeof(want), "%s:%u: [%s.more]: too many %s devices (at most %u)",
			 path, 2 * kinds[k].max + 2, kinds[k].kind, kinds[k].kind, kinds[k].max);
		assert_string_equal(err, want);
		assert_int_equal(c.nr_blocks + c.nr_nets, 0);
	}
}

/* The command line's spellings: a device is made on first use, and later
 * uses (and the INI file's values) update it. */
static void test_set_devices(void **state)
{
	struct fixture *fx = *state;
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";
	const char *path = write_file(fx, "cli.ini",
				      "[block.storage]\npath = disk.img\nread_only = true\n"
				      "[net.service]\ntap = tap0\nmac = 02:00:00:00:00:01\n");

	defaults(&c);
	assert_int_equal(cfg_parse_ini(path, &c, err, sizeof(err)), 0);
	/* --block:storage=other.img: a relative path stays as given. */
	assert_int_equal(cfg_set(&c, "block.storage", "path", "other.img", err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 1);
	assert_string_equal(c.blocks[0].path, "other.img");
	assert_true(c.blocks[0].read_only); /* the rest of the INI's device stays */
	/* --net:service=tap9 --net-mac:service=..., as often as it likes. */
	assert_int_equal(cfg_set(&c, "net.service", "tap", "tap9", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "net.service", "mac", "0a:BB:cc:DD:ee:FF", err, sizeof(err)),
			 0);
	assert_int_equal(cfg_set(&c, "net.service", "mac", "0a:BB:cc:DD:ee:F0", err, sizeof(err)),
			 0);
	assert_int_equal(c.nr_nets, 1);
	assert_string_equal(c.nets[0].tap, "tap9");
	assert_memory_equal(c.nets[0].mac, "\x0a\xbb\xcc\xdd\xee\xf0", 6);

	/* New names make new devices, in order. */
	assert_int_equal(cfg_set(&c, "block.scratch", "path", "/tmp/s.img", err, sizeof(err)), 0);
	assert_int_equal(cfg_set(&c, "net.admin", "tap", "tap1", err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 2);
	assert_string_equal(c.blocks[1].name, "scratch");
	assert_string_equal(c.blocks[1].path, "/tmp/s.img");
	assert_false(c.blocks[1].read_only);
	assert_int_equal(c.nr_nets, 2);
	assert_string_equal(c.nets[1].name, "admin");
	assert_false(c.nets[1].has_mac);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);

	/* A bad value: the old one stays, and no device is made for it. */
	assert_int_equal(cfg_set(&c, "net.service", "mac", "01:00:00:00:00:01", err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "\"01:00:00:00:00:01\" " MULTICAST);
	assert_memory_equal(c.nets[0].mac, "\x0a\xbb\xcc\xdd\xee\xf0", 6);
	assert_int_equal(cfg_set(&c, "block.storage", "path", "", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "empty path");
	assert_string_equal(c.blocks[0].path, "other.img");
	assert_int_equal(cfg_set(&c, "block.new", "path", "", err, sizeof(err)), -EINVAL);
	assert_int_equal(cfg_set(&c, "net.new", "tap", "a/b", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "\"a/b\" has '/': not allowed in an interface name");
	assert_int_equal(cfg_set(&c, "net.new", "mtu", "9000", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown key (known: tap, mac, rx_bandwidth_size, rx_bandwidth_burst, "
			    "rx_bandwidth_refill, rx_ops_size, rx_ops_burst, rx_ops_refill, tx_bandwidth_size, "
			    "tx_bandwidth_burst, tx_bandwidth_refill, tx_ops_size, tx_ops_burst, tx_ops_refill)");
	assert_int_equal(c.nr_blocks, 2);
	assert_int_equal(c.nr_nets, 2);
	assert_int_equal(c.blocks[2].name[0], '\0');
	assert_int_equal(c.nets[2].name[0], '\0');

	/* Bad names, without a FILE:LINE or section prefix. */
	assert_int_equal(cfg_set(&c, "block.bad-name!", "path", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "device name \"bad-name!\" has '-': use only A-Z a-z 0-9 _");
	assert_int_equal(cfg_set(&c, "block", "path", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "no device name (use [block.NAME])");
	assert_int_equal(cfg_set(&c, "net.", "tap", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "no device name (use [net.NAME])");
	assert_int_equal(cfg_set(&c, "block." NAME65, "path", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "device name must be 1..64 characters, not 65");
	assert_int_equal(cfg_set(&c, "vm.x", "name", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown section [vm.x] " KNOWN);
	assert_int_equal(cfg_set(&c, "disk.x", "path", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown section [disk.x] " KNOWN);
	assert_int_equal(c.nr_blocks, 2);
	assert_int_equal(c.nr_nets, 2);
	/* Block and net names are apart: "service" may be both. */
	assert_int_equal(cfg_set(&c, "block.service", "path", "/b", err, sizeof(err)), 0);
	assert_int_equal(c.nr_blocks, 3);
	assert_int_equal(c.nr_nets, 2);
}

static void test_set_device_limits(void **state)
{
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", section[32];

	(void)state;
	defaults(&c);
	for (unsigned i = 0; i < CFG_MAX_BLOCKS; i++) {
		snprintf(section, sizeof(section), "block.b%u", i);
		assert_int_equal(cfg_set(&c, section, "path", "/d", err, sizeof(err)), 0);
	}
	for (unsigned i = 0; i < CFG_MAX_NETS; i++) {
		snprintf(section, sizeof(section), "net.n%u", i);
		assert_int_equal(cfg_set(&c, section, "tap", "t", err, sizeof(err)), 0);
	}
	assert_int_equal(c.nr_blocks, CFG_MAX_BLOCKS);
	assert_int_equal(c.nr_nets, CFG_MAX_NETS);
	assert_int_equal(cfg_set(&c, "block.more", "path", "/d", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "too many block devices (at most 63)");
	assert_int_equal(cfg_set(&c, "net.more", "mac", "02:00:00:00:00:01", err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "too many net devices (at most 63)");
	assert_int_equal(c.nr_blocks, CFG_MAX_BLOCKS);
	assert_int_equal(c.nr_nets, CFG_MAX_NETS);
	/* Full, but existing devices can still be changed. */
	assert_int_equal(cfg_set(&c, "block.b15", "read_only", "1", err, sizeof(err)), 0);
	assert_true(c.blocks[15].read_only);
	assert_int_equal(cfg_set(&c, "net.n0", "tap", "tap0", err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);
}

static void test_mac(void **state)
{
	static const struct {
		const char *s;
		const char *want;
	} good[] = {
	    {"02:00:00:00:00:01", "\x02\x00\x00\x00\x00\x01"},
	    {"0A:bB:Cc:dD:Ee:fF", "\x0a\xbb\xcc\xdd\xee\xff"},
	    {"fe:ff:ff:ff:ff:ff", "\xfe\xff\xff\xff\xff\xff"}, /* even first octet: unicast */
	    {"00:00:00:00:00:01", "\x00\x00\x00\x00\x00\x01"}, /* not all zero */
	    {"52:54:00:12:34:56", "\x52\x54\x00\x12\x34\x56"},
	};
	static const char *const bad[] = {
	    "",
	    "02",
	    "02:00:00:00:00",
	    "02:00:00:00:00:",
	    "02:00:00:00:00:0",
	    "02:00:00:00:00:01:",
	    "02:00:00:00:00:01:02",
	    "02:00:00:00:00:001",
	    "2:0:0:0:0:1",
	    "02-00-00-00-00-01",
	    "02.00.00.00.00.01",
	    "020000000001",
	    "02:00:00:00:00:0g",
	    "g2:00:00:00:00:01",
	    "02::00:00:00:00:01",
	    " 02:00:00:00:00:01",
	    "02:00:00:00:00:01 ",
	    "0x2:00:00:00:00:01",
	    "+2:00:00:00:00:01",
	};
	static const char *const multicast[] = {
	    "01:00:00:00:00:00", "03:00:5e:00:00:01", "FF:FF:FF:FF:FF:FF",
	    "33:33:00:00:00:01", "0b:00:00:00:00:00",
	};
	struct vm_config c;
	char err[CFG_ERR_MAX] = "", want[CFG_ERR_MAX];

	(void)state;
	defaults(&c);
	assert_int_equal(cfg_set(&c, "net.n", "tap", "tap0", err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		memset(c.nets[0].mac, 0, 6);
		if (cfg_set(&c, "net.n", "mac", good[i].s, err, sizeof(err)) ||
		    !c.nets[0].has_mac || memcmp(c.nets[0].mac, good[i].want, 6))
			fail_msg("\"%s\": err \"%s\"", good[i].s, err);
	}
	memcpy(c.nets[0].mac, "\x02\x00\x00\x00\x00\x07", 6);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(want, sizeof(want), "\"%s\" " NOT_MAC, bad[i]);
		if (cfg_set(&c, "net.n", "mac", bad[i], err, sizeof(err)) != -EINVAL ||
		    strcmp(err, want))
			fail_msg("\"%s\" not refused: err \"%s\"", bad[i], err);
	}
	for (size_t i = 0; i < sizeof(multicast) / sizeof(multicast[0]); i++) {
		snprintf(want, sizeof(want), "\"%s\" " MULTICAST, multicast[i]);
		if (cfg_set(&c, "net.n", "mac", multicast[i], err, sizeof(err)) != -EINVAL ||
		    strcmp(err, want))
			fail_msg("\"%s\" not refused: err \"%s\"", multicast[i], err);
	}
	assert_int_equal(cfg_set(&c, "net.n", "mac", "00:00:00:00:00:00", err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "\"00:00:00:00:00:00\" is all zero: not a usable address");
	/* Refusals leave the last good one. */
	assert_memory_equal(c.nets[0].mac, "\x02\x00\x00\x00\x00\x07", 6);
	/* A long value is cut short in the message, not the buffer overrun. */
	{
		char big[300];

		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		assert_int_equal(cfg_set(&c, "net.n", "mac", big, err, sizeof(err)), -EINVAL);
		assert_int_equal(strlen(err), 2 + 64 + 1 + strlen(NOT_MAC));
	}
}

static void test_tap_names(void **state)
{
	static const char *const good[] = {
	    "t", "tap0", "tap-admin.1", "tap_x@y", "tap012345678901", "..."};
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";

	(void)state;
	defaults(&c);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (cfg_set(&c, "net.n", "tap", good[i], err, sizeof(err)) ||
		    strcmp(c.nets[0].tap, good[i]))
			fail_msg("\"%s\": err \"%s\"", good[i], err);
	assert_int_equal(cfg_set(&c, "net.n", "tap", "a\tb", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "has a control character (0x09): not an interface name");
	assert_int_equal(cfg_set(&c, "net.n", "tap", "a\nb", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "has a control character (0x0a): not an interface name");
	assert_int_equal(cfg_set(&c, "net.n", "tap", "tap0123456789012345", err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "\"tap0123456789012345\" is 19 characters, longer than 15");
	assert_string_equal(c.nets[0].tap, "...");
}

static void test_validate_devices(void **state)
{
	struct vm_config c;
	char err[CFG_ERR_MAX] = "";

	(void)state;
	defaults(&c);
	assert_int_equal(cfg_set(&c, "block.storage", "read_only", "on", err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[block.storage]: no path given (path = FILE)");
	assert_int_equal(cfg_set(&c, "block.storage", "path", "d.img", err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);

	/* --net-mac:service=... without --net:service=... */
	assert_int_equal(cfg_set(&c, "net.service", "mac", "02:00:00:00:00:01", err, sizeof(err)),
			 0);
	assert_int_equal(c.nr_nets, 1);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[net.service]: mac given but no tap (tap = NAME)");
	assert_int_equal(cfg_set(&c, "net.service", "tap", "tap0", err, sizeof(err)), 0);
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), 0);

	/* Filled in by hand. */
	c.nets[1] = (struct cfg_net){.name = "admin"};
	c.nr_nets = 2;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[net.admin]: no tap given (tap = NAME)");
	c.nr_nets = 1;
	c.nr_blocks = CFG_MAX_BLOCKS + 1;
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "64 block and 1 net devices: at most 63 and 63");
	c.nr_blocks = 1;
	assert_int_equal(cfg_validate(&c, NULL, 0), 0);

	/* The VM's own checks come first. */
	c.kernel[0] = '\0';
	c.blocks[0].path[0] = '\0';
	assert_int_equal(cfg_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "no kernel: give --kernel PATH or [vm] kernel");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_no_devices),
	    cmocka_unit_test(test_ini_devices_good),
	    cmocka_unit_test(test_ini_read_only_words),
	    cmocka_unit_test(test_ini_device_path_no_folder),
	    cmocka_unit_test(test_ini_empty_device_section),
	    cmocka_unit_test(test_ini_device_header_as_continuation),
	    cmocka_unit_test(test_ini_devices_on_top),
	    cmocka_unit_test(test_ini_devices_bad),
	    cmocka_unit_test(test_ini_device_limits),
	    cmocka_unit_test(test_set_devices),
	    cmocka_unit_test(test_set_device_limits),
	    cmocka_unit_test(test_mac),
	    cmocka_unit_test(test_tap_names),
	    cmocka_unit_test(test_validate_devices),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
