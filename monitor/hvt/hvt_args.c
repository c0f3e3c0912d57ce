/* solo5-hvt's options (Solo5 v0.12: tenders/hvt/hvt_main.c and its
 * modules' handle_cmdarg), turned into ember's configuration keys. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "monitor/hvt/hvt.h"
#include "monitor/hvt/hvt_args.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

int hvt_args_option(const char *a, struct hvt_opt *out, char *err, size_t errlen)
{
	/* NAME=VALUE options: the manifest name picks the device section. */
	static const struct {
		const char *prefix, *kind, *key;
	} dev[] = {
	    {"--block:", "block", "path"},
	    {"--block-sector-size:", "block", "sector_size"},
	    {"--net:", "net", "tap"},
	    {"--net-mac:", "net", "mac"},
	};
	if (!strncmp(a, "--mem=", 6)) {
		const char *v = a + 6;
		size_t n = strspn(v, "0123456789");
		/* solo5-hvt: sscanf("%zd") << 20, > 0 */
		if (!n || v[n] || n > 7 || strspn(v, "0") == n)
			return ERR("Malformed argument to --mem");
		*out = (struct hvt_opt){"vm", "memory", v};
		return 1;
	}
	if (!strncmp(a, "--dumpcore=", 11)) {
		*out = (struct hvt_opt){"vm", "dumpcore", a + 11};
		return 1;
	}
	if (!strcmp(a, "--gdb") || !strncmp(a, "--gdb-port=", 11))
		return ERR("%s: ember has no gdb server (solo5-hvt-debug's gdb module); "
			   "--dumpcore=DIR writes a core file gdb reads",
			   a);
	for (unsigned i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) {
		size_t n = strlen(dev[i].prefix);
		if (strncmp(a, dev[i].prefix, n))
			continue;
		const char *name = a + n, *eq = strchr(name, '=');
		if (!eq || eq == name || !eq[1])
			return ERR("%s: expected %sNAME=VALUE", a, dev[i].prefix);
		if (eq - name > CFG_NAME_MAX)
			return ERR("%s: device name too long (at most %d characters)", a,
				   CFG_NAME_MAX);
		snprintf(out->section, sizeof(out->section), "%s.%.*s", dev[i].kind,
			 (int)(eq - name), name);
		out->key = dev[i].key;
		out->value = eq + 1;
		return 1;
	}
	return 0;
}

bool hvt_args_is_solo5_name(const char *argv0)
{
	const char *base = strrchr(argv0, '/');
	base = base ? base + 1 : argv0;
	return !strcmp(base, "solo5-hvt") || !strcmp(base, "solo5-hvt-debug");
}

bool hvt_args_is_kernel(const char *path)
{
	unsigned char magic[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, magic, sizeof(magic));
	close(fd);
	return n == 4 && !memcmp(magic, "\177ELF", 4);
}

int hvt_args_exit_code(const struct hvt_guest *g, int code)
{
	if (g && g->halted)
		return g->halt_status;
	return code ? 1 : 0;
}

void hvt_args_usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [ CORE OPTIONS ] [ MODULE OPTIONS ] [ -- ] KERNEL [ ARGS ]\n"
		"KERNEL is the filename of the unikernel to run.\n"
		"ARGS are optional arguments passed to the unikernel.\n"
		"Core options:\n"
		"  [ --mem=512 ] (guest memory in MB)\n"
		"    --help (display this help)\n"
		"Compiled-in modules: net block dumpcore\n"
		"Compiled-in module options:\n"
		"    --net:NAME=IFACE (attach tap at IFACE as network NAME)\n"
		"    [ --net-mac:NAME=HWADDR ] (set HWADDR for network NAME)\n"
		"    --block:NAME=PATH (attach block device/file at PATH as block storage NAME)\n"
		"    [ --block-sector-size:NAME=SECTORSIZE ] (set sector size for block device "
		"NAME; must be a power of two greater than or equal 512)\n"
		"    --dumpcore=DIR (enable guest core dump on abort/trap)\n"
		"(ember %s: the same options, solo5-hvt's exit statuses; see ember run --help)\n",
		prog, prog);
}
