/* Solo5 hvt ABI (as solo5-hvt, the "tender"): ELF notes, the manifest,
 * the boot layout and hypercalls.  Facts from Solo5's include/hvt_abi.h,
 * mft_abi.h and elf_abi.h (ABI version 2); the definitions are ember's. */
#ifndef EMBER_HVT_H
#define EMBER_HVT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
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

struct hvt_boot_info {
	uint64_t mem_size;
	uint64_t kernel_end;
	uint64_t cpu_cycle_freq; /* Hz */
	uint64_t cmdline;	 /* GPA */
	uint64_t mft;		 /* GPA */
};

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

/* Close every backend. */
void hvt_close(struct hvt_guest *g);

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
