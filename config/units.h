/* Private to config/: the number, size and duration helpers behind
 * cfg_parse_size() and cfg_parse_duration(), shared with config.c's
 * setters and messages. */
#ifndef EMBER_CONFIG_UNITS_H
#define EMBER_CONFIG_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool units_is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* ASCII only: tolower() would follow the locale. */
static inline char units_lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Leading decimal digits of *s into *n, advancing *s.  Returns how many
 * there were; *overflow is set (not cleared) when they exceed 64 bits. */
size_t units_digits(const char **s, uint64_t *n, bool *overflow);

/* cfg_parse_size() without refusing 0, so that a setter can say "below
 * the minimum" for "0M". */
int units_parse_size(const char *s, uint64_t *bytes);

/* "64M" rather than 67108864 in messages, where that is exact. */
void units_fmt_size(char *buf, size_t len, uint64_t b);

#endif
