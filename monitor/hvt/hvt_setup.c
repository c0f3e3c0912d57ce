/* Building an hvt guest: its manifest from the ELF, its devices attached
 * by name (solo5-hvt's --block:, --block-sector-size:, --net:,
 * --net-mac: with solo5-hvt's rules), the layout solo5-hvt gives it (flat
 * RAM up to 4 GiB, page tables with the segments' protections, boot
 * info, command line, manifest, GDT). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/backend.h"
#include "config/config.h"
#include "monitor/hvt/hvt.h"
#include "vcpu/vcpu.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

int hvt_init(struct hvt_guest *g, const struct hvt_notes *n, char *err, size_t errlen)
{
	memset(g, 0, sizeof(*g));
	g->out_fd = -1;
	for (unsigned i = 0; i < HVT_MFT_MAX_ENTRIES; i++)
		g->blk[i].fd = g->tap[i].fd = -1;
	int r = hvt_check_abi(n, err, errlen);
	if (r)
		return r;
	if (n->nr_seg > HVT_MAX_SEGS)
		return ERR("%u loadable segments: an hvt unikernel has at most %d", n->nr_seg,
			   HVT_MAX_SEGS);
	memcpy(g->seg, n->seg, n->nr_seg * sizeof(n->seg[0]));
	g->nr_seg = n->nr_seg;
	return hvt_parse_manifest(n->mft, n->mft_len, &g->mft, err, errlen);
}

static int find_entry(const struct hvt_guest *g, const char *name, uint32_t type)
{
	for (unsigned i = 1; i < g->mft.nr; i++)
		if (g->mft.e[i].type == type && strcmp(g->mft.e[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* "storage (block), service (net)" for messages */
static void list_devices(const struct hvt_guest *g, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (unsigned i = 1; i < g->mft.nr && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s (%s)", i > 1 ? ", " : "",
				      g->mft.e[i].name,
				      g->mft.e[i].type == HVT_MFT_BLOCK ? "block" : "net");
	if (g->mft.nr <= 1)
		snprintf(buf, len, "no devices");
}

/* solo5-hvt's checks of a disk against its sector size (hvt_module_blk.c). */
static int attach_block(struct hvt_guest *g, const struct cfg_block *b, int k, char *err,
			size_t errlen)
{
	char why[512];
	int r = blk_open(&g->blk[k], b->path, b->read_only, why, sizeof(why));
	if (r) {
		snprintf(err, errlen, "--block:%s: Could not open block device: %s", b->name, why);
		return r;
	}
	uint64_t sector = b->sector_size ? b->sector_size : BLK_SECTOR;
	uint64_t cap = g->blk[k].capacity;
	if (cap % sector)
		return ERR("--block:%s: Backing storage size must be block aligned (%llu bytes): "
			   "%s is %llu bytes",
			   b->name, (unsigned long long)sector, b->path, (unsigned long long)cap);
	if (cap < sector)
		return ERR("--block:%s: Backing storage must be at least 1 block (%llu bytes) in "
			   "size",
			   b->name, (unsigned long long)sector);
	struct hvt_mft_entry *e = &g->mft.e[k];
	e->u.block.capacity = cap;
	e->u.block.block_size = (uint16_t)sector;
	e->attached = 1;
	return 0;
}

static int attach_net(struct hvt_guest *g, const struct cfg_net *n, int k, char *err,
		      size_t errlen)
{
	char why[512];
	unsigned mtu;
	int r = tap_open(&g->tap[k], n->tap, why, sizeof(why));
	if (!r && (r = tap_mtu(n->tap, &mtu)) == 0 && (mtu < 68 || mtu > 65535 - TAP_HLEN))
		r = -ERANGE;
	if (r) {
		snprintf(err, errlen, "--net:%s: Could not attach interface: %s", n->name,
			 g->tap[k].fd >= 0 ? strerror(-r) : why);
		return r;
	}
	struct hvt_mft_entry *e = &g->mft.e[k];
	if (n->has_mac)
		memcpy(e->u.net.mac, n->mac, 6);
	else
		tap_random_mac(e->u.net.mac);
	e->u.net.mtu = (uint16_t)mtu; /* the tap's, as solo5-hvt reads it (SIOCGIFMTU) */
	e->attached = 1;
	return 0;
}

/* --dumpcore=DIR: checked now, as solo5-hvt's module setup does. */
static int check_dumpcore(struct hvt_guest *g, const char *dir, char *err, size_t errlen)
{
	if (!dir[0])
		return 0;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ERR("dumpcore: cannot open dir %s: %s", dir, strerror(errno));
	close(fd);
	if (access(dir, W_OK))
		return ERR("dumpcore: dir not writable: %s", dir);
	snprintf(g->dumpcore, sizeof(g->dumpcore), "%s", dir);
	return 0;
}

/* The manifest index of device name of type, or -EINVAL in solo5-hvt's
 * words ("Resource not declared in manifest"). */
static int declared(const struct hvt_guest *g, const char *name, uint32_t type, char *err,
		    size_t errlen)
{
	char have[512];
	int k = find_entry(g, name, type);
	if (k >= 0)
		return k;
	list_devices(g, have, sizeof(have));
	return ERR("--%s:%s: Resource not declared in manifest: '%s' (the unikernel has: %s)",
		   type == HVT_MFT_BLOCK ? "block" : "net", name, name, have);
}

int hvt_attach(struct hvt_guest *g, const struct vm_config *cfg, char *err, size_t errlen)
{
	int k, r = 0;
	for (unsigned i = 0; i < cfg->nr_blocks; i++)
		if ((k = declared(g, cfg->blocks[i].name, HVT_MFT_BLOCK, err, errlen)) < 0 ||
		    (r = attach_block(g, &cfg->blocks[i], k, err, errlen)))
			return k < 0 ? k : r;
	for (unsigned i = 0; i < cfg->nr_nets; i++)
		if ((k = declared(g, cfg->nets[i].name, HVT_MFT_NET, err, errlen)) < 0 ||
		    (r = attach_net(g, &cfg->nets[i], k, err, errlen)))
			return k < 0 ? k : r;
	for (unsigned i = 1; i < g->mft.nr; i++) {
		const struct hvt_mft_entry *e = &g->mft.e[i];
		if (!e->attached)
			return ERR(
			    "the unikernel's %s device '%s' is not attached: give --%s:%s=%s",
			    e->type == HVT_MFT_BLOCK ? "block" : "net", e->name,
			    e->type == HVT_MFT_BLOCK ? "block" : "net", e->name,
			    e->type == HVT_MFT_BLOCK ? "PATH" : "TAP");
	}
	/* A restore's RAM (set up by the snapshot code) is laid out around
	 * the MMIO hole; an hvt guest's is flat (hvt_setup). */
	if (g->mem && g->mem_size > GMEM_HOLE_START && gmem_flatten(g->mem))
		return ERR("memory: cannot lay out %llu MiB flat",
			   (unsigned long long)(g->mem_size >> 20));
	return check_dumpcore(g, cfg->dumpcore, err, errlen);
}

int hvt_setup(struct hvt_guest *g, struct gmem *m, uint64_t ram, uint64_t kernel_end,
	      const char *cmdline, size_t cmdline_len, char *err, size_t errlen)
{
	g->mem = m;
	if ((ram & ~(HVT_PAGE - 1)) > HVT_MAX_MEM)
		return ERR("memory: guest memory size %llu bytes exceeds the max size %llu bytes "
			   "(%llu MiB)",
			   (unsigned long long)(ram & ~(HVT_PAGE - 1)),
			   (unsigned long long)HVT_MAX_MEM, (unsigned long long)(HVT_MAX_MEM >> 20));
	g->mem_size = ram & ~(HVT_PAGE - 1);
	kernel_end = (kernel_end + 4095) & ~4095ULL; /* page-aligned, as solo5-hvt's */
	g->kernel_end = kernel_end;
	/* room for the kernel and at least a page of stack above it */
	if (g->mem_size < HVT_PAGE || kernel_end + 4096 > g->mem_size)
		return ERR("memory: %llu MiB (rounded down to 2 MiB) does not hold the unikernel, "
			   "which ends at 0x%llx: give more memory",
			   (unsigned long long)(ram >> 20), (unsigned long long)kernel_end);
	if (cmdline_len + 1 > HVT_CMDLINE_SIZE)
		return ERR("cmdline: Guest command line too long (max=%d characters): %zu",
			   HVT_CMDLINE_SIZE - 1, cmdline_len);
	if (gmem_flatten(m))
		return ERR("memory: cannot lay out %llu MiB flat", (unsigned long long)(ram >> 20));
	int r = hvt_page_tables(m, g->mem_size, g->seg, g->nr_seg);
	if (r)
		return ERR("memory: cannot write page tables%s",
			   r == -ENOSPC ? ": the segments' protections need too many page tables"
					: "");

	size_t mft_len = sizeof(struct hvt_mft) + g->mft.nr * sizeof(g->mft.e[0]);
	struct hvt_mft hdr = {.version = HVT_MFT_VERSION, .entries = g->mft.nr};
	/* Ring I/O when there is a net device: the ring at the top of RAM,
	 * outside mem_size (solo5-hvt's hvt_net_reserve_ring); served once
	 * hvt_ring_attach() has the VM. */
	g->ring_gpa = hvt_ring_place(g);
	struct hvt_boot_info bi = {
	    .mem_size = hvt_ram_top(g),
	    .kernel_end = kernel_end,
	    .cmdline = HVT_CMDLINE,
	    .mft = HVT_MFT,
	    .host_features = g->ring_gpa ? HVT_FEATURE_RING_IO : 0,
	    .net_ring = g->ring_gpa,
	};
	uint64_t gdt[VCPU_GDT_ENTRIES];
	vcpu_gdt_build(gdt, VCPU_MODE_HVT64);
	char *cl = gmem_ptr(m, HVT_CMDLINE, cmdline_len + 1);
	if (!cl || gmem_write(m, HVT_BOOT_INFO, &bi, sizeof(bi)) ||
	    gmem_write(m, HVT_GDT, gdt, sizeof(gdt)) || gmem_write(m, HVT_MFT, &hdr, sizeof(hdr)) ||
	    gmem_write(m, HVT_MFT + sizeof(hdr), g->mft.e, mft_len - sizeof(hdr)))
		return ERR("memory: cannot write boot structures");
	memcpy(cl, cmdline, cmdline_len);
	cl[cmdline_len] = '\0';
	return 0;
}

void hvt_set_tsc(struct hvt_guest *g, uint64_t hz)
{
	struct hvt_boot_info *bi = gmem_ptr(g->mem, HVT_BOOT_INFO, sizeof(*bi));
	if (bi)
		bi->cpu_cycle_freq = hz;
}
