/* A configuration from an untrusted source (a snapshot's CONF record, a
 * migration stream): rebuilt key by key through cfg_set(), the setters a
 * user's INI file and command line go through, so it meets exactly their
 * rules and limits.  Nothing of the record is used as it is: a field the
 * setters do not know is dropped, a value they refuse refuses the whole. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"

/* A string field must end inside its buffer. */
static bool terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

/* A bool read as its byte: a record may hold any value there, and
 * reading a bool that is neither 0 nor 1 is undefined. */
static int get_bool(const bool *b, bool *out)
{
	uint8_t v;
	memcpy(&v, b, 1);
	*out = v == 1;
	return v > 1 ? -EINVAL : 0;
}

struct importer {
	struct vm_config *out;
	char *err;
	size_t errlen;
};

/* One key through cfg_set, the reason prefixed with where it was. */
static int put(struct importer *im, const char *section, const char *key, const char *value)
{
	char why[CFG_ERR_MAX];
	if (!cfg_set(im->out, section, key, value, why, sizeof(why)))
		return 0;
	snprintf(im->err, im->errlen, "[%s] %s: %s", section, key, why);
	return -EINVAL;
}

static int put_u64(struct importer *im, const char *section, const char *key, const char *fmt,
		   uint64_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), fmt, v);
	return put(im, section, key, buf);
}

static int put_rate(struct importer *im, const char *section, const char *prefix,
		    const struct cfg_rate *r)
{
	static const char *const names[] = {"bandwidth_size", "bandwidth_burst", "bandwidth_refill",
					    "ops_size",	      "ops_burst",	 "ops_refill"};
	const uint64_t v[] = {r->bw_size,  r->bw_burst,	 r->bw_refill_ms,
			      r->ops_size, r->ops_burst, r->ops_refill_ms};
	char key[40];
	int rc = 0;
	for (int i = 0; i < 6 && !rc; i++) {
		if (!v[i])
			continue; /* the default */
		snprintf(key, sizeof(key), "%s%s", prefix, names[i]);
		/* Refill times are durations ("250ms"); sizes and counts bare. */
		rc = put_u64(im, section, key, i % 3 == 2 ? "%" PRIu64 "ms" : "%" PRIu64, v[i]);
	}
	return rc;
}

static int fail(struct importer *im, const char *what)
{
	snprintf(im->err, im->errlen, "%s", what);
	return -EINVAL;
}

static int import_devices(struct importer *im, const struct vm_config *in)
{
	char sec[CFG_NAME_MAX + 8];
	bool b;
	int rc = 0;
	for (unsigned i = 0; i < in->nr_blocks && !rc; i++) {
		const struct cfg_block *d = &in->blocks[i];
		if (!terminated(d->name, sizeof(d->name)) || !terminated(d->path, sizeof(d->path)))
			return fail(im, "a block device's name or path is not terminated");
		snprintf(sec, sizeof(sec), "block.%s", d->name);
		rc = put(im, sec, "path", d->path);
		if (!rc && get_bool(&d->read_only, &b))
			return fail(im, "a block device's read_only is not a boolean");
		if (!rc && b)
			rc = put(im, sec, "read_only", "true");
		if (!rc && get_bool(&d->direct, &b))
			return fail(im, "a block device's direct is not a boolean");
		if (!rc && b)
			rc = put(im, sec, "direct", "true");
		if (!rc && d->sector_size)
			rc = put_u64(im, sec, "sector_size", "%" PRIu64, d->sector_size);
		if (!rc)
			rc = put_rate(im, sec, "", &d->rate);
	}
	for (unsigned i = 0; i < in->nr_nets && !rc; i++) {
		const struct cfg_net *n = &in->nets[i];
		if (!terminated(n->name, sizeof(n->name)) || !terminated(n->tap, sizeof(n->tap)))
			return fail(im, "a net device's name or tap is not terminated");
		snprintf(sec, sizeof(sec), "net.%s", n->name);
		rc = put(im, sec, "tap", n->tap);
		if (!rc && get_bool(&n->has_mac, &b))
			return fail(im, "a net device's has_mac is not a boolean");
		if (!rc && b) {
			char mac[18];
			snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0],
				 n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5]);
			rc = put(im, sec, "mac", mac);
		}
		if (!rc)
			rc = put_rate(im, sec, "rx_", &n->rx_rate);
		if (!rc)
			rc = put_rate(im, sec, "tx_", &n->tx_rate);
	}
	if (rc)
		return rc;
	if (get_bool(&in->vsock.enabled, &b))
		return fail(im, "vsock.enabled is not a boolean");
	if (b) {
		if (!terminated(in->vsock.uds, sizeof(in->vsock.uds)))
			return fail(im, "the vsock socket path is not terminated");
		rc = put_u64(im, "vsock", "cid", "%" PRIu64, in->vsock.cid);
		if (!rc)
			rc = put(im, "vsock", "uds", in->vsock.uds);
	}
	if (!rc && get_bool(&in->rng.enabled, &b))
		return fail(im, "rng.enabled is not a boolean");
	if (!rc && b) {
		im->out->rng.enabled = true;
		rc = put_rate(im, "rng", "", &in->rng.rate);
	}
	return rc;
}

int cfg_import(const struct vm_config *in, struct vm_config *out, char *err, size_t errlen)
{
	struct importer im = {out, err, errlen};
	static const char *const irqchip[] = {"auto", "on", "off"};
	cfg_defaults(out);
	if (!terminated(in->name, sizeof(in->name)) || !terminated(in->kernel, sizeof(in->kernel)) ||
	    !terminated(in->initrd, sizeof(in->initrd)) ||
	    !terminated(in->cmdline, sizeof(in->cmdline)) ||
	    !terminated(in->serial_out, sizeof(in->serial_out)))
		return fail(&im, "[vm]: a name, path or command line is not terminated");
	if (in->nr_blocks > CFG_MAX_BLOCKS || in->nr_nets > CFG_MAX_NETS) {
		snprintf(err, errlen, "%u block and %u net devices: at most %d and %d",
			 in->nr_blocks, in->nr_nets, CFG_MAX_BLOCKS, CFG_MAX_NETS);
		return -EINVAL;
	}
	if ((unsigned)in->irqchip > CFG_IRQCHIP_OFF)
		return fail(&im, "[vm] irqchip: not one of auto, on, off");
	if (in->cmdline_len != strlen(in->cmdline))
		return fail(&im, "[vm] cmdline: its length is not the recorded one");
	/* The name "ember" is the default; the setter refuses nothing else
	 * that a user could not give. */
	int rc = put(&im, "vm", "name", in->name);
	if (!rc)
		rc = put_u64(&im, "vm", "vcpus", "%" PRIu64, in->vcpus);
	if (!rc && in->mem_size % 1024)
		return fail(&im, "[vm] memory: not a whole number of KiB");
	if (!rc)
		rc = put_u64(&im, "vm", "memory", "%" PRIu64 "K", in->mem_size / 1024);
	if (!rc && in->kernel[0])
		rc = put(&im, "vm", "kernel", in->kernel);
	if (!rc && in->initrd[0])
		rc = put(&im, "vm", "initrd", in->initrd);
	if (!rc && in->cmdline[0])
		rc = put(&im, "vm", "cmdline", in->cmdline);
	if (!rc && in->timeout_ms)
		rc = put_u64(&im, "vm", "timeout", "%" PRIu64 "ms", in->timeout_ms);
	if (!rc)
		rc = put(&im, "vm", "irqchip", irqchip[in->irqchip]);
	if (!rc && !terminated(in->dumpcore, sizeof(in->dumpcore)))
		return fail(&im, "[vm] dumpcore: not terminated");
	if (!rc && in->dumpcore[0])
		rc = put(&im, "vm", "dumpcore", in->dumpcore);
	if (!rc)
		rc = put(&im, "serial", "output", in->serial_out[0] ? in->serial_out : "stdout");
	if (!rc)
		rc = import_devices(&im, in);
	if (!rc)
		rc = cfg_validate_machine(out, err, errlen);
	return rc;
}
