/* config/import.c: a configuration from an untrusted record is rebuilt
 * through the user's setters.  A whole configuration comes back byte for
 * byte; each kind of damage a crafted snapshot could carry is refused,
 * naming the key. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static char err[CFG_ERR_MAX];

static void set(struct vm_config *c, const char *sec, const char *key, const char *v)
{
	int r = cfg_set(c, sec, key, v, err, sizeof(err));
	if (r)
		fail_msg("[%s] %s = %s: %s", sec, key, v, err);
}

/* A configuration using every key. */
static struct vm_config *full(void)
{
	struct vm_config *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	cfg_defaults(c);
	set(c, "vm", "name", "web-1.a");
	set(c, "vm", "vcpus", "4");
	set(c, "vm", "memory", "300M");
	set(c, "vm", "kernel", "/boot/k.elf");
	set(c, "vm", "initrd", "/boot/i.cpio");
	set(c, "vm", "cmdline", "console=ttyS0 a=\"b c\"");
	set(c, "vm", "timeout", "2.5");
	set(c, "vm", "irqchip", "on");
	set(c, "serial", "output", "/tmp/out.log");
	set(c, "drive.root", "path", "/srv/root.img");
	set(c, "drive.root", "read_only", "yes");
	set(c, "drive.root", "bandwidth_size", "1048576");
	set(c, "drive.root", "bandwidth_refill", "250ms");
	set(c, "drive.data", "path", "data.img");
	set(c, "drive.data", "direct", "on");
	set(c, "drive.data", "ops_size", "100");
	set(c, "drive.data", "ops_burst", "5");
	set(c, "drive.data", "ops_refill", "1s");
	set(c, "net.eth0", "tap", "tap0");
	set(c, "net.eth0", "mac", "02:aa:bb:cc:dd:0e");
	set(c, "net.eth0", "rx_bandwidth_size", "10M");
	set(c, "net.eth0", "rx_bandwidth_refill", "100ms");
	set(c, "net.eth0", "tx_ops_size", "7");
	set(c, "net.eth0", "tx_ops_refill", "10ms");
	set(c, "net.eth1", "tap", "tap1");
	set(c, "vsock", "cid", "3");
	set(c, "vsock", "uds", "/run/v.sock");
	set(c, "rng", "bandwidth_size", "4096");
	set(c, "rng", "bandwidth_refill", "1s");
	return c;
}

static void test_round_trip(void **state)
{
	struct vm_config *in = full(), *out = calloc(1, sizeof(*out));
	assert_int_equal(cfg_import(in, out, err, sizeof(err)), 0);
	assert_memory_equal(in, out, sizeof(*in));
	/* the defaults too, and no kernel (a restore loads none) */
	cfg_defaults(in);
	assert_int_equal(cfg_import(in, out, err, sizeof(err)), 0);
	assert_memory_equal(in, out, sizeof(*in));
	/* an rng without limits */
	in->rng.enabled = true;
	assert_int_equal(cfg_import(in, out, err, sizeof(err)), 0);
	assert_memory_equal(in, out, sizeof(*in));
	free(in);
	free(out);
}

/* Each damage, applied to a whole configuration, is refused and the
 * message names what. */
static void test_refusals(void **state)
{
	static const struct {
		const char *what, *msg;
	} cases[] = {
	    {"vcpus 33", "[vm] vcpus"},
	    {"vcpus 0", "[vm] vcpus"},
	    {"memory 0", "[vm] memory"},
	    {"memory not KiB", "[vm] memory"},
	    {"memory 2 TiB", "[vm] memory"},
	    {"name unterminated", "not terminated"},
	    {"name empty", "[vm] name"},
	    {"name with slash", "[vm] name"},
	    {"kernel unterminated", "not terminated"},
	    {"cmdline_len", "cmdline"},
	    {"irqchip 7", "irqchip"},
	    {"64 blocks", "at most 63"},
	    {"99999 nets", "at most 63"},
	    {"block name bad", "[block./x]"},
	    {"block name empty", "no device name"},
	    {"block path empty", "empty path"},
	    {"block path unterminated", "not terminated"},
	    {"read_only 2", "read_only is not a boolean"},
	    {"tap slash", "[net.eth0] tap"},
	    {"tap unterminated", "not terminated"},
	    {"mac multicast", "[net.eth0] mac"},
	    {"has_mac 5", "has_mac is not a boolean"},
	    {"vsock cid 2", "[vsock] cid"},
	    {"vsock enabled 3", "vsock.enabled"},
	    {"vsock uds too long", "[vsock] uds"},
	    {"rng enabled 9", "rng.enabled"},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct vm_config *c = full(), *out = calloc(1, sizeof(*out));
		const char *w = cases[k].what;
		if (!strcmp(w, "vcpus 33"))
			c->vcpus = 33;
		else if (!strcmp(w, "vcpus 0"))
			c->vcpus = 0;
		else if (!strcmp(w, "memory 0"))
			c->mem_size = 0;
		else if (!strcmp(w, "memory not KiB"))
			c->mem_size += 1;
		else if (!strcmp(w, "memory 2 TiB"))
			c->mem_size = 2ULL << 40;
		else if (!strcmp(w, "name unterminated"))
			memset(c->name, 'a', sizeof(c->name));
		else if (!strcmp(w, "name empty"))
			c->name[0] = '\0';
		else if (!strcmp(w, "name with slash"))
			strcpy(c->name, "../etc");
		else if (!strcmp(w, "kernel unterminated"))
			memset(c->kernel, 'k', sizeof(c->kernel));
		else if (!strcmp(w, "cmdline_len"))
			c->cmdline_len += 100;
		else if (!strcmp(w, "irqchip 7"))
			c->irqchip = (enum cfg_irqchip)7;
		else if (!strcmp(w, "64 blocks"))
			c->nr_blocks = 64;
		else if (!strcmp(w, "99999 nets"))
			c->nr_nets = 99999;
		else if (!strcmp(w, "block name bad"))
			strcpy(c->blocks[0].name, "/x");
		else if (!strcmp(w, "block name empty"))
			c->blocks[1].name[0] = '\0';
		else if (!strcmp(w, "block path empty"))
			c->blocks[1].path[0] = '\0';
		else if (!strcmp(w, "block path unterminated"))
			memset(c->blocks[1].path, 'p', sizeof(c->blocks[1].path));
		else if (!strcmp(w, "read_only 2"))
			memset(&c->blocks[0].read_only, 2, 1);
		else if (!strcmp(w, "tap slash"))
			strcpy(c->nets[0].tap, "a/b");
		else if (!strcmp(w, "tap unterminated"))
			memset(c->nets[0].tap, 't', sizeof(c->nets[0].tap));
		else if (!strcmp(w, "mac multicast"))
			c->nets[0].mac[0] = 1;
		else if (!strcmp(w, "has_mac 5"))
			memset(&c->nets[1].has_mac, 5, 1);
		else if (!strcmp(w, "vsock cid 2"))
			c->vsock.cid = 2;
		else if (!strcmp(w, "vsock enabled 3"))
			memset(&c->vsock.enabled, 3, 1);
		else if (!strcmp(w, "vsock uds too long"))
			memset(c->vsock.uds, 'u', 200);
		else if (!strcmp(w, "rng enabled 9"))
			memset(&c->rng.enabled, 9, 1);
		else
			fail_msg("no case %s", w);
		err[0] = '\0';
		if (cfg_import(c, out, err, sizeof(err)) == 0)
			fail_msg("%s: accepted", w);
		if (!strstr(err, cases[k].msg))
			fail_msg("%s: \"%s\" does not say \"%s\"", w, err, cases[k].msg);
		free(c);
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests_name("config_import", tests, NULL, NULL);
}
