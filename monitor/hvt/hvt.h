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
#define HVT_PD 0x3000ULL /* 3 pages: up to 3 GiB of RAM */
#define HVT_PT 0x6000ULL /* 4 KiB pages of the first 2 MiB */
#define HVT_LOW_UNMAPPED 0x10000ULL
#define HVT_BOOT_INFO 0x10000ULL
#define HVT_GDT 0x10100ULL
#define HVT_CMDLINE 0x11000ULL
#define HVT_CMDLINE_SIZE 8192 /* including the NUL */
#define HVT_MFT 0x13000ULL
#define HVT_MAX_MEM 0xC0000000ULL /* below the MMIO hole */
#define HVT_PAGE 0x200000ULL	  /* memory is rounded down to this */

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

/* Page tables for an hvt guest: identity map of [HVT_LOW_UNMAPPED,
 * mem_size) (2 MiB pages; 4 KiB pages in the first 2 MiB so the low 64
 * KiB stay unmapped).  0 or -EFAULT. */
__attribute__((warn_unused_result)) int hvt_page_tables(const struct gmem *m, uint64_t mem_size);

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
	const struct gmem *mem;
	struct hvt_manifest mft;
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
};

/* Take the manifest from the loader's notes: check the ABI note, parse and
 * validate the manifest.  0 or -EINVAL with the reason in err. */
__attribute__((warn_unused_result)) int hvt_init(struct hvt_guest *g, const struct hvt_notes *n,
						 char *err, size_t errlen);

/* Attach the configured devices to the manifest's entries by name: every
 * manifest device must be given (--block:NAME=PATH, --net:NAME=TAP) and
 * every given device must be in the manifest.  Opens disk images and taps.
 * 0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int hvt_attach(struct hvt_guest *g, const struct vm_config *cfg,
						   char *err, size_t errlen);

/* Lay out guest memory as the ABI says: page tables, boot info at
 * HVT_BOOT_INFO (cpu_cycle_freq left 0 for hvt_set_tsc), command line,
 * the manifest with devices filled in, the GDT.  ram is the VM's RAM;
 * kernel_end the loader's.  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int hvt_setup(struct hvt_guest *g, const struct gmem *m,
						  uint64_t ram, uint64_t kernel_end,
						  const char *cmdline, size_t cmdline_len,
						  char *err, size_t errlen);

/* Record the TSC frequency (KVM_GET_TSC_KHZ) in the boot info. */
void hvt_set_tsc(struct hvt_guest *g, uint64_t hz);

/* Register the hypercall ports (0x501..0x508) on the PIO bus. */
__attribute__((warn_unused_result)) int hvt_register(struct hvt_guest *g, struct bus *pio);

/* Close every backend. */
void hvt_close(struct hvt_guest *g);
#endif
