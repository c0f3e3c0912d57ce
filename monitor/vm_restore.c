/* Restores into a fresh process (see monitor/vm.h and docs/snapshots.md):
 * the snapshot object (vm_snapshot_open*: its state read and checked
 * once, held by the caller), the guest it gives a build in place of a
 * kernel (vm_snapshot_guest: memory, irqchip, CPUID, an hvt manifest),
 * and the loader's path confirmation.  The overlay of the saved parts
 * that ends the build is vm_state_load's (monitor/vm_parts.c).  What a
 * snapshot holds is monitor/vm_snapshot.c's (its top comment lists the
 * sections).
 *
 * A state file is untrusted input (it may come from shared storage or
 * another host): every record passes the checks a user's configuration
 * or a device's own input does before anything is allocated or opened
 * from it (the configuration through cfg_import(), the manifest through
 * hvt_parse_manifest(), the devices through their restore ops), and the
 * host paths its configuration names are opened only once the one who
 * loads it confirms them (vm_snapshot_check_paths()).  A memory file is
 * taken only when it is the one the snapshot wrote (MEMF) or hashes to
 * its MEMH; after a crash between the state file's commit and the memory
 * file's rename, "<mem>.next" is recognised and moved into place. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "monitor/hvt/hvt.h"
#include "monitor/vm.h"
#include "monitor/snap_records.h"
#include "monitor/startup.h"
#include "snapshot/snapshot.h"


/* ---- the snapshot object ---- */

/* Check every record of rd (named name) into cfg and wrap it; rd is
 * taken either way (closed on failure). */
static int wrap(struct snap_reader *rd, const char *name, struct snap_stream *stream,
		struct vm_config *cfg, struct vm_snapshot **out, char *err, size_t errlen)
{
	*out = NULL;
	/* Every record checked before anything is built from it. */
	int r = snap_check_records(rd, name, cfg, err, errlen);
	struct vm_snapshot *s = r ? NULL : calloc(1, sizeof(*s));
	if (!r && !s)
		r = snap_err(err, errlen, -ENOMEM, "%s: out of memory", name);
	if (!r && snprintf(s->name, sizeof(s->name), "%s", name) >= (int)sizeof(s->name))
		r = snap_err(err, errlen, -ENAMETOOLONG, "%s: path too long", name);
	if (r) {
		free(s);
		snap_r_close(rd);
		return r;
	}
	s->rd = *rd; /* the reader moves here */
	s->stream = stream;
	*out = s;
	return 0;
}

int vm_snapshot_open(const char *state_path, struct vm_config *cfg, struct vm_snapshot **out,
		     char *err, size_t errlen)
{
	struct snap_reader rd;
	*out = NULL;
	int r = snap_r_open(&rd, state_path, err, errlen);
	return r ? r : wrap(&rd, state_path, NULL, cfg, out, err, errlen);
}

int vm_snapshot_open_stream(struct snap_stream *st, struct vm_config *cfg,
			    struct vm_snapshot **out, char *err, size_t errlen)
{
	struct snap_reader rd;
	*out = NULL;
	int r = snap_stream_get_state(st, &rd, err, errlen);
	return r ? r : wrap(&rd, VM_STREAM_NAME, st, cfg, out, err, errlen);
}

int vm_snapshot_open_mem(const void *buf, size_t len, const char *name, struct vm_config *cfg,
			 struct vm_snapshot **out, char *err, size_t errlen)
{
	struct snap_reader rd;
	*out = NULL;
	int r = snap_r_open_mem(&rd, buf, len, name, err, errlen);
	return r ? r : wrap(&rd, name, NULL, cfg, out, err, errlen);
}

/* RAM the caller filled (a migration's): of the snapshot's size, and
 * with its contents as far as the sampled digest tells (the caller
 * checked the full hash). */
static int premade_memory(struct vm_snapshot *s, struct vm *vm, char *err, size_t errlen)
{
	if (vm->mem.ram_size != s->rd.h.mem_size ||
	    (!s->mem_partial &&
	     snap_mem_digest(vm->mem.base, vm->mem.ram_size) != s->rd.h.mem_digest))
		return snap_err(err, errlen, -EINVAL,
				"%s: the memory received is not the memory its state describes",
				s->name);
	uint64_t len;
	const uint64_t *sum = snap_r_find(&s->rd, TAG_MEMH, 0, &len);
	vm->mem_terms = NULL; /* no diff snapshot builds on this */
	vm->mem.partial = s->mem_partial;
	vm->mem_hash_sum = sum && len == sizeof(*sum) ? *sum : 0;
	return 0;
}

void vm_snapshot_close(struct vm_snapshot *s)
{
	if (!s)
		return;
	snap_r_close(&s->rd);
	free(s);
}

int vm_snapshot_check_paths(const struct vm_config *cfg, const struct vm_restore_paths *ok,
			    char *err, size_t errlen)
{
	size_t at = 0;
	err[0] = '\0';
#define ADD(...)                                                                                   \
	do {                                                                                       \
		if (at < errlen)                                                                   \
			at += (size_t)snprintf(err + at, errlen - at, "%s", at ? ", " : "");       \
		if (at < errlen)                                                                   \
			at += (size_t)snprintf(err + at, errlen - at, __VA_ARGS__);                \
	} while (0)
	if (ok->all)
		return 0;
	const char *out = cfg->serial_out;
	if (!ok->serial && out[0] && strcmp(out, "stdout") && strcmp(out, "none"))
		ADD("serial output (%.200s)", out);
	for (unsigned i = 0; i < cfg->nr_blocks; i++)
		if (!ok->drive[i])
			ADD("drive \"%s\" (%.200s)", cfg->blocks[i].name, cfg->blocks[i].path);
	for (unsigned i = 0; i < cfg->nr_nets; i++)
		if (!ok->net[i])
			ADD("network interface \"%s\" (tap %s)", cfg->nets[i].name, cfg->nets[i].tap);
	if (cfg->vsock.enabled && !ok->vsock)
		ADD("vsock socket (%.200s)", cfg->vsock.uds);
#undef ADD
	return at ? -EPERM : 0;
}

/* Is the file open at fd the one this snapshot wrote (MEMF), unchanged? */
static bool is_written_file(const struct stat *st, const struct memfile_id *id)
{
	return id && (uint64_t)st->st_dev == id->dev && (uint64_t)st->st_ino == id->ino &&
	       (uint64_t)st->st_size == id->size &&
	       (uint64_t)st->st_mtim.tv_sec * 1000000000ULL + (uint64_t)st->st_mtim.tv_nsec ==
		   id->mtime_ns;
}

static bool is_file(const char *path, const struct memfile_id *id)
{
	struct stat st;
	return stat(path, &st) == 0 && is_written_file(&st, id);
}

/* Map (or, copy, read) the memory file once it is proven this
 * snapshot's: the very file it wrote, or one whose every page hashes to
 * MEMH. */
static int file_memory(struct vm_snapshot *s, struct vm *vm, const char *mem, bool copy, char *err,
		       size_t errlen)
{
	const char *state = s->name;
	char next[PATH_MAX];
	if (!mem)
		return snap_err(err, errlen, -EINVAL, "%s: no memory file given", state);
	snprintf(next, sizeof(next), "%s.next", mem);
	uint64_t len, size = s->rd.h.mem_size, *sum;
	const struct memfile_id *id = snap_r_find(&s->rd, TAG_MEMF, 0, &len);
	if (id && len != sizeof(*id))
		id = NULL;
	sum = (uint64_t *)snap_r_find(&s->rd, TAG_MEMH, 0, &len);
	if (!sum || len != sizeof(*sum))
		return snap_err(err, errlen, -EINVAL,
			    "%s: section MEMH (the memory's hash) is missing or damaged", state);
	/* A crash after the state file's commit left this snapshot's memory
	 * under "<mem>.next": finish the snapshot's last step. */
	if (is_file(next, id) && rename(next, mem) < 0)
		return snap_err(err, errlen, vm_host_err(-errno), "%s: cannot move it to %s: %s", next,
			    mem, strerror(errno));
	/* O_NONBLOCK: a FIFO must not hang the open (it is refused below). */
	int fd = open(mem, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return snap_err(err, errlen, -EINVAL, "memory file %s: %s", mem, strerror(e));
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
		close(fd);
		return snap_err(err, errlen, -EINVAL,
			    S_ISREG(st.st_mode)
				? "memory file %s: its size is not the snapshot's %llu bytes"
				: "memory file %s: not a regular file",
			    mem, (unsigned long long)size);
	}
	/* Diffs build on this snapshot when tracking is on: they need each
	 * page's hash, read from the file (not the mapping: on tmpfs,
	 * reading a hole through a mapping would fill it). */
	struct snap_mem_hash mh = {0, NULL};
	if (vm->track_dirty && !(mh.terms = malloc(size / SNAP_PAGE * sizeof(uint64_t)))) {
		close(fd);
		return snap_err(err, errlen, -ENOMEM, "out of memory for the page hashes");
	}
	int r = 0;
	bool same = is_written_file(&st, id);
	if (!same || mh.terms) {
		char why[SNAP_ERR_MAX];
		r = snap_mem_hash_fd(fd, size, mem, &mh, why, sizeof(why));
		if (r)
			r = snap_err(err, errlen, vm_host_err(r), "memory file %s", why);
		else if (mh.sum != *sum)
			r = snap_err(err, errlen, -EINVAL,
				 "memory file %s does not belong to state file %s (its pages do "
				 "not hash to the snapshot's)%s",
				 mem, state,
				 s->rd.h.flags & SNAP_F_DIFF
				     ? "; this is a diff snapshot: merge its memory file into the "
				       "base first (ember snapshot merge BASE DIFF) and load the base"
				     : "");
	}
	if (!r) {
		r = gmem_init_file(&vm->mem, fd, size, copy);
		if (r)
			r = snap_err(err, errlen, vm_host_err(r), "memory file %s: %s", mem, strerror(-r));
	}
	close(fd);
	if (r) {
		free(mh.terms);
		return r;
	}
	/* The sampled digest too: cheap, and it catches a file changed
	 * in place that kept its size and mtime. */
	if (snap_mem_digest(vm->mem.base, vm->mem.ram_size) != s->rd.h.mem_digest) {
		free(mh.terms);
		gmem_free(&vm->mem);
		return snap_err(err, errlen, -EINVAL,
			    "memory file %s does not belong to state file %s (its contents differ "
			    "from the snapshot's)%s",
			    mem, state,
			    s->rd.h.flags & SNAP_F_DIFF
				? "; this is a diff snapshot: merge its memory file into the base "
				  "first (ember snapshot merge BASE DIFF) and load the base"
				: "");
	}
	vm->mem_terms = mh.terms;
	vm->mem_hash_sum = *sum;
	return 0;
}

/* A section that must be there with exactly len bytes (snap_check
 * made sure: this guards the build against a caller's mix-up). */
static const void *need(const struct vm_snapshot *s, uint32_t tag, uint32_t index, uint64_t len,
			char *err, size_t errlen)
{
	uint64_t have;
	const void *p = snap_r_find(&s->rd, tag, index, &have);
	if (!p || (len && have != len)) {
		char t[5] = {(char)(tag), (char)(tag >> 8), (char)(tag >> 16), (char)(tag >> 24), 0};
		snap_err(err, errlen, 0, "%s: section %s %u is %s", s->name, t, index,
		     p ? "of another size (another ember version?)" : "missing");
		return NULL;
	}
	return p;
}

/* The CPUID the guest had, for every vCPU in place of the host's
 * (create_vcpus checks this host has all of it). */
static int guest_cpuid(const struct vm_snapshot *s, struct vm *vm, char *err, size_t errlen)
{
	uint64_t len;
	const struct kvm_cpuid2 *c = snap_r_find(&s->rd, TAG_CPID, 0, &len);
	if (!c || len < sizeof(*c) || len != snap_cpuid_bytes(c) || snap_cpuid_sig(c) != s->rd.h.cpuid_sig)
		return snap_err(err, errlen, -EINVAL, "%s: the CPUID section is missing or damaged",
			    s->name);
	free(vm->guest_cpuid);
	vm->guest_cpuid = malloc(len);
	if (!vm->guest_cpuid)
		return snap_err(err, errlen, -ENOMEM, "out of memory");
	memcpy(vm->guest_cpuid, c, len);
	return 0;
}

/* A Solo5 hvt guest's manifest and layout, in place of its ELF's. */
static int guest_hvt(const struct vm_snapshot *s, struct vm *vm, const struct hvt_record *h,
		     char *err, size_t errlen)
{
	char why[256];
	struct hvt_guest *g = vm->hvt = calloc(1, sizeof(*vm->hvt));
	if (!g)
		return snap_err(err, errlen, -ENOMEM, "out of memory");
	/* As hvt_init() leaves it: no backend open (fd 0 is not "none"). */
	g->out_fd = -1;
	for (unsigned i = 0; i < HVT_MFT_MAX_ENTRIES; i++)
		g->blk[i].fd = g->tap[i].fd = -1;
	if (snap_check_hvt(h, vm->cfg->mem_size, &g->mft, why, sizeof(why)))
		return snap_err(err, errlen, -EINVAL, "%s: section HVTG: %s", s->name, why);
	g->mem_size = h->mem_size;
	g->kernel_end = h->kernel_end;
	g->mem = &vm->mem;
	vm->boot.proto = BOOT_HVT;
	return 0;
}

int vm_snapshot_guest(struct vm_snapshot *s, struct vm *vm, const char *mem_path, bool copy,
		      char *err, size_t errlen)
{
	const struct snap_header *h = &s->rd.h;
	const struct vm_config *cfg = vm->cfg;
	if (h->nr_vcpus != cfg->vcpus || h->mem_size != cfg->mem_size)
		return snap_err(err, errlen, -EINVAL,
			    "%s: the snapshot has %u vCPUs and %llu MiB, its configuration says "
			    "%u and %llu",
			    s->name, h->nr_vcpus, (unsigned long long)(h->mem_size >> 20),
			    cfg->vcpus, (unsigned long long)(cfg->mem_size >> 20));
	const struct vm_kvm_state *ks = need(s, TAG_KVMS, 0, sizeof(*ks), err, errlen);
	if (!ks)
		return -EINVAL;
	vm->has_irqchip = ks->has_irqchip != 0;
	startup_phase("mapping the snapshot's memory file");
	int r = vm->mem.base ? premade_memory(s, vm, err, errlen)
		: s->stream  ? vm_stream_memory(s, vm, err, errlen)
			     : file_memory(s, vm, mem_path, copy, err, errlen);
	if (!r)
		r = guest_cpuid(s, vm, err, errlen);
	const struct hvt_record *hvt = snap_r_find(&s->rd, TAG_HVTG, 0, NULL);
	if (!r && hvt) {
		hvt = need(s, TAG_HVTG, 0, sizeof(*hvt), err, errlen);
		r = hvt ? guest_hvt(s, vm, hvt, err, errlen) : -EINVAL;
	}
	return r;
}
