/* Private to config/: the key table's entry points that the INI reader
 * (ini.c) shares with cfg_set() (config.c). */
#ifndef EMBER_CONFIG_KEYS_H
#define EMBER_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* Where a value's relative paths are taken from: the first dirlen bytes of
 * an INI file's path (its folder, trailing '/' included).  dirlen 0: as
 * given, relative to the working directory (command line, or an INI file
 * named without a folder). */
struct base {
	const char *dir;
	size_t dirlen;
};

/* Section kinds: [vm], [serial], [vsock], [rng], and the device kinds
 * [block.NAME] (alias [drive.NAME]) and [net.NAME], whose NAME picks (or
 * adds) one device. */
enum kind { KIND_VM, KIND_SERIAL, KIND_BLOCK, KIND_NET, KIND_VSOCK, KIND_RNG, NKINDS };

/* The keys one INI file has set so far, a bit per keys[] entry: for [vm]
 * and [serial] however often they are opened, and for each device (whose
 * section may be opened once per file).  NULL from the command line,
 * which may override a key as often as it likes. */
struct seen {
	uint64_t vm; /* and [serial], [vsock], [rng] */
	uint64_t blocks[CFG_MAX_BLOCKS];
	uint64_t nets[CFG_MAX_NETS];
};

/* A section name taken apart: its kind and, for a device, its name. */
struct section {
	enum kind kind;
	const char *dev; /* after the '.'; NULL for [vm] and [serial] */
};

/* Format a reason into err; returns -EINVAL. */
__attribute__((format(printf, 3, 4))) int cfg_fail(char *err, size_t errlen, const char *fmt, ...);

/* "[vm]", "block.storage" ... taken apart and checked.  0 or -EINVAL. */
int cfg_parse_section(const char *s, struct section *sec, char *err, size_t errlen);

/* Device `name` of kind k, added if new (*added says so).  Its index, or
 * -EINVAL with the reason (bad name, too many devices). */
int cfg_dev_get(struct vm_config *c, enum kind k, const char *name, bool *added, char *err,
		size_t errlen);

/* Set or extend (a continuation line) the command line.  0 or -EINVAL. */
int cfg_put_cmdline(struct vm_config *c, bool extend, const char *v, size_t n, char *err,
		    size_t errlen);

/* Set one key: the single validator behind both spellings.  seen is NULL
 * from the command line (which may override keys), else the file's. */
int cfg_set_key(struct vm_config *c, const char *section, const char *name, const char *value,
		const struct base *b, struct seen *seen, char *err, size_t errlen);

#endif
