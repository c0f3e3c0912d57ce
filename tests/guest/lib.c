/* The test guests' library; see lib.h.  Ring-0 code here is emulated on
 * this host (~200 ns an instruction), so it stays short and simple. */
#include "lib.h"

/* start.S */
extern u64 start_info_pa;
extern u64 gdt[];
extern u8 tss[];
extern u64 pml4[];
extern const u64 exc_table[32];
long run_user(long (*fn)(void *), void *arg, void *stack_top);

/* ---- serial and formatting ---- */

void serial_putc(char c)
{
	outb(PORT_COM1, (u8)c);
}

void print(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void serial_write(void *ctx, const char *s, size_t n)
{
	(void)ctx;
	while (n--)
		serial_putc(*s++);
}

void kvprintf(const char *fmt, va_list ap)
{
	fmt_vprintf(serial_write, NULL, fmt, ap);
}

void kprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
}

/* ---- leaving the VM ---- */

void exit_guest(int status)
{
	outb(PORT_EXIT, (u8)status);
	for (;;) /* only if the monitor ignored the port */
		__asm__ volatile("cli; hlt");
}

void reset_guest(void)
{
	outb(PORT_I8042_CMD, 0xfe);
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* ---- start info and command line ---- */

const struct hvm_start_info *start_info(void)
{
	const struct hvm_start_info *si = (const void *)start_info_pa;

	return si && si->magic == HVM_START_MAGIC ? si : NULL;
}

const char *cmdline(void)
{
	const struct hvm_start_info *si = start_info();

	return si && si->cmdline_paddr ? (const char *)si->cmdline_paddr : "";
}

/* ---- page tables ---- */

#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_PS 0x80ULL
#define PTE_ADDR 0x000ffffffffff000ULL

/* Tables for mappings above 4 GiB (map_2m): enough for a few GiB of RAM
 * there and a wild address or two. */
#define PT_POOL 8
static u64 pt_pool[PT_POOL][512] __attribute__((aligned(4096)));
static int pt_used;

static u64 *next_table(u64 *table, unsigned idx)
{
	if (!(table[idx] & PTE_P)) {
		if (pt_used == PT_POOL)
			return NULL;
		table[idx] = (u64)pt_pool[pt_used++] | PTE_P | PTE_RW | PTE_US;
	}
	return (u64 *)(table[idx] & PTE_ADDR);
}

int map_2m(u64 pa)
{
	u64 *pdpt = next_table(pml4, (pa >> 39) & 511);
	u64 *pd = pdpt ? next_table(pdpt, (pa >> 30) & 511) : NULL;

	if (!pd)
		return -1;
	/* Outside RAM this is MMIO to the monitor; the cache type does not
	 * matter to it, so all is write-back. */
	pd[(pa >> 21) & 511] = (pa & ~0x1fffffULL) | PTE_P | PTE_RW | PTE_US | PTE_PS;
	/* Only not-present entries changed: no flush needed architecturally,
	 * but a shadow MMU underneath is then certain to see them. */
	__asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");
	return 0;
}

/* ---- IDT, TSS, ring 3 ---- */

struct idt_gate {
	u16 off_lo;
	u16 sel;
	u8 ist;
	u8 type;
	u16 off_mid;
	u32 off_hi;
	u32 zero;
};

/* Exceptions only: the guests take no interrupts. */
static struct idt_gate idt[32] __attribute__((aligned(16)));
struct __attribute__((packed)) {
	u16 limit;
	u64 base;
} idt_ptr = {sizeof(idt) - 1, (u64)idt}; /* ap.S loads it on each AP */

static void set_gate(unsigned vec, u64 handler, u8 type)
{
	idt[vec] = (struct idt_gate){
	    .off_lo = (u16)handler,
	    .sel = 0x18, /* KERNEL_CS64 */
	    .type = type,
	    .off_mid = (u16)(handler >> 16),
	    .off_hi = (u32)(handler >> 32),
	};
}

static u8 user_stack[65536] __attribute__((aligned(16)));

long user_call(long (*fn)(void *), void *arg)
{
	return run_user(fn, arg, user_stack + sizeof(user_stack));
}

struct exc_frame {
	u64 vec, err, rip, cs, rflags, rsp, ss;
};

void exception_report(const struct exc_frame *f);
void exception_report(const struct exc_frame *f)
{
	u64 cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	kprintf("guest: exception %lu err=0x%lx rip=0x%lx cs=0x%lx rsp=0x%lx cr2=0x%lx\n", f->vec,
		f->err, f->rip, f->cs, f->rsp, cr2);
	exit_guest(EXIT_EXCEPTION);
}

/* Called by start.S before main. */
void guest_init(void);
void guest_init(void)
{
	for (unsigned v = 0; v < 32; v++)
		set_gate(v, exc_table[v], 0x8e); /* interrupt gate, DPL 0 */
	__asm__ volatile("lidt %0" : : "m"(idt_ptr));

	/* 64-bit available TSS descriptor, limit 103. */
	u64 base = (u64)tss;
	gdt[6] = 103 | (base & 0xffffff) << 16 | 0x89ULL << 40 | ((base >> 24) & 0xff) << 56;
	gdt[7] = base >> 32;
	__asm__ volatile("ltr %w0" : : "r"(0x30));
}
