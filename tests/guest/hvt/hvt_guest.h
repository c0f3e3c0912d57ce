/* ember's Solo5 hvt test guests: the guest side of the hvt ABI and a tiny
 * runtime.  Facts from Solo5's include/hvt_abi.h (HVT_ABI_VERSION 2),
 * include/mft_abi.h (MFT_VERSION 1) and include/elf_abi.h; the definitions
 * are ours.  Freestanding and integer-only: guest ring-0 code is emulated
 * on some hosts (~200 ns an instruction) and that emulator has no SSE/x87.
 *
 * The monitor (the "tender") enters e_entry in 64-bit long mode with
 * identity paging, rdi = GPA of struct hvt_boot_info (0x10000), rsp = top
 * of RAM - 8, interrupts off, no IDT: this runtime sets nothing up. */
#ifndef HVT_GUEST_H
#define HVT_GUEST_H

#include "../klib.h" /* u8..u64, mem and str functions, kprintf, cmdline_arg */

/* ---- ELF notes (elf_abi.h, mft_abi.h) ----
 * Each note is the first (and only) note of its own PT_NOTE program
 * header: solo5-hvt reads just the note at each PT_NOTE's p_offset. */
#define HVT_NOTE_NAME "Solo5"
#define HVT_NOTE_ABI1 0x31494241 /* "ABI1" */
#define HVT_NOTE_MFT1 0x3154464d /* "MFT1" */
#define HVT_ABI_TARGET_HVT 1	 /* enum abi_target: 2 spt, 3 virtio, 4 muen, ... */
#define HVT_ABI_TARGET_SPT 2
#define HVT_ABI_VERSION 2

/* Elf64_Nhdr with the name "Solo5\0" padded to 8: 20 bytes. */
struct hvt_nhdr {
	u32 namesz; /* 6 */
	u32 descsz;
	u32 type;
	char name[8];
};
_Static_assert(sizeof(struct hvt_nhdr) == 20, "Solo5 note header");

/* ABI1 descriptor: 16 bytes, 4-aligned, so it starts right after the
 * header (offset 20). */
struct hvt_abi1_note {
	struct hvt_nhdr h;
	u32 target;
	u32 version;
	u32 reserved[2];
};
_Static_assert(sizeof(struct hvt_abi1_note) == 36, "ABI1 note");

/* Manifest (struct mft, x86_64 layout). */
#define HVT_MFT_VERSION 1
#define HVT_MFT_MAX_ENTRIES 64
#define HVT_MFT_NAME_SIZE 68 /* including the NUL: names are <= 67 chars */
#define HVT_MFT_BLOCK_BASIC 1
#define HVT_MFT_NET_BASIC 2
#define HVT_MFT_RESERVED_FIRST (1u << 30) /* e[0]: this type, empty name */

struct hvt_mft_entry {
	char name[HVT_MFT_NAME_SIZE]; /* 0 */
	u32 type;		      /* 68: an enum, int-sized */
	union {			      /* 72: filled in by the monitor */
		struct {
			u64 capacity;	/* 72: bytes */
			u16 block_size; /* 80 */
		} block;
		struct {
			u8 mac[6]; /* 72 */
			u16 mtu;   /* 78 */
		} net;
	} u;
	u64 backing; /* 88: the tender's private union { int hostfd; void *data; } */
	u8 attached; /* 96: bool; must be 0 in the ELF note */
	u8 pad[7];
};
_Static_assert(sizeof(struct hvt_mft_entry) == 104, "mft_entry (x86_64)");
_Static_assert(offsetof(struct hvt_mft_entry, type) == 68, "mft_entry.type");
_Static_assert(offsetof(struct hvt_mft_entry, u) == 72, "mft_entry.u");
_Static_assert(offsetof(struct hvt_mft_entry, u.block.block_size) == 80, "block_size");
_Static_assert(offsetof(struct hvt_mft_entry, u.net.mtu) == 78, "mtu");
_Static_assert(offsetof(struct hvt_mft_entry, backing) == 88, "mft_entry.b");
_Static_assert(offsetof(struct hvt_mft_entry, attached) == 96, "mft_entry.attached");

struct hvt_mft {
	u32 version;
	u32 entries; /* including e[0] */
	struct hvt_mft_entry e[];
};
_Static_assert(sizeof(struct hvt_mft) == 8, "mft header");

/* The MFT1 note as Solo5's elftool lays it out: the 20-byte header, 4 bytes
 * of padding so struct mft sits 8-aligned (offset 24) within the note, then
 * the manifest.  descsz counts the padding: 4 + 8 + 104 * entries.  The
 * note itself is only 4-aligned (as Solo5's), so readers that follow the
 * ELF spec find the descriptor at offset 20. */
#define HVT_MFT_NOTE(N)                                                                            \
	struct __attribute__((packed, aligned(4))) {                                               \
		struct hvt_nhdr h;                                                                 \
		u32 pad;                                                                           \
		u32 version;                                                                       \
		u32 entries;                                                                       \
		struct hvt_mft_entry e[N];                                                         \
	}

/* clang-format off */
#define HVT_BLOCK(NAME) {.name = NAME, .type = HVT_MFT_BLOCK_BASIC}
#define HVT_NET(NAME) {.name = NAME, .type = HVT_MFT_NET_BASIC}
#define HVT_MFT_FIRST {.name = "", .type = HVT_MFT_RESERVED_FIRST}
/* clang-format on */
#define HVT_MFT_COUNT(...)                                                                         \
	(sizeof((struct hvt_mft_entry[]){HVT_MFT_FIRST, __VA_ARGS__}) /                            \
	 sizeof(struct hvt_mft_entry))

/* Declare the guest's manifest: HVT_MANIFEST() for no devices,
 * HVT_MANIFEST(HVT_BLOCK("storage"), HVT_NET("service")) for two (handles
 * 1 and 2: a handle is the manifest index).  Defining HVT_OMIT_MANIFEST
 * leaves it out for a guest the monitor must refuse: the manifest's
 * PT_NOTE then holds an "ember" note (type 1, "no manifest"), so the ELF
 * stays well-formed (an empty PT_NOTE is itself invalid to solo5-hvt). */
#ifdef HVT_OMIT_MANIFEST
#define HVT_MANIFEST(...)                                                                          \
	__attribute__((used, section(".note.solo5.manifest"), aligned(4))) static const struct {   \
		struct hvt_nhdr h;                                                                 \
		char desc[12];                                                                     \
	} hvt_not_a_manifest = {{6, 12, 1, "ember"}, "no manifest"}
#else
#define HVT_MANIFEST(...)                                                                          \
	__attribute__((used, section(".note.solo5.manifest"),                                      \
		       aligned(4))) static const HVT_MFT_NOTE(HVT_MFT_COUNT(__VA_ARGS__))          \
	    hvt_mft_note = {                                                                       \
		.h = {.namesz = sizeof(HVT_NOTE_NAME),                                             \
		      .descsz = 4 + 8 + HVT_MFT_COUNT(__VA_ARGS__) * sizeof(struct hvt_mft_entry), \
		      .type = HVT_NOTE_MFT1,                                                       \
		      .name = HVT_NOTE_NAME},                                                      \
		.version = HVT_MFT_VERSION,                                                        \
		.entries = HVT_MFT_COUNT(__VA_ARGS__),                                             \
		.e = {HVT_MFT_FIRST, __VA_ARGS__}}
#endif

/* ---- boot info and hypercalls (hvt_abi.h) ---- */
struct hvt_boot_info {
	u64 mem_size;	    /* bytes, rounded down to 2 MiB */
	u64 kernel_end;	    /* first byte after the loaded image */
	u64 cpu_cycle_freq; /* TSC Hz */
	u64 cmdline;	    /* GPA of a C string */
	u64 mft;	    /* GPA of the monitor's struct hvt_mft */
	/* With include/hvt_ring.h (after Solo5 v0.12): */
	u32 host_features;  /* HVT_FEATURE_*: what the monitor offers */
	u32 guest_features; /* ours to write; solo5-hvt never reads it */
	u64 net_ring;	    /* GPA of struct hvt_ring, 0: none */
};
_Static_assert(sizeof(struct hvt_boot_info) == 56, "boot info");

/* ---- ring I/O (hvt_ring.h), the guest's side: ring.c ---- */
#define HVT_FEATURE_RING_IO 1u
#define HVT_RING_KICK_PORT 0x600
#define HVT_RING_SIZE 1024u
#define HVT_RING_NET_WRITE 1
#define HVT_RING_NET_READ 2
struct hvt_ring_entry {
	u32 operation, handle;
	u64 data; /* GPA */
	u32 len, id;
	u64 reserved;
};
struct hvt_ring_commit {
	u32 id;
	int ret;
	u32 len, reserved;
};
struct hvt_ring {
	u32 ent_tail, com_head; /* ours */
	u8 pad0[56];
	u32 ent_head, com_tail, needs_kick; /* the monitor's */
	u8 pad1[52];
	struct hvt_ring_entry entries[HVT_RING_SIZE];
	struct hvt_ring_commit commits[HVT_RING_SIZE];
};
_Static_assert(sizeof(struct hvt_ring) == 49280, "hvt_ring");

/* Use the ring the boot info offers (writes guest_features): 0, or -1
 * when there is none. */
int ring_accept(void);
/* A NET_WRITE entry (fire-and-forget: the frame at data must stay as it
 * is until ring_drain()); waits while the ring is full. */
void ring_write(u32 handle, u64 data, u32 len);
/* A NET_READ entry and its commit: the commit's ret (SOLO5_R_*), *len
 * its length; -1 if no commit came within a second. */
int ring_read(u32 handle, u64 data, u64 *len);
/* Any entry (for the bad-entry tests): submitted, nothing waited for. */
void ring_submit(u32 op, u32 handle, u64 data, u32 len);
/* Wait until the monitor has taken every entry: 0, or -1 after a second. */
int ring_drain(void);

#define HVT_PIO_BASE 0x500
enum hvt_call {
	HVT_WALLTIME = 1,
	HVT_PUTS,
	HVT_POLL,
	HVT_BLOCK_WRITE,
	HVT_BLOCK_READ,
	HVT_NET_WRITE,
	HVT_NET_READ,
	HVT_HALT,
};
#define HVT_CMDLINE_SIZE 8192
#define HVT_HALT_COOKIE_MAX 512

/* solo5_result_t */
#define SOLO5_R_OK 0
#define SOLO5_R_AGAIN 1
#define SOLO5_R_EINVAL 2
#define SOLO5_R_EUNSPEC 3
/* Put in every ret field before a call: a monitor that never wrote it
 * shows up as this, not as a plausible result. */
#define HVT_RET_UNSET 0x7e57

/* Argument structs: guest pointers are u64 GPAs, size_t is u64. */
struct hvt_hc_walltime {
	u64 nsecs; /* out */
};
struct hvt_hc_puts {
	u64 data;
	u64 len;
};
struct hvt_hc_poll {
	u64 timeout_nsecs; /* in, relative */
	u64 ready_set;	   /* out: bit i = manifest entry i readable */
	int ret;	   /* out: solo5-hvt puts the count of ready handles here */
};
struct hvt_hc_block { /* BLOCK_WRITE and BLOCK_READ */
	u64 handle;
	u64 offset;
	u64 data;
	u64 len;
	int ret;
};
struct hvt_hc_net { /* NET_WRITE and NET_READ (len is in/out for reads) */
	u64 handle;
	u64 data;
	u64 len;
	int ret;
};
struct hvt_hc_halt {
	u64 cookie; /* GPA of HVT_HALT_COOKIE_MAX bytes, or 0 */
	int exit_status;
};
_Static_assert(sizeof(struct hvt_hc_poll) == 24, "poll args");
_Static_assert(sizeof(struct hvt_hc_block) == 40 && offsetof(struct hvt_hc_block, ret) == 32,
	       "block args");
_Static_assert(sizeof(struct hvt_hc_net) == 32 && offsetof(struct hvt_hc_net, ret) == 24,
	       "net args");
_Static_assert(sizeof(struct hvt_hc_halt) == 16, "halt args");

/* One hypercall: a 32-bit OUT of the argument's GPA to 0x500 + nr.  The
 * "memory" clobber makes the compiler store the struct before and reload
 * it after. */
static inline void hvt_hypercall(unsigned nr, volatile void *arg)
{
	__asm__ volatile("outl %0, %1"
			 :
			 : "a"((u32)(uintptr_t)arg), "d"((u16)(HVT_PIO_BASE + nr))
			 : "memory");
}

/* The same with any 32-bit value as the "address" (for bad-pointer tests). */
static inline void hvt_hypercall_raw(unsigned nr, u32 gpa)
{
	__asm__ volatile("outl %0, %1" : : "a"(gpa), "d"((u16)(HVT_PIO_BASE + nr)) : "memory");
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* ---- runtime (runtime.c) ---- */
extern const struct hvt_boot_info *hvt_bi;
/* Registers at entry, saved by start.S. */
extern u64 hvt_entry_rdi, hvt_entry_rsp, hvt_entry_rflags;

void hvt_puts(const char *s, u64 len);
/* kprintf (klib.h) formats into a buffer and PUTS it: one hypercall per
 * call unless the line is long. */
u64 hvt_walltime(void);
/* Returns the call's ret (solo5-hvt: number of ready handles). */
int hvt_poll(u64 timeout_ns, u64 *ready_set);
int hvt_block_write(u64 handle, u64 offset, const void *buf, u64 len);
int hvt_block_read(u64 handle, u64 offset, void *buf, u64 len);
int hvt_net_write(u64 handle, const void *buf, u64 len);
int hvt_net_read(u64 handle, void *buf, u64 *len); /* *len: in size, out frame length */
__attribute__((noreturn)) void hvt_halt(int status, const void *cookie);

/* The monitor's copy of the manifest (boot info), or NULL. */
const struct hvt_mft *hvt_mft(void);
/* Handle (manifest index) of the entry NAME of TYPE, or -1; *e = entry. */
int hvt_mft_find(const char *name, u32 type, const struct hvt_mft_entry **e);
const char *hvt_result_name(int r); /* "OK", "AGAIN", "EINVAL", ... */

int cmdline_has(const char *word); /* word appears as a whole word */

/* Bump allocation from kernel_end (page-aligned start); never freed.
 * NULL if it would reach the last MiB (the stack). */
void *hvt_alloc(u64 size);

/* Each guest's entry; its return value is the halt status. */
int main(const struct hvt_boot_info *bi);

#endif
