/* Solo5 hvt ABI (as solo5-hvt, the "tender"): ELF notes, the manifest,
 * the boot layout and hypercalls.  Facts from Solo5's include/hvt_abi.h,
 * mft_abi.h and elf_abi.h (ABI version 2); the definitions are ember's. */
#ifndef EMBER_HVT_H
#define EMBER_HVT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
#include "base/evloop.h"
#include "base/guest_mem.h"

/* ELF notes, both named "Solo5" */
#define HVT_NOTE_ABI1 0x31494241 /* "ABI1": struct { u32 target, version, reserved[2]; } */
#define HVT_NOTE_MFT1 0x3154464d /* "MFT1": struct hvt_mft, 8-byte aligned in the note */
#define HVT_ABI_TARGET 1	 /* 2 = spt, 3 = virtio, 4 = muen, 5 = genode, 6 = xen */
#define HVT_ABI_VERSION 2

/* Manifest (mft_abi.h, MFT_VERSION 1), x86_64 layout */
#define HVT_MFT_VERSION 1
#define HVT_MFT_MAX_ENTRIES 64
#define HVT_MFT_NAME_SIZE 68
#define HVT_MFT_BLOCK 1
#define HVT_MFT_NET 2
#define HVT_MFT_RESERVED_FIRST (1u << 30)

struct hvt_mft_entry {
	char name[HVT_MFT_NAME_SIZE];
	uint32_t type;
	union {
		struct {
			uint64_t capacity;
			uint16_t block_size;
		} block;
		struct {
			uint8_t mac[6];
			uint16_t mtu;
		} net;
	} u;
	uint64_t backing; /* the tender's private word (a host fd in Solo5) */
	uint8_t attached;
	uint8_t pad[7];
};
_Static_assert(sizeof(struct hvt_mft_entry) == 104, "mft_entry layout (x86_64)");

struct hvt_mft {
	uint32_t version;
	uint32_t entries;
	struct hvt_mft_entry e[]; /* e[0] is MFT_RESERVED_FIRST */
};
_Static_assert(sizeof(struct hvt_mft) == 8, "mft header layout");

/* Guest-physical layout.  Nothing below HVT_LOW_UNMAPPED is mapped in the
 * guest's page tables (NULL dereferences fault), so the page tables sit
 * there; boot info, GDT, command line and manifest follow. */
#define HVT_PML4 0x1000ULL
#define HVT_PDPT 0x2000ULL
#define HVT_PD 0x3000ULL /* 4 pages: up to 4 GiB of RAM */
#define HVT_PT 0x7000ULL /* page tables of 4 KiB pages, up to HVT_LOW_UNMAPPED */
#define HVT_NR_PT ((HVT_LOW_UNMAPPED - HVT_PT) / 4096)
#define HVT_LOW_UNMAPPED 0x10000ULL
#define HVT_BOOT_INFO 0x10000ULL
#define HVT_GDT 0x10100ULL
#define HVT_CMDLINE 0x11000ULL
#define HVT_CMDLINE_SIZE 8192 /* including the NUL */
#define HVT_MFT 0x13000ULL
#define HVT_MAX_MEM 0x100000000ULL /* solo5-hvt: 512 pages of 2 MiB in each of 4 PDs */
#define HVT_PAGE 0x200000ULL	   /* memory is rounded down to this */

/* A PT_LOAD segment of the unikernel and its ELF flags (PF_X 1, PF_W 2,
 * PF_R 4): the page tables give its pages those protections, as
 * solo5-hvt's ELF loader gives the host mapping. */
#define HVT_MAX_SEGS 16
#define HVT_PF_X 1u
#define HVT_PF_W 2u
struct hvt_seg {
	uint64_t gpa, size;
	uint32_t flags;
};

/* hvt_abi.h's boot info, with the feature words and ring address that
 * come with include/hvt_ring.h.  A guest that knows nothing of them reads
 * the first five words; with a ring, mem_size ends where the ring begins. */
struct hvt_boot_info {
	uint64_t mem_size;
	uint64_t kernel_end;
	uint64_t cpu_cycle_freq; /* Hz */
	uint64_t cmdline;	 /* GPA */
	uint64_t mft;		 /* GPA */
	uint32_t host_features;	 /* HVT_FEATURE_*: what the monitor offers */
	uint32_t guest_features; /* the guest's to write; the monitor never reads it */
	uint64_t net_ring;	 /* GPA of struct hvt_ring, 0: none */
};
_Static_assert(sizeof(struct hvt_boot_info) == 56, "hvt_boot_info layout");

/* Ring I/O (Solo5 include/hvt_ring.h): one shared ring for all net
 * devices, at the top of RAM, page-aligned.  The guest produces entries
 * (ent_tail) and consumes commits (com_head); the monitor consumes entries
 * (ent_head) and produces commits (com_tail), one per NET_READ (writes are
 * fire-and-forget).  The guest kicks with a 32-bit OUT to port 0x600 only
 * when needs_kick is set; both sides "store mine, full barrier, load
 * theirs", so one of them always sees the other. */
#define HVT_FEATURE_RING_IO (1u << 0)
#define HVT_RING_KICK_PORT 0x600
#define HVT_RING_SIZE 1024u /* entries and commits, a power of two */
#define HVT_RING_BUF_SIZE 2048
#define HVT_RING_NET_WRITE 1
#define HVT_RING_NET_READ 2
#define HVT_RING_MIN_GPA 0x200000ULL /* solo5-hvt's floor: no ring below 2 MiB */

struct hvt_ring_entry {
	uint32_t operation, handle;
	uint64_t data; /* GPA */
	uint32_t len, id;
	uint64_t reserved;
};
struct hvt_ring_commit {
	uint32_t id;
	int32_t ret; /* solo5_result_t */
	uint32_t len, reserved;
};
struct hvt_ring {
	uint32_t ent_tail, com_head; /* the guest's cache line */
	uint8_t pad0[56];
	uint32_t ent_head, com_tail, needs_kick; /* the monitor's */
	uint8_t pad1[52];
	struct hvt_ring_entry entries[HVT_RING_SIZE];
	struct hvt_ring_commit commits[HVT_RING_SIZE];
};
_Static_assert(sizeof(struct hvt_ring_entry) == 32 && sizeof(struct hvt_ring_commit) == 16 &&
		   offsetof(struct hvt_ring, ent_head) == 64 &&
		   offsetof(struct hvt_ring, entries) == 128 && sizeof(struct hvt_ring) == 49280,
	       "hvt_ring layout");

/* Hypercalls: outl of the argument's 32-bit GPA to port base + nr. */
#define HVT_PIO_BASE 0x500
enum {
	HVT_WALLTIME = 1,
	HVT_PUTS,
	HVT_POLL,
	HVT_BLOCK_WRITE,
	HVT_BLOCK_READ,
	HVT_NET_WRITE,
	HVT_NET_READ,
	HVT_HALT,
	HVT_NR_CALLS
};
#define HVT_HALT_COOKIE_MAX 512

/* solo5_result_t */
#define SOLO5_R_OK 0
#define SOLO5_R_AGAIN 1
#define SOLO5_R_EINVAL 2
#define SOLO5_R_EUNSPEC 3

/* What the loader found in the notes (pointers into the image). */
struct hvt_notes {
	bool has_abi;
	uint32_t target, version;
	const uint8_t *mft; /* the MFT1 descriptor, NULL if absent */
	size_t mft_len;
	struct hvt_seg seg[HVT_MAX_SEGS]; /* the PT_LOAD segments (the loader's) */
	unsigned nr_seg;		  /* more than HVT_MAX_SEGS: refused */
};

/* A manifest, checked (mft_abi.h rules: version 1, at most 64 entries,
 * e[0] reserved, names NUL-terminated, non-empty and unique, known types)
 * and copied out of the image.  0 or -EINVAL with the reason in err. */
struct hvt_manifest {
	unsigned nr; /* including e[0] */
	struct hvt_mft_entry e[HVT_MFT_MAX_ENTRIES];
};
__attribute__((warn_unused_result)) int hvt_parse_manifest(const uint8_t *desc, size_t len,
							   struct hvt_manifest *out, char *err,
							   size_t errlen);

/* Check the ABI note: target HVT, version HVT_ABI_VERSION.  The message
 * names what was found ("an spt unikernel (ABI target 2)"). */
__attribute__((warn_unused_result)) int hvt_check_abi(const struct hvt_notes *n, char *err,
						      size_t errlen);

/* Page tables for an hvt guest (monitor/hvt/hvt_layout.c): identity map
 * of [HVT_LOW_UNMAPPED, mem_size), 2 MiB pages where a whole 2 MiB has one
 * protection, 4 KiB pages (from the HVT_NR_PT tables at HVT_PT) where it
 * has several and in the first 2 MiB (the low 64 KiB not present).  A
 * page of a segment gets its flags: not writable without PF_W, not
 * executable (NX) without PF_X; a page of two segments the union; other
 * pages writable and executable.  0, -EFAULT (no room: mem_size beyond
 * HVT_MAX_MEM or below HVT_PAGE, or outside m), -ENOSPC (the segments
 * need more 4 KiB tables than there are). */
__attribute__((warn_unused_result)) int hvt_page_tables(const struct gmem *m, uint64_t mem_size,
							 const struct hvt_seg *seg, unsigned nr_seg);

/* What the guest's page tables say of the page at gva: "code (.text,
 * read-only)", "read-only data (.rodata)", "data (not executable)", or
 * NULL when the tables do not map it.  Walks the tables at cr3. */
const char *hvt_page_kind(const struct gmem *m, uint64_t cr3, uint64_t gva, bool *writable,
			  bool *executable);

/* ---- the hvt frontend of one VM (monitor/hvt/hvt.c) ---- */

struct vm_config;
struct bus;

/* Called by hypercalls that stop the VM (halt, bad arguments): code is
 * ember's exit code. */
typedef void (*hvt_stop_fn)(void *opaque, int code, const char *why);
/* Called when POLL's wait is interrupted by a signal: > 0 if the VM must
 * stop now (it is stopping, or its --timeout passed); < 0 if the vCPU is
 * to pause (POLL then returns at once with nothing ready); 0 to wait on. */
typedef int (*hvt_check_fn)(void *opaque);

/* A guest buffer a hypercall may write (argument, data): marked dirty
 * again when the call is done. */
struct hvt_span {
	void *p;
	uint64_t len;
};
#define HVT_TOUCHED_MAX 2 /* argument + one buffer per call */

struct hvt_guest {
	struct gmem *mem;
	struct hvt_manifest mft;
	struct hvt_seg seg[HVT_MAX_SEGS]; /* from the ELF (a boot; none on a restore) */
	unsigned nr_seg;
	struct blk_backend blk[HVT_MFT_MAX_ENTRIES]; /* by manifest index */
	struct tap_backend tap[HVT_MFT_MAX_ENTRIES];
	uint64_t mem_size; /* rounded down to HVT_PAGE */
	uint64_t kernel_end;
	int out_fd; /* PUTS goes here (the serial output); -1: discarded */
	hvt_stop_fn stop;
	hvt_check_fn check;
	void (*first_output)(void *opaque); /* the first PUTS, for --stats */
	void *opaque;
	bool wrote;
	uint64_t nr_calls[HVT_NR_CALLS];
	struct hvt_span touched[HVT_TOUCHED_MAX]; /* this call's, for hvt_io */
	unsigned nr_touched;
	/* The HALT call: its status and cookie, for --dumpcore and for
	 * telling a guest's status from ember's own exit codes. */
	bool halted;
	int halt_status;
	uint64_t halt_cookie;
	char dumpcore[4096]; /* "" or the folder ([vm] dumpcore) */
	/* Ring I/O (monitor/hvt/hvt_ring.c): ring_gpa 0 when there is none. */
	uint64_t ring_gpa;
	struct hvt_ring *ring; /* host address of ring_gpa, once attached */
	int kick_fd;	       /* the eventfd KVM signals on port 0x600, or -1 */
	struct evloop *ev;
	struct ev_source kick_src;
	uint64_t ring_done[3]; /* entries served: [0] unknown op, [op] */
	uint64_t ring_failed;  /* entries refused (bad handle, GPA or length) */
};

/* Take the manifest from the loader's notes: check the ABI note, parse and
 * validate the manifest.  0 or -EINVAL with the reason in err. */
__attribute__((warn_unused_result)) int hvt_init(struct hvt_guest *g, const struct hvt_notes *n,
						 char *err, size_t errlen);

/* Attach the configured devices to the manifest's entries by name: every
 * manifest device must be given (--block:NAME=PATH, --net:NAME=TAP) and
 * every given device must be in the manifest.  Opens disk images (a
 * multiple of their sector size, [block.NAME] sector_size or 512, and at
 * least one sector) and taps (the manifest's MTU is the tap's); checks
 * [vm] dumpcore's folder; lays a restored guest's RAM out flat (g->mem
 * set, more than 3 GiB).  0 or -errno with the reason in err, in
 * solo5-hvt's words where it has some. */
__attribute__((warn_unused_result)) int hvt_attach(struct hvt_guest *g, const struct vm_config *cfg,
						   char *err, size_t errlen);

/* Lay out guest memory as the ABI says: page tables, boot info at
 * HVT_BOOT_INFO (cpu_cycle_freq left 0 for hvt_set_tsc), command line,
 * the manifest with devices filled in, the GDT.  ram is the VM's RAM;
 * kernel_end the loader's.  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int hvt_setup(struct hvt_guest *g, struct gmem *m,
						  uint64_t ram, uint64_t kernel_end,
						  const char *cmdline, size_t cmdline_len,
						  char *err, size_t errlen);

/* Record the TSC frequency (KVM_GET_TSC_KHZ) in the boot info. */
void hvt_set_tsc(struct hvt_guest *g, uint64_t hz);

/* Register the hypercall ports (0x501..0x508) on the PIO bus. */
__attribute__((warn_unused_result)) int hvt_register(struct hvt_guest *g, struct bus *pio);

/* Close every backend and the ring's eventfd. */
void hvt_close(struct hvt_guest *g);

/* Is handle an attached net device, and len a frame it takes (a write:
 * 1..MTU+14 bytes) or a buffer any of its frames fits (a read: at least
 * MTU+14)?  The hypercalls' and the ring's one check. */
bool hvt_net_ok(const struct hvt_guest *g, uint64_t handle, bool write, uint64_t len);

/* ---- ring I/O (monitor/hvt/hvt_ring.c) ---- */

/* Where the ring goes in RAM of g->mem_size bytes when the guest has an
 * attached net device: solo5-hvt's place, (mem_size - sizeof(ring))
 * rounded down to a page; 0 when there is no net device or no room (below
 * HVT_RING_MIN_GPA, or not above kernel_end and a page of stack). */
uint64_t hvt_ring_place(const struct hvt_guest *g);

/* The top of the guest's own RAM: where its stack starts (the ring, or
 * the end of RAM). */
uint64_t hvt_ram_top(const struct hvt_guest *g);

/* After hvt_setup() wrote the boot info (a boot) or the snapshot's RAM is
 * in place (a restore): find the ring (a boot: hvt_ring_place(); a
 * restore: the one the saved boot info offers, if it is where
 * hvt_ring_place() puts it, else none, as for a snapshot made without
 * ring I/O), register an eventfd for 32-bit OUTs to port 0x600 with
 * KVM_IOEVENTFD (KVM API 4.59) on vm_fd, and watch it on ev, which must
 * be initialized.  It then serves whatever the ring holds once (entries a
 * snapshot caught unserved).  Nothing to do without a ring: 0.  0 or
 * -errno with the reason in err. */
__attribute__((warn_unused_result)) int hvt_ring_attach(struct hvt_guest *g, int vm_fd,
							struct evloop *ev, bool restored, char *err,
							size_t errlen);

/* Stop watching the kick and close its eventfd (the ioeventfd goes with
 * the VM).  Safe without a ring, and twice. */
void hvt_ring_detach(struct hvt_guest *g);

/* Serve up to budget entries of ring r (a pointer into g->mem): each
 * entry copied out before it is checked; a bad handle, GPA or length
 * fails that entry (a NET_READ commits SOLO5_R_EINVAL; a NET_WRITE is
 * dropped), never the monitor; unknown operations are skipped, as
 * solo5-hvt does.  Marks every byte it writes in guest RAM.  Returns the
 * number of entries taken. */
unsigned hvt_ring_process(struct hvt_guest *g, struct hvt_ring *r, unsigned budget);

/* The kick's work on the vmm thread: clear needs_kick, serve the ring
 * until it is empty, set needs_kick and look once more (after a full
 * barrier) before going idle; after a budget of entries, leave the rest
 * for the next turn of the event loop (kicking itself). */
void hvt_ring_serve(struct hvt_guest *g);

/* A vCPU of an hvt guest shut down (a triple fault: the guest has no IDT
 * of its own, or its handler faulted): if the fault address (CR2) is on a
 * page its page tables protect, say in msg what the guest did there ("the
 * guest wrote to its code (.text, read-only) at 0x101000, rip 0x100f00")
 * and return true; else false and msg is left alone.  vcpu_fd: the
 * vCPU's, for KVM_GET_SREGS and KVM_GET_REGS. */
bool hvt_explain_shutdown(const struct hvt_guest *g, int vcpu_fd, char *msg, size_t len);

/* After the run (the vmm thread, sandboxed): if the guest aborted (HALT
 * with status 255) and [vm] dumpcore names a folder, write the guest's
 * core there as solo5-hvt does (core.solo5-hvt.PID: an ELF core with an
 * NT_PRSTATUS note and one PT_LOAD of guest RAM, sparse), saying so on
 * stderr.  0, or -errno (also said on stderr). */
int hvt_dumpcore(const struct hvt_guest *g, int vcpu_fd);
#endif
