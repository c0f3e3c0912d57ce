/* A state file's records checked before a restore builds anything from
 * them (see monitor/snap_records.h).  A state file is untrusted input: it
 * may come from shared storage, another host or an attacker who can
 * recompute its CRC; every record passes the checks a user's
 * configuration or an ELF's notes do. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "monitor/legacy.h"
#include "monitor/snap_records.h"
#include "vcpu/vcpu.h"
#include "virtio/virtio.h"

size_t snap_conf_squeeze(const uint8_t *in, size_t len, uint8_t *out)
{
	size_t o = 0, i = 0;
	while (i < len) {
		size_t lit = i;
		while (lit < len && !(in[lit] == 0 && lit + 8 <= len && !memcmp(in + lit, "\0\0\0\0\0\0\0\0", 8)))
			lit++;
		size_t zero = lit;
		while (zero < len && in[zero] == 0)
			zero++;
		uint32_t hdr[2] = {(uint32_t)(lit - i), (uint32_t)(zero - lit)};
		memcpy(out + o, hdr, sizeof(hdr));
		memcpy(out + o + sizeof(hdr), in + i, lit - i);
		o += sizeof(hdr) + (lit - i);
		i = zero;
	}
	return o;
}

int snap_conf_unsqueeze(const uint8_t *in, size_t inlen, uint8_t *out, size_t len)
{
	size_t i = 0, o = 0;
	while (i < inlen) {
		uint32_t hdr[2];
		if (inlen - i < sizeof(hdr))
			return -EINVAL;
		memcpy(hdr, in + i, sizeof(hdr));
		i += sizeof(hdr);
		if (hdr[0] > inlen - i || hdr[0] > len - o || hdr[1] > len - o - hdr[0])
			return -EINVAL;
		memcpy(out + o, in + i, hdr[0]);
		memset(out + o + hdr[0], 0, hdr[1]);
		i += hdr[0];
		o += hdr[0] + hdr[1];
	}
	return o == len ? 0 : -EINVAL;
}

uint64_t snap_cpuid_sig(const struct kvm_cpuid2 *c)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	const uint8_t *p = (const uint8_t *)c->entries;
	for (size_t i = 0; i < c->nent * sizeof(c->entries[0]); i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

size_t snap_cpuid_bytes(const struct kvm_cpuid2 *c)
{
	return sizeof(*c) + c->nent * sizeof(c->entries[0]);
}

int snap_err(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

int snap_check_hvt(const struct hvt_record *h, uint64_t cfg_mem_size, struct hvt_manifest *out,
		   char *err, size_t errlen)
{
	/* The manifest passes the checks an ELF's note does: through the
	 * same parser, from its wire form. */
	static uint8_t desc[sizeof(struct hvt_mft) + sizeof(h->mft.e)];
	struct hvt_mft hdr = {.version = HVT_MFT_VERSION, .entries = h->mft.nr};
	size_t n = h->mft.nr <= HVT_MFT_MAX_ENTRIES ? h->mft.nr : 0;
	memcpy(desc, &hdr, sizeof(hdr));
	memcpy(desc + sizeof(hdr), h->mft.e, n * sizeof(h->mft.e[0]));
	int r = hvt_parse_manifest(desc, sizeof(hdr) + n * sizeof(h->mft.e[0]), out, err, errlen);
	if (r)
		return r;
	/* The layout hvt_setup() makes: RAM rounded down to 2 MiB, the
	 * kernel page-aligned with a page of stack above it. */
	uint64_t mem_size = cfg_mem_size & ~(HVT_PAGE - 1);
	if (h->mem_size != mem_size || mem_size > HVT_MAX_MEM || h->kernel_end % 4096 ||
	    h->kernel_end < HVT_LOW_UNMAPPED || h->kernel_end + 4096 > mem_size) {
		snprintf(err, errlen,
			 "memory size 0x%llx and kernel end 0x%llx are not an hvt layout of %llu MiB",
			 (unsigned long long)h->mem_size, (unsigned long long)h->kernel_end,
			 (unsigned long long)(cfg_mem_size >> 20));
		return -EINVAL;
	}
	return 0;
}

struct checker {
	const struct snap_reader *rd;
	const char *name;
	char *err;
	size_t errlen;
};

static int bad(struct checker *c, uint32_t tag, uint32_t index, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int bad(struct checker *c, uint32_t tag, uint32_t index, const char *fmt, ...)
{
	char why[384], t[5];
	for (int i = 0; i < 4; i++) {
		char ch = (char)(tag >> (8 * i));
		t[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
	}
	t[4] = '\0';
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s: section %s %u: %s", c->name, t, index, why);
	return -EINVAL;
}

/* Section (tag, index) present with exactly len bytes (any length when
 * len is 0); its data or NULL with err set. */
static const void *need(struct checker *c, uint32_t tag, uint32_t index, uint64_t len)
{
	uint64_t have;
	const void *p = snap_r_find(c->rd, tag, index, &have);
	char t[5] = {(char)tag, (char)(tag >> 8), (char)(tag >> 16), (char)(tag >> 24), 0};
	if (!p)
		snprintf(c->err, c->errlen, "%s: section %s %u is missing", c->name, t, index);
	else if (len && have != len)
		snprintf(c->err, c->errlen,
			 "%s: section %s %u is of another size (%llu bytes, this ember's record is "
			 "%llu: another ember version?)",
			 c->name, t, index, (unsigned long long)have, (unsigned long long)len);
	return p && (!len || have == len) ? p : NULL;
}

/* CONF rebuilt into cfg, matching the header's vCPUs and memory. */
static int check_conf(struct checker *c, struct vm_config *cfg)
{
	static struct vm_config raw; /* large; one thread restores */
	char why[CFG_ERR_MAX];
	uint64_t len;
	const void *p = need(c, TAG_CONF, 0, 0);
	if (!p)
		return -EINVAL;
	snap_r_find(c->rd, TAG_CONF, 0, &len);
	if (snap_conf_unsqueeze(p, len, (uint8_t *)&raw, sizeof(raw)))
		return bad(c, TAG_CONF, 0, "not a configuration of this ember's layout");
	/* Rebuilt through the user's setters: what the snapshot says is
	 * only what a user could have said. */
	if (cfg_import(&raw, cfg, why, sizeof(why)))
		return bad(c, TAG_CONF, 0, "%s", why);
	const struct snap_header *h = &c->rd->h;
	if (h->nr_vcpus != cfg->vcpus || h->mem_size != cfg->mem_size) {
		snprintf(c->err, c->errlen,
			 "%s: the snapshot has %u vCPUs and %llu MiB, its configuration says %u "
			 "and %llu",
			 c->name, h->nr_vcpus, (unsigned long long)(h->mem_size >> 20), cfg->vcpus,
			 (unsigned long long)(cfg->mem_size >> 20));
		return -EINVAL;
	}
	return 0;
}

/* CPID whole and matching the header's signature. */
static int check_cpid(struct checker *c)
{
	uint64_t len;
	const struct kvm_cpuid2 *cpuid = need(c, TAG_CPID, 0, 0);
	snap_r_find(c->rd, TAG_CPID, 0, &len);
	if (!cpuid || len < sizeof(*cpuid) || len != snap_cpuid_bytes(cpuid) ||
	    snap_cpuid_sig(cpuid) != c->rd->h.cpuid_sig)
		return cpuid ? bad(c, TAG_CPID, 0, "the CPUID section is missing or damaged")
			     : -EINVAL;
	return 0;
}

int snap_check_setup(const struct snap_reader *rd, const char *name, struct vm_config *cfg,
		     char *err, size_t errlen)
{
	struct checker c = {rd, name, err, errlen};
	return check_conf(&c, cfg) ?: check_cpid(&c);
}

int snap_check_records(const struct snap_reader *rd, const char *name, struct vm_config *cfg,
		       char *err, size_t errlen)
{
	struct checker c = {rd, name, err, errlen};
	char why[CFG_ERR_MAX];
	uint64_t len;
	if (check_conf(&c, cfg))
		return -EINVAL;
	const struct snap_header *h = &rd->h;
	if (!need(&c, TAG_KVMS, 0, sizeof(struct vm_kvm_state)) ||
	    !need(&c, TAG_UART, 0, sizeof(struct uart_state)) ||
	    !need(&c, TAG_MEMH, 0, sizeof(uint64_t)))
		return -EINVAL;
	for (unsigned i = 0; i < cfg->vcpus; i++)
		if (!need(&c, TAG_VCPU, i, sizeof(struct vcpu_state)))
			return -EINVAL;
	if (check_cpid(&c))
		return -EINVAL;
	if (snap_r_find(rd, TAG_MEMF, 0, &len) && len != sizeof(struct memfile_id))
		return bad(&c, TAG_MEMF, 0, "%llu bytes, not %zu", (unsigned long long)len,
			   sizeof(struct memfile_id));
	const struct hvt_record *hvt = snap_r_find(rd, TAG_HVTG, 0, &len);
	if (hvt) {
		static struct hvt_manifest mft;
		if (len != sizeof(*hvt))
			return bad(&c, TAG_HVTG, 0, "%llu bytes, not %zu", (unsigned long long)len,
				   sizeof(*hvt));
		if (snap_check_hvt(hvt, cfg->mem_size, &mft, why, sizeof(why)))
			return bad(&c, TAG_HVTG, 0, "%s", why);
	}
	/* As many virtio devices as the configuration makes (an hvt guest's
	 * block and net devices are its manifest's, not virtio). */
	unsigned devs = hvt ? 0
			    : cfg->nr_blocks + cfg->nr_nets + cfg->vsock.enabled +
				  cfg->rng.enabled;
	for (unsigned i = 0; i < devs; i++) {
		if (!need(&c, TAG_VDEV, i, sizeof(struct virtio_dev_state)))
			return -EINVAL;
		if (snap_r_find(rd, TAG_VDVX, i, &len) && len > SNAP_DEV_RECORD_MAX)
			return bad(&c, TAG_VDVX, i, "%llu bytes, more than any device's record",
				   (unsigned long long)len);
	}
	/* Nothing else: a section of another kind or index is not ember's. */
	for (uint32_t i = 0; i < h->nr_sections; i++) {
		const struct snap_section *s = &rd->sec[i];
		bool one = s->index == 0;
		bool ok = ((s->tag == TAG_CONF || s->tag == TAG_CPID || s->tag == TAG_KVMS ||
			    s->tag == TAG_UART || s->tag == TAG_MEMF || s->tag == TAG_MEMH) &&
			   one) ||
			  (s->tag == TAG_HVTG && one) || (s->tag == TAG_VCPU && s->index < cfg->vcpus) ||
			  ((s->tag == TAG_VDEV || s->tag == TAG_VDVX) && s->index < devs);
		if (!ok)
			return bad(&c, s->tag, s->index,
				   "not a section this configuration's snapshot holds");
	}
	return 0;
}
