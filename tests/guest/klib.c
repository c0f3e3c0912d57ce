/* The test guests' freestanding C library; see klib.h.  Linked into every
 * PVH guest (with lib.c) and every hvt guest (with hvt/runtime.c).  Ring-0
 * code here is emulated on some hosts (~200 ns an instruction), so it
 * stays short and simple. */
#include "klib.h"

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

/* ---- numbers and the command line ---- */

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

/* ---- printf ---- */

/* The output goes out a run of literal text, or one conversion, at a time;
 * numbers are built right to left in a buffer first. */
void fmt_vprintf(fmt_out_fn *out, void *ctx, const char *fmt, va_list ap)
{
	for (;;) {
		const char *text = fmt;
		char c, pad = ' ', buf[24], *end = buf + sizeof(buf), *p = end;
		int width = 0, lng = 0;
		unsigned base = 10;
		u64 v;

		while ((c = *fmt) && c != '%')
			fmt++;
		if (fmt != text)
			out(ctx, text, (size_t)(fmt - text));
		if (!c)
			return;
		if (*++fmt == '0')
			pad = *fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l')
			lng = 1, fmt++;
		switch (*fmt++) {
		case 'd': {
			long d = lng ? va_arg(ap, long) : va_arg(ap, int);
			if (d < 0) {
				out(ctx, "-", 1);
				d = -d;
			}
			v = (u64)d;
			break;
		}
		case 'u':
			v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			break;
		case 'x':
			v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			base = 16;
			break;
		case 'p':
			out(ctx, "0x", 2);
			v = (u64)(uintptr_t)va_arg(ap, void *);
			base = 16;
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			out(ctx, s, strlen(s));
			continue;
		}
		case 'c':
			c = (char)va_arg(ap, int);
			out(ctx, &c, 1);
			continue;
		case '%':
			out(ctx, "%", 1);
			continue;
		default: /* also the NUL after a lone '%' */
			return;
		}
		do {
			*--p = "0123456789abcdef"[v % base];
			v /= base;
		} while (v);
		for (width -= (int)(end - p); width > 0; width--) /* pad goes after a '-' */
			out(ctx, &pad, 1);
		out(ctx, p, (size_t)(end - p));
	}
}
