/* Solo5 notes and manifest: pure checks over bytes from the image. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "monitor/hvt/hvt.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

static const char *target_name(uint32_t t)
{
	static const char *const names[] = {"?", "hvt", "spt", "virtio", "muen", "genode", "xen"};
	return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

int hvt_check_abi(const struct hvt_notes *n, char *err, size_t errlen)
{
	if (n->target != HVT_ABI_TARGET)
		return ERR("a Solo5 %s unikernel (ABI target %u); ember runs hvt (target %u) "
			   "unikernels",
			   target_name(n->target), n->target, HVT_ABI_TARGET);
	if (n->version != HVT_ABI_VERSION)
		return ERR("a Solo5 hvt unikernel built for hvt ABI version %u; ember speaks "
			   "version %u (rebuild it with a matching Solo5)",
			   n->version, HVT_ABI_VERSION);
	if (!n->mft)
		return ERR("a Solo5 hvt unikernel without a manifest note (.note.solo5.manifest)");
	return 0;
}

int hvt_parse_manifest(const uint8_t *desc, size_t len, struct hvt_manifest *out, char *err,
		       size_t errlen)
{
	struct hvt_mft h;
	if (len < sizeof(h))
		return ERR("manifest: %zu bytes, too short for its header", len);
	memcpy(&h, desc, sizeof(h));
	if (h.version != HVT_MFT_VERSION)
		return ERR("manifest: version %u, ember reads version %u", h.version,
			   HVT_MFT_VERSION);
	if (h.entries == 0 || h.entries > HVT_MFT_MAX_ENTRIES)
		return ERR("manifest: %u entries (1..%d allowed)", h.entries, HVT_MFT_MAX_ENTRIES);
	if (len != sizeof(h) + (size_t)h.entries * sizeof(struct hvt_mft_entry))
		return ERR("manifest: %zu bytes do not hold %u entries of %zu bytes", len,
			   h.entries, sizeof(struct hvt_mft_entry));
	memset(out, 0, sizeof(*out));
	out->nr = h.entries;
	memcpy(out->e, desc + sizeof(h), (size_t)h.entries * sizeof(out->e[0]));
	if (out->e[0].type != HVT_MFT_RESERVED_FIRST)
		return ERR("manifest: entry 0 is not the reserved first entry");
	for (unsigned i = 1; i < out->nr; i++) {
		struct hvt_mft_entry *e = &out->e[i];
		if (!memchr(e->name, '\0', sizeof(e->name)))
			return ERR("manifest: entry %u: name is not terminated", i);
		if (!e->name[0])
			return ERR("manifest: entry %u: empty name", i);
		if (e->type != HVT_MFT_BLOCK && e->type != HVT_MFT_NET)
			return ERR("manifest: entry %u (%s): unknown device type %u", i, e->name,
				   e->type);
		for (unsigned j = 1; j < i; j++)
			if (strcmp(out->e[j].name, e->name) == 0)
				return ERR("manifest: device name '%s' appears twice", e->name);
		/* What the guest claims about attachment means nothing. */
		e->attached = 0;
		e->backing = 0;
	}
	return 0;
}
