/* VM definitions: what to run and with what, independent of how it was
 * given (INI file, command line, later the API).  Parsing fills a
 * struct vm_config; cfg_validate() checks it as a whole.  Nothing here
 * touches KVM. */
#ifndef EMBER_CONFIG_H
#define EMBER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_NAME_MAX 64          /* [A-Za-z0-9_.-], as jail ids */
#define CFG_PATH_MAX 4096
#define CFG_CMDLINE_MAX 8192     /* storage; each boot protocol sets its own limit */
#define CFG_MAX_VCPUS 32         /* as Firecracker */
#define CFG_MIN_MEM (1ULL << 20) /* 1 MiB */
#define CFG_MAX_MEM (1ULL << 40) /* 1 TiB */
#define CFG_DEFAULT_MEM (64ULL << 20)
#define CFG_ERR_MAX 512

enum cfg_irqchip {
	CFG_IRQCHIP_AUTO = 0, /* on for SMP and Linux kernels, off otherwise */
	CFG_IRQCHIP_ON,
	CFG_IRQCHIP_OFF,
};

/* A Solo5 manifest holds up to 63 devices (64 entries, e[0] reserved):
 * hvt guests may use that many; virtio guests are limited by their
 * virtio-mmio slots (monitor/vdevs.c). */
#define CFG_MAX_BLOCKS 63
#define CFG_MAX_NETS 63
/* [block.NAME] sector_size (hvt guests: the manifest's block_size, as
 * solo5-hvt's --block-sector-size): a power of two in this range. */
#define CFG_SECTOR_MIN 512
#define CFG_SECTOR_MAX 32768
#define CFG_IFNAME_MAX 15 /* IFNAMSIZ - 1 */

/* A rate limiter, Firecracker's RateLimiter: a bytes bucket and an ops
 * bucket, each {size, one_time_burst, refill_time}.  A size of 0 (the
 * default) leaves that bucket unlimited.  Keys: bandwidth_size,
 * bandwidth_burst, bandwidth_refill, ops_size, ops_burst, ops_refill
 * (net devices: with rx_ and tx_ in front). */
struct cfg_rate {
	uint64_t bw_size, bw_burst, bw_refill_ms;
	uint64_t ops_size, ops_burst, ops_refill_ms;
};

/* A block device: [block.NAME] or [drive.NAME] (the same thing): a Solo5
 * hvt manifest device for hvt guests, a virtio-blk drive for the others
 * (in the order given: the first is /dev/vda).  path, read_only, direct
 * (O_DIRECT), and a rate limiter. */
struct cfg_block {
	char name[CFG_NAME_MAX + 1];
	char path[CFG_PATH_MAX];
	bool read_only;
	bool direct;
	uint32_t sector_size; /* 0: the default, 512 (hvt guests only) */
	struct cfg_rate rate;
};

/* A network device: [net.NAME] with tap (host interface name) and an
 * optional mac ("02:00:00:00:00:01"); virtio-net for non-hvt guests,
 * with rx and tx rate limiters. */
struct cfg_net {
	char name[CFG_NAME_MAX + 1];
	char tap[CFG_IFNAME_MAX + 1];
	uint8_t mac[6];
	bool has_mac;
	struct cfg_rate rx_rate, tx_rate;
};

/* [vsock]: a virtio-vsock device with guest CID cid (3 .. 2^32-2) whose
 * host side is the unix socket uds (Firecracker's convention). */
struct cfg_vsock {
	bool enabled;
	uint32_t cid;
	char uds[CFG_PATH_MAX];
};

/* [rng]: a virtio-rng device (the section alone adds it). */
struct cfg_rng {
	bool enabled;
	struct cfg_rate rate;
};

struct vm_config {
	char name[CFG_NAME_MAX + 1];
	unsigned vcpus;
	uint64_t mem_size; /* bytes */
	char kernel[CFG_PATH_MAX];
	char initrd[CFG_PATH_MAX]; /* "" = none */
	char cmdline[CFG_CMDLINE_MAX + 1];
	size_t cmdline_len; /* strlen(cmdline); may exceed a protocol's limit */
	char serial_out[CFG_PATH_MAX]; /* "" or "stdout", "none", or a file path */
	uint64_t timeout_ms;           /* 0 = run until the guest stops */
	enum cfg_irqchip irqchip;
	/* [vm] dumpcore: Solo5 hvt guests only (solo5-hvt's --dumpcore=DIR):
	 * a core file is written to this folder when the guest aborts. */
	char dumpcore[CFG_PATH_MAX];
	struct cfg_block blocks[CFG_MAX_BLOCKS];
	unsigned nr_blocks;
	struct cfg_net nets[CFG_MAX_NETS];
	unsigned nr_nets;
	struct cfg_vsock vsock;
	struct cfg_rng rng;
};

/* Defaults: 1 vCPU, 64 MiB, serial to stdout, no timeout, irqchip auto. */
void cfg_defaults(struct vm_config *c);

/* Parse an INI file into c (on top of what c already holds).  Sections:
 * [vm] name, vcpus, memory, kernel, initrd, cmdline, timeout, irqchip,
 * dumpcore; [serial] output; [block.NAME] (or [drive.NAME]) path,
 * read_only, direct, sector_size and the rate keys; [net.NAME] tap, mac, rx_/tx_ rate keys;
 * [vsock] cid, uds; [rng] and its rate keys (see struct cfg_rate).
 * NAME is 1..CFG_NAME_MAX of [A-Za-z0-9_]; a section name used twice
 * (in one file) is an error.  Relative paths are taken from the INI file's
 * folder.
 * Unknown sections/keys, bad values and duplicate keys are errors.
 * 0 on success; else -errno and err holds "FILE:LINE: [section] key: why"
 * (or "FILE: why" when the file cannot be read). */
__attribute__((warn_unused_result)) int cfg_parse_ini(const char *path, struct vm_config *c,
                                                      char *err, size_t errlen);

/* Set one key as the INI file would ("vm", "memory", "128M"; or
 * "block.storage", "path", "disk.img", which creates block device
 * "storage" on first use).  Used by the command line so both spellings
 * share one validator.  0 or -EINVAL with the reason in err (no file/line
 * prefix). */
__attribute__((warn_unused_result)) int cfg_set(struct vm_config *c, const char *section,
                                                const char *key, const char *value, char *err,
                                                size_t errlen);

/* "64M", "1G", "512K", "4096" (bare number = MiB, as QEMU's -m).  Suffixes
 * K/M/G/T, case-insensitive, optional trailing "iB"/"B".  0 or -EINVAL /
 * -ERANGE (overflow). */
__attribute__((warn_unused_result)) int cfg_parse_size(const char *s, uint64_t *bytes);

/* "5", "2.5", "500ms", "10s" (bare number = seconds) to milliseconds. */
__attribute__((warn_unused_result)) int cfg_parse_duration(const char *s, uint64_t *ms);

/* Whole-config checks: kernel given, vcpus 1..CFG_MAX_VCPUS, memory within
 * [CFG_MIN_MEM, CFG_MAX_MEM] and a multiple of 4 KiB, every block device
 * has a path and every net device a tap.  0 or -EINVAL with the reason in
 * err. */
__attribute__((warn_unused_result)) int cfg_validate(const struct vm_config *c, char *err,
                                                     size_t errlen);

/* cfg_validate() less the kernel: for a restore, which loads none. */
__attribute__((warn_unused_result)) int cfg_validate_machine(const struct vm_config *c, char *err,
                                                             size_t errlen);

/* A configuration from an untrusted record (a snapshot's, a migration
 * stream's) into out: every field is given again, key by key, to
 * cfg_set() — the setters a user's INI file goes through, with their
 * rules and limits — then cfg_validate_machine().  Strings must end
 * inside their buffers, counts be within the arrays, booleans 0 or 1.
 * The kernel may be empty (a restore loads none).  0 or -EINVAL with
 * "[section] key: why" in err; out is then unusable. */
__attribute__((warn_unused_result)) int cfg_import(const struct vm_config *in,
                                                   struct vm_config *out, char *err,
                                                   size_t errlen);

#endif
