/* solo5-hvt's command line, for `ember run` and for ember run under the
 * name solo5-hvt (monitor/hvt/hvt_args.c).  Pure: no KVM, no files but
 * a kernel's first bytes. */
#ifndef EMBER_HVT_ARGS_H
#define EMBER_HVT_ARGS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

struct hvt_guest;

/* One configuration key an option sets (cfg_set()'s arguments). */
struct hvt_opt {
	char section[CFG_NAME_MAX + 8];
	const char *key;
	const char *value; /* points into the option */
};

/* Solo5 v0.12's tender options (solo5-hvt and solo5-hvt-debug):
 * --mem=MiB, --block:NAME=PATH, --block-sector-size:NAME=N,
 * --net:NAME=IFACE, --net-mac:NAME=MAC, --dumpcore=DIR.  1 and *out set
 * when a is one of them; 0 when it is not; -EINVAL with solo5-hvt's
 * message in err when it is one, malformed ("Malformed argument to
 * --mem"), or one ember does not have (--gdb, --gdb-port=). */
__attribute__((warn_unused_result)) int hvt_args_option(const char *a, struct hvt_opt *out,
							 char *err, size_t errlen);

/* argv[0]'s last component is solo5-hvt or solo5-hvt-debug. */
bool hvt_args_is_solo5_name(const char *argv0);

/* A positional argument of `ember run` is a kernel (and what follows it
 * the kernel's arguments) when the file starts with the ELF magic;
 * otherwise it is an INI file. */
bool hvt_args_is_kernel(const char *path);

/* solo5-hvt's exit status for ember's code: the guest's halt status
 * when it halted (g non-NULL, g->halted), else 0 for 0 and 1 for any
 * error (solo5-hvt's errx(1, ...)). */
int hvt_args_exit_code(const struct hvt_guest *g, int code);

/* solo5-hvt's usage text, naming prog. */
void hvt_args_usage(const char *prog);

#endif
