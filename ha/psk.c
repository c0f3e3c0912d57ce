/* Pre-shared key files for TLS 1.3 external PSKs (ha/tls_relay.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ha/tls_relay.h"

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch |= 0x20; /* ASCII lower case */
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The one key line, [s, e) with blanks trimmed, into psk. */
static int parse_line(const char *s, const char *e, struct ha_psk *psk, char *err, size_t len)
{
	const char *colon = memchr(s, ':', (size_t)(e - s)), *hex = colon ? colon + 1 : s;
	size_t idlen = colon ? (size_t)(colon - s) : strlen(HA_PSK_DEFAULT_ID);
	if (colon && (idlen == 0 || idlen > HA_PSK_ID_MAX))
		return snprintf(err, len, "the identity before ':' must be 1 to %d characters",
				HA_PSK_ID_MAX),
		       -EINVAL;
	for (size_t i = 0; colon && i < idlen; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return snprintf(err, len,
					"the identity holds a space or a control "
					"character"),
			       -EINVAL;
	memcpy(psk->identity, colon ? s : HA_PSK_DEFAULT_ID, idlen);
	psk->identity[idlen] = '\0';
	size_t digits = (size_t)(e - hex);
	if (digits % 2 || digits < 2 * HA_PSK_MIN || digits > 2 * HA_PSK_MAX)
		return snprintf(err, len,
				"the key must be %d to %d hex digits, an even number (%zu given; "
				"make one with `openssl rand -hex 32`)",
				2 * HA_PSK_MIN, 2 * HA_PSK_MAX, digits),
		       -EINVAL;
	for (size_t i = 0; i < digits; i += 2) {
		int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
		if (hi < 0 || lo < 0)
			return snprintf(err, len,
					"the key holds a character that is not a hex "
					"digit"),
			       -EINVAL;
		psk->key[i / 2] = (unsigned char)(hi << 4 | lo);
	}
	psk->key_len = digits / 2;
	return 0;
}

int ha_psk_parse(const char *text, size_t len, struct ha_psk *psk, char *err, size_t errlen)
{
	const char *p = text, *end = text + len;
	bool found = false;
	memset(psk, 0, sizeof(*psk));
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
		const char *s = p, *e = le;
		p = nl ? nl + 1 : end;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		if (s == e || *s == '#')
			continue;
		if (found)
			return snprintf(err, errlen, "more than one key line (one key a file)"),
			       -EINVAL;
		if (memchr(s, '\0', (size_t)(e - s)))
			return snprintf(err, errlen, "a NUL byte in the key line"), -EINVAL;
		int r = parse_line(s, e, psk, err, errlen);
		if (r)
			return r;
		found = true;
	}
	if (!found)
		return snprintf(err, errlen, "no key line ([IDENTITY:]HEX)"), -EINVAL;
	return 0;
}

int ha_psk_load(const char *path, struct ha_psk *psk, char *err, size_t errlen)
{
	char buf[4096], why[256];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return snprintf(err, errlen, "--psk-file %s: %s", path, strerror(errno)), -errno;
	ssize_t n = fstat(fd, &st) ? -1 : read(fd, buf, sizeof(buf));
	int e = errno;
	close(fd);
	if (n < 0)
		return snprintf(err, errlen, "--psk-file %s: %s", path, strerror(e)), -e;
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077))
		return snprintf(err, errlen, "--psk-file %s: %s (chmod 600 it)", path,
				S_ISREG(st.st_mode)
				    ? "readable or writable by others than its owner"
				    : "not a regular file"),
		       -EPERM;
	if ((size_t)n == sizeof(buf))
		return snprintf(err, errlen, "--psk-file %s: too long for a key file", path),
		       -EFBIG;
	int r = ha_psk_parse(buf, (size_t)n, psk, why, sizeof(why));
	memset(buf, 0, sizeof(buf));
	if (r)
		snprintf(err, errlen, "--psk-file %s: %s", path, why);
	return r;
}
