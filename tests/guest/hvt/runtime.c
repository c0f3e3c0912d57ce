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

/* fmt_vprintf's output: flushed only when full and more is to come. */
static void out_write(void *ctx, const char *s, size_t n)
{
	struct outbuf *o = ctx;

	for (;;) {
		size_t room = sizeof(o->b) - o->n, k = n < room ? n : room;
		char *d = o->b + o->n;

		o->n += (unsigned)k;
		n -= k;
		while (k--)
			*d++ = *s++;
		if (!n)
			return;
		out_flush(o);
	}
}

void kprintf(const char *fmt, ...)
{
	struct outbuf o;
	va_list ap;

	o.n = 0;
	va_start(ap, fmt);
	fmt_vprintf(out_write, &o, fmt, ap);
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
