/* Sizes ("64M") and durations ("2.5s"): the parsers behind cfg_parse_size()
 * and cfg_parse_duration(), and the helpers config.c shares with them. */
#include "config/units.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"

/* Leading decimal digits of *s into *n, advancing *s.  Returns how many
 * there were; *overflow is set (not cleared) when they exceed 64 bits.
 * Done by hand because strtoull also takes blanks, signs and "0x". */
size_t units_digits(const char **s, uint64_t *n, bool *overflow)
{
	const char *p = *s;

	*n = 0;
	for (; units_is_digit(*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (*n > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			*n = *n * 10 + d;
	}
	size_t len = (size_t)(p - *s);
	*s = p;
	return len;
}

/* cfg_parse_size without refusing 0, so that set_memory can say "below the
 * minimum" for "0M".  Fractions ("1.5G") are refused: write 1536M; an
 * exact integer is never rounded. */
int units_parse_size(const char *s, uint64_t *bytes)
{
	bool overflow = false;
	unsigned shift;
	uint64_t n;

	if (!units_digits(&s, &n, &overflow))
		return -EINVAL;
	switch (units_lower(*s)) {
	case '\0':
		shift = 20; /* bare number: MiB, as QEMU's -m */
		break;
	case 'b':
		shift = 0; /* "4096B": bytes, as QEMU */
		break;
	case 'k':
		shift = 10;
		break;
	case 'm':
		shift = 20;
		break;
	case 'g':
		shift = 30;
		break;
	case 't':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*s && units_lower(*s) != 'b') {
		s++;
		if (units_lower(*s) == 'i' && units_lower(s[1]) == 'b')
			s += 2;
		else if (units_lower(*s) == 'b')
			s++;
	} else if (*s) {
		s++;
	}
	if (*s)
		return -EINVAL;
	if (overflow || n > (UINT64_MAX >> shift))
		return -ERANGE;
	*bytes = n << shift;
	return 0;
}

int cfg_parse_size(const char *s, uint64_t *bytes)
{
	uint64_t b;
	int rc = units_parse_size(s, &b);

	if (rc)
		return rc;
	if (b == 0)
		return -EINVAL;
	*bytes = b;
	return 0;
}

/* Digits and '.' then "ms", "s" (the default) or "m".  The result must be
 * a whole number of milliseconds: "1.5ms" and "0.0001" are refused rather
 * than rounded.  Suffixes are lower case only, so "M" (mega? minutes?)
 * never has to be guessed. */
int cfg_parse_duration(const char *s, uint64_t *ms)
{
	static const uint64_t pow10[] = {1,	 10,	  100,	    1000,      10000,
					 100000, 1000000, 10000000, 100000000, 1000000000};
	bool overflow = false;
	uint64_t whole, frac = 0, mult;
	size_t nfrac = 0;

	if (!units_digits(&s, &whole, &overflow))
		return -EINVAL;
	if (*s == '.') {
		const char *f = ++s;

		if (!units_digits(&s, &frac, &overflow))
			return -EINVAL;
		/* Trailing zeros change nothing; more than 9 other digits are
		 * finer than 1 ms even in minutes. */
		nfrac = (size_t)(s - f);
		while (nfrac && f[nfrac - 1] == '0')
			nfrac--;
		if (nfrac >= sizeof(pow10) / sizeof(pow10[0]))
			return -EINVAL;
		frac = 0;
		for (size_t i = 0; i < nfrac; i++)
			frac = frac * 10 + (uint64_t)(f[i] - '0');
	}
	if (!strcmp(s, "ms"))
		mult = 1;
	else if (!strcmp(s, "s") || !*s)
		mult = 1000;
	else if (!strcmp(s, "m"))
		mult = 60000;
	else
		return -EINVAL;
	/* frac < 10^9 and mult <= 60000: no overflow here. */
	if (frac * mult % pow10[nfrac])
		return -EINVAL;
	if (overflow || whole > (UINT64_MAX - frac * mult / pow10[nfrac]) / mult)
		return -ERANGE;
	*ms = whole * mult + frac * mult / pow10[nfrac];
	return 0;
}

/* "64M" rather than 67108864 in messages, where that is exact. */
void units_fmt_size(char *buf, size_t len, uint64_t b)
{
	static const char units[] = "TGMK";

	for (unsigned i = 0; i < 4; i++) {
		unsigned shift = 40 - 10 * i;

		if (b && b % (1ULL << shift) == 0) {
			snprintf(buf, len, "%" PRIu64 "%c", b >> shift, units[i]);
			return;
		}
	}
	snprintf(buf, len, "%" PRIu64 " bytes", b);
}
