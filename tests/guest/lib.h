/* The test guests' small library: serial output, exit, PVH start info,
 * the command line, ring-3 calls; with klib.h, the C library and printf
 * they share with the hvt guests.  Freestanding, integer-only: guest
 * ring-0 code is emulated on this host and the emulator has no SSE/x87. */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include "klib.h"

#define PORT_COM1 0x3f8
#define PORT_EXIT 0xf4 /* outb S: the VM stops, the monitor exits with S */
#define PORT_I8042_CMD 0x64

/* Status a guest exits with after an unexpected CPU exception. */
#define EXIT_EXCEPTION 99

/* PVH (xen/include/public/arch-x86/hvm/start_info.h) */
#define HVM_START_MAGIC 0x336ec578
struct hvm_start_info {
	u32 magic;
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};

struct hvm_memmap_entry {
	u64 addr;
	u64 size;
	u32 type; /* 1 RAM, 2 reserved */
	u32 reserved;
};
#define MEMMAP_RAM 1

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* COM1 output.  No LSR polling: the monitor's LSR always says ready, and
 * each poll would be one more exit.  print() adds no newline. */
void serial_putc(char c);
void print(const char *s);
void kvprintf(const char *fmt, va_list ap); /* kprintf: klib.h */

__attribute__((noreturn)) void exit_guest(int status); /* port 0xf4 */
__attribute__((noreturn)) void reset_guest(void);      /* i8042 0xFE */

/* NULL if the monitor's start info is missing or has a bad magic. */
const struct hvm_start_info *start_info(void);
/* cmdline(), cmdline_arg(), parse_u64(): klib.h */

/* Identity-map the 2 MiB page holding pa (0-4 GiB is mapped at boot);
 * 0 on success, -1 when out of page-table pages. */
int map_2m(u64 pa);

/* fn(arg) in ring 3, where code runs natively on this host.  fn must not do
 * port I/O or anything privileged.  BSP only, not reentrant. */
long user_call(long (*fn)(void *), void *arg);

struct ram_region {
	u64 start, end; /* [start, end) */
};

/* Free RAM: the PVH memory map's RAM entries clipped to [lo, hi), minus
 * what is in use (the ABI's boot data areas 0-0xc000 and 0x20000-0x20800,
 * the start info, memory map, module list and command line, each rounded
 * out to pages, and this image).  Each region is rounded inward to align
 * (a power of two); one that splits appends its remnants and keeps an
 * empty slot.  Writes at most max regions to out, dropping the rest, and
 * returns how many it wrote: 0 without start info or a memory map. */
unsigned free_ram(struct ram_region *out, unsigned max, u64 align, u64 lo, u64 hi);

extern char __image_start[], __image_end[]; /* guest.ld */

int main(void);

#endif
