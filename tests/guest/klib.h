/* The test guests' freestanding C library (klib.c), shared by the PVH
 * guests (lib.c) and the hvt runtime (hvt/runtime.c): mem and str
 * functions, number parsing, the command line's key=value lookup and the
 * printf formatter, which hands its output to the runtime's own function.
 * Integer-only, no state: guest ring-0 code is emulated on some hosts
 * (~200 ns an instruction) and that emulator has no SSE/x87. */
#ifndef GUEST_KLIB_H
#define GUEST_KLIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

/* What the compiler may call even with -fno-builtin, and a little more. */
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int memcmp(const void *a, const void *b, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);

/* Decimal or 0x-hex up to a space or NUL; 0 on success, -1 if malformed. */
int parse_u64(const char *s, u64 *out);

/* The command line, "" when there is none: each runtime's own. */
const char *cmdline(void);
/* Value of `key=` in the command line (a pointer into it, ending at a space
 * or NUL), or NULL. */
const char *cmdline_arg(const char *key);

/* Where the formatter's output goes: n bytes at s, in order, in pieces (a
 * run of literal text, a whole number or string). */
typedef void fmt_out_fn(void *ctx, const char *s, size_t n);
/* %s %c %d %u %x %p %%, an optional '0' flag and width, 'l' for long.  An
 * unknown conversion (or a lone '%' at the end) ends the output there. */
void fmt_vprintf(fmt_out_fn *out, void *ctx, const char *fmt, va_list ap);
/* Each runtime's, on fmt_vprintf. */
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
