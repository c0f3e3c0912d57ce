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

/* ---- free RAM ---- */

struct regions {
	struct ram_region *r;
	unsigned n, max;
	u64 align;
};

static void add_region(struct regions *s, u64 start, u64 end)
{
	start = (start + s->align - 1) & ~(s->align - 1);
	end &= ~(s->align - 1);
	if (start < end && s->n < s->max)
		s->r[s->n++] = (struct ram_region){start, end};
}

/* Removes [lo, hi) from every region, splitting where needed. */
static void exclude(struct regions *s, u64 lo, u64 hi)
{
	for (unsigned i = 0, n = s->n; i < n; i++) {
		struct ram_region r = s->r[i];
		if (hi <= r.start || lo >= r.end)
			continue;
		s->r[i].end = s->r[i].start; /* emptied; remnants appended */
		if (r.start < lo)
			add_region(s, r.start, lo);
		if (hi < r.end)
			add_region(s, hi, r.end);
	}
}

static void exclude_obj(struct regions *s, u64 pa, u64 len)
{
	exclude(s, pa & ~0xfffULL, (pa + len + 0xfff) & ~0xfffULL);
}

unsigned free_ram(struct ram_region *out, unsigned max, u64 align, u64 lo, u64 hi)
{
	const struct hvm_start_info *si = start_info();
	struct regions s = {out, 0, max, align};

	if (!si || !si->memmap_entries)
		return 0;
	const struct hvm_memmap_entry *mm = (const void *)si->memmap_paddr;
	for (u32 i = 0; i < si->memmap_entries; i++) {
		u64 start = mm[i].addr, end = mm[i].addr + mm[i].size;
		if (mm[i].type != MEMMAP_RAM)
			continue;
		add_region(&s, start < lo ? lo : start, end > hi ? hi : end);
	}
	exclude(&s, 0, 0xc000);
	exclude(&s, 0x20000, 0x20800);
	exclude_obj(&s, (u64)si, sizeof(*si));
	exclude_obj(&s, si->memmap_paddr, si->memmap_entries * sizeof(*mm));
	exclude_obj(&s, si->modlist_paddr, si->nr_modules * 32ULL);
	exclude_obj(&s, si->cmdline_paddr, strlen(cmdline()) + 1);
	exclude(&s, (u64)__image_start, (u64)__image_end);
	return s.n;
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
