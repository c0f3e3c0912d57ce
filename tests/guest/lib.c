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

static void put_num(u64 v, unsigned base, int width, char pad)
{
	char buf[24];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (width-- > n)
		serial_putc(pad);
	while (n)
		serial_putc(buf[--n]);
}

/* %s %c %d %u %x %p %%, an optional '0' flag and width, 'l' ignored. */
void kvprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			serial_putc(*fmt);
			continue;
		}
		char pad = ' ';
		int width = 0, lng = 0;
		if (*++fmt == '0')
			pad = *fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l')
			lng = 1, fmt++;
		switch (*fmt) {
		case 'd': {
			long v = lng ? va_arg(ap, long) : va_arg(ap, int);
			if (v < 0) {
				serial_putc('-');
				v = -v;
			}
			put_num((u64)v, 10, width, pad);
			break;
		}
		case 'u':
			put_num(lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10, width,
				pad);
			break;
		case 'x':
			put_num(lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16, width,
				pad);
			break;
		case 'p':
			print("0x");
			put_num((u64)va_arg(ap, void *), 16, width, pad);
			break;
		case 's':
			print(va_arg(ap, const char *));
			break;
		case 'c':
			serial_putc((char)va_arg(ap, int));
			break;
		case '%':
			serial_putc('%');
			break;
		default: /* also the NUL after a lone '%' */
			return;
		}
	}
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

const char *cmdline_arg(const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = cmdline(); *p;) {
		while (*p == ' ')
			p++;
		size_t i = 0;
		while (i < klen && p[i] == key[i])
			i++;
		if (i == klen && p[i] == '=')
			return p + i + 1;
		while (*p && *p != ' ')
			p++;
	}
	return NULL;
}

int parse_u64(const char *s, u64 *out)
{
	unsigned base = 10;
	u64 v = 0;
	int digits = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s && *s != ' '; s++, digits++) {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (*s | 0x20) - 'a' + 10;
		else
			return -1;
		if (v > (~0ULL - d) / base)
			return -1; /* overflow */
		v = v * base + d;
	}
	if (!digits)
		return -1;
	*out = v;
	return 0;
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

/* ---- what the compiler may call even with -fno-builtin ---- */

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	u8 *d = dst;

	while (n--)
		*d++ = (u8)c;
	return dst;
}
