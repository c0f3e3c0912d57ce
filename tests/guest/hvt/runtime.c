/* The hvt test guests' runtime; see hvt_guest.h.  Ring-0 code here is
 * emulated on some hosts (~200 ns an instruction): loops stay short and
 * output goes out a line at a time, one PUTS each. */
#include "hvt_guest.h"

const struct hvt_boot_info *hvt_bi;

/* solo5-hvt skips PT_LOAD segments with no file contents, so the RW
 * segment (.data + .bss) keeps at least this initialised word. */
volatile u32 hvt_rw_segment_marker = 0x45564854;

static u64 heap_next;

void hvt_start(const struct hvt_boot_info *bi);
void hvt_start(const struct hvt_boot_info *bi)
{
	hvt_bi = bi;
	hvt_halt(main(bi), NULL);
}

/* ---- hypercalls ---- */

void hvt_puts(const char *s, u64 len)
{
	struct hvt_hc_puts a = {.data = (u64)(uintptr_t)s, .len = len};

	hvt_hypercall(HVT_PUTS, &a);
}

u64 hvt_walltime(void)
{
	struct hvt_hc_walltime a = {0};

	hvt_hypercall(HVT_WALLTIME, &a);
	return a.nsecs;
}

int hvt_poll(u64 timeout_ns, u64 *ready_set)
{
	struct hvt_hc_poll a = {.timeout_nsecs = timeout_ns, .ret = HVT_RET_UNSET};

	hvt_hypercall(HVT_POLL, &a);
	if (ready_set)
		*ready_set = a.ready_set;
	return a.ret;
}

static int block_call(unsigned nr, u64 handle, u64 offset, u64 data, u64 len)
{
	struct hvt_hc_block a = {
	    .handle = handle, .offset = offset, .data = data, .len = len, .ret = HVT_RET_UNSET};

	hvt_hypercall(nr, &a);
	return a.ret;
}

int hvt_block_write(u64 handle, u64 offset, const void *buf, u64 len)
{
	return block_call(HVT_BLOCK_WRITE, handle, offset, (u64)(uintptr_t)buf, len);
}

int hvt_block_read(u64 handle, u64 offset, void *buf, u64 len)
{
	return block_call(HVT_BLOCK_READ, handle, offset, (u64)(uintptr_t)buf, len);
}

int hvt_net_write(u64 handle, const void *buf, u64 len)
{
	struct hvt_hc_net a = {
	    .handle = handle, .data = (u64)(uintptr_t)buf, .len = len, .ret = HVT_RET_UNSET};

	hvt_hypercall(HVT_NET_WRITE, &a);
	return a.ret;
}

int hvt_net_read(u64 handle, void *buf, u64 *len)
{
	struct hvt_hc_net a = {
	    .handle = handle, .data = (u64)(uintptr_t)buf, .len = *len, .ret = HVT_RET_UNSET};

	hvt_hypercall(HVT_NET_READ, &a);
	*len = a.len;
	return a.ret;
}

void hvt_halt(int status, const void *cookie)
{
	struct hvt_hc_halt a = {.cookie = (u64)(uintptr_t)cookie, .exit_status = status};

	hvt_hypercall(HVT_HALT, &a);
	for (;;) /* only if the monitor let the guest go on */
		__asm__ volatile("cli; hlt");
}

const char *hvt_result_name(int r)
{
	switch (r) {
	case SOLO5_R_OK:
		return "OK";
	case SOLO5_R_AGAIN:
		return "AGAIN";
	case SOLO5_R_EINVAL:
		return "EINVAL";
	case SOLO5_R_EUNSPEC:
		return "EUNSPEC";
	case HVT_RET_UNSET:
		return "UNSET";
	default:
		return "?";
	}
}

/* ---- output ---- */

struct outbuf {
	char b[256];
	unsigned n;
};

static void out_flush(struct outbuf *o)
{
	if (o->n)
		hvt_puts(o->b, o->n);
	o->n = 0;
}

static void out_c(struct outbuf *o, char c)
{
	if (o->n == sizeof(o->b))
		out_flush(o);
	o->b[o->n++] = c;
}

static void out_s(struct outbuf *o, const char *s)
{
	while (*s)
		out_c(o, *s++);
}

static void out_num(struct outbuf *o, u64 v, unsigned base, int width, char pad)
{
	char buf[24];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (width-- > n)
		out_c(o, pad);
	while (n)
		out_c(o, buf[--n]);
}

void kprintf(const char *fmt, ...)
{
	struct outbuf o;
	va_list ap;

	o.n = 0;
	va_start(ap, fmt);
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			out_c(&o, *fmt);
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
				out_c(&o, '-');
				v = -v;
			}
			out_num(&o, (u64)v, 10, width, pad);
			break;
		}
		case 'u':
			out_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10,
				width, pad);
			break;
		case 'x':
			out_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16,
				width, pad);
			break;
		case 'p':
			out_s(&o, "0x");
			out_num(&o, (u64)(uintptr_t)va_arg(ap, void *), 16, width, pad);
			break;
		case 's':
			out_s(&o, va_arg(ap, const char *));
			break;
		case 'c':
			out_c(&o, (char)va_arg(ap, int));
			break;
		case '%':
			out_c(&o, '%');
			break;
		default: /* also the NUL after a lone '%' */
			goto done;
		}
	}
done:
	va_end(ap);
	out_flush(&o);
}

/* ---- manifest ---- */

const struct hvt_mft *hvt_mft(void)
{
	return hvt_bi && hvt_bi->mft ? (const struct hvt_mft *)(uintptr_t)hvt_bi->mft : NULL;
}

int hvt_mft_find(const char *name, u32 type, const struct hvt_mft_entry **e)
{
	const struct hvt_mft *m = hvt_mft();

	if (!m)
		return -1;
	for (u32 i = 1; i < m->entries && i < HVT_MFT_MAX_ENTRIES; i++) {
		if (m->e[i].type == type && strcmp(m->e[i].name, name) == 0) {
			if (e)
				*e = &m->e[i];
			return (int)i;
		}
	}
	return -1;
}

/* ---- command line ---- */

const char *cmdline(void)
{
	return hvt_bi && hvt_bi->cmdline ? (const char *)(uintptr_t)hvt_bi->cmdline : "";
}

/* Length of the word at p (up to a space or NUL). */
static size_t word_len(const char *p)
{
	size_t n = 0;

	while (p[n] && p[n] != ' ')
		n++;
	return n;
}

int cmdline_has(const char *word)
{
	size_t wlen = strlen(word);

	for (const char *p = cmdline(); *p;) {
		while (*p == ' ')
			p++;
		size_t n = word_len(p);
		if (n == wlen && memcmp(p, word, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

const char *cmdline_arg(const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = cmdline(); *p;) {
		while (*p == ' ')
			p++;
		size_t n = word_len(p);
		if (n > klen && memcmp(p, key, klen) == 0 && p[klen] == '=')
			return p + klen + 1;
		p += n;
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
			d = (unsigned)(*s - '0');
		else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (unsigned)((*s | 0x20) - 'a' + 10);
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

/* ---- memory ---- */

void *hvt_alloc(u64 size)
{
	if (!heap_next)
		heap_next = (hvt_bi->kernel_end + 0xfff) & ~0xfffULL;
	u64 p = heap_next, end = p + ((size + 0xfff) & ~0xfffULL);
	if (end < p || end > hvt_bi->mem_size - (1ULL << 20))
		return NULL;
	heap_next = end;
	return (void *)(uintptr_t)p;
}

/* ---- what the compiler may call even with -fno-builtin ---- */

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (u8)*a - (u8)*b;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
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
