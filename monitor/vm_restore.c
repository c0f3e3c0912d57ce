/* Restores into a fresh process (see monitor/vm.h and docs/snapshots.md):
 * the state file read and checked once (vm_snapshot_config, kept for the
 * build that follows), then vm_build() (vm.c) calls the steps below in
 * order: open, memory, cpuid, state, hvt, close.  What a snapshot holds
 * is monitor/vm_snapshot.c's (its top comment lists the sections).
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
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "monitor/exitcodes.h"
#include "monitor/hvt/hvt.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"
#include "monitor/snap_records.h"
#include "snapshot/snapshot.h"


static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

static size_t cpuid_bytes(const struct kvm_cpuid2 *c)
{
	return sizeof(*c) + c->nent * sizeof(c->entries[0]);
}

/* ---- restore ---- */

/* The state file read for vm_snapshot_config(), kept for the restore
 * that follows in the same process (it is read and checked once). */
static struct {
	struct snap_reader rd;
	char path[PATH_MAX];
	bool open;
} kept;

static void drop_kept(void)
{
	if (kept.open)
		snap_r_close(&kept.rd);
	kept.open = false;
}

int vm_snapshot_keep(struct snap_reader *rd, const char *name, struct vm_config *cfg, char *err,
		     size_t errlen)
{
	drop_kept();
	/* Every record checked before anything is built from it. */
	int r = snap_check_records(rd, name, cfg, err, errlen);
	if (r) {
		snap_r_close(rd);
		return r;
	}
	kept.rd = *rd; /* the reader moves here */
	memset(rd, 0, sizeof(*rd));
	kept.open = snprintf(kept.path, sizeof(kept.path), "%s", name) < (int)sizeof(kept.path);
	if (!kept.open)
		snap_r_close(&kept.rd);
	return 0;
}

int vm_snapshot_config(const char *state_path, struct vm_config *cfg, char *err, size_t errlen)
{
	struct snap_reader rd;
	int r = snap_r_open(&rd, state_path, err, errlen);
	return r ? r : vm_snapshot_keep(&rd, state_path, cfg, err, errlen);
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

/* A section that must be there with exactly len bytes. */
static const void *need(struct vm *vm, uint32_t tag, uint32_t index, uint64_t len, char *err,
			size_t errlen)
{
	uint64_t have;
	const void *p = snap_r_find(vm->snap, tag, index, &have);
	if (!p || (len && have != len)) {
		char t[5] = {(char)(tag), (char)(tag >> 8), (char)(tag >> 16), (char)(tag >> 24), 0};
		fail(err, errlen, 0, "%s: section %s %u is %s", vm->restore->state_path, t, index,
		     p ? "of another size (another ember version?)" : "missing");
		return NULL;
	}
	return p;
}

int vm_restore_open(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_restore *rs = vm->restore;
	vm->snap = calloc(1, sizeof(*vm->snap));
	if (!vm->snap)
		return fail(err, errlen, EXIT_HOST, "out of memory");
	if (kept.open && strcmp(kept.path, rs->state_path) == 0) {
		*vm->snap = kept.rd; /* the reader moves to the VM */
		kept.open = false;
	} else if (snap_r_open(vm->snap, rs->state_path, err, errlen)) {
		free(vm->snap);
		vm->snap = NULL;
		return EXIT_CONFIG;
	}
	const struct snap_header *h = &vm->snap->h;
	if (h->nr_vcpus != vm->cfg->vcpus || h->mem_size != vm->cfg->mem_size)
		return fail(err, errlen, EXIT_CONFIG,
			    "%s: the snapshot has %u vCPUs and %llu MiB, its configuration says "
			    "%u and %llu",
			    rs->state_path, h->nr_vcpus, (unsigned long long)(h->mem_size >> 20),
			    vm->cfg->vcpus, (unsigned long long)(vm->cfg->mem_size >> 20));
	const struct vm_kvm_state *ks = need(vm, TAG_KVMS, 0, sizeof(*ks), err, errlen);
	if (!ks)
		return EXIT_CONFIG;
	vm->has_irqchip = ks->has_irqchip != 0;
	vm->restore_hvt = snap_r_find(vm->snap, TAG_HVTG, 0, NULL) != NULL;
	return 0;
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

/* Map (or read) the memory file once it is proven this snapshot's: the
 * very file it wrote, or one whose every page hashes to MEMH. */
int vm_restore_memory(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_restore *rs = vm->restore;
	if (rs->stream)
		return vm_stream_restore_memory(vm, err, errlen);
	const char *state = rs->state_path, *mem = rs->mem_path;
	char next[PATH_MAX];
	snprintf(next, sizeof(next), "%s.next", mem);
	uint64_t len, size = vm->snap->h.mem_size, *sum;
	const struct memfile_id *id = snap_r_find(vm->snap, TAG_MEMF, 0, &len);
	if (id && len != sizeof(*id))
		id = NULL;
	sum = (uint64_t *)snap_r_find(vm->snap, TAG_MEMH, 0, &len);
	if (!sum || len != sizeof(*sum))
		return fail(err, errlen, EXIT_CONFIG,
			    "%s: section MEMH (the memory's hash) is missing or damaged", state);
	/* A crash after the state file's commit left this snapshot's memory
	 * under "<mem>.next": finish the snapshot's last step. */
	if (is_file(next, id) && rename(next, mem) < 0)
		return fail(err, errlen, EXIT_HOST, "%s: cannot move it to %s: %s", next, mem,
			    strerror(errno));
	/* O_NONBLOCK: a FIFO must not hang the open (it is refused below). */
	int fd = open(mem, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return fail(err, errlen, EXIT_CONFIG, "memory file %s: %s", mem, strerror(e));
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
		close(fd);
		return fail(err, errlen, EXIT_CONFIG,
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
		return fail(err, errlen, EXIT_HOST, "out of memory for the page hashes");
	}
	int r = 0;
	bool same = is_written_file(&st, id);
	if (!same || mh.terms) {
		char why[SNAP_ERR_MAX];
		r = snap_mem_hash_fd(fd, size, mem, &mh, why, sizeof(why));
		if (r)
			r = fail(err, errlen, EXIT_HOST, "memory file %s", why);
		else if (mh.sum != *sum)
			r = fail(err, errlen, EXIT_CONFIG,
				 "memory file %s does not belong to state file %s (its pages do "
				 "not hash to the snapshot's)%s",
				 mem, state,
				 vm->snap->h.flags & SNAP_F_DIFF
				     ? "; this is a diff snapshot: merge its memory file into the "
				       "base first (ember snapshot merge BASE DIFF) and load the base"
				     : "");
	}
	if (!r) {
		r = gmem_init_file(&vm->mem, fd, size, rs->copy_mem);
		if (r)
			r = fail(err, errlen, EXIT_HOST, "memory file %s: %s", mem, strerror(-r));
	}
	close(fd);
	if (r) {
		free(mh.terms);
		return r;
	}
	/* The sampled digest too: cheap, and it catches a file changed
	 * in place that kept its size and mtime. */
	if (snap_mem_digest(vm->mem.base, vm->mem.ram_size) != vm->snap->h.mem_digest) {
		free(mh.terms);
		gmem_free(&vm->mem);
		return fail(err, errlen, EXIT_CONFIG,
			    "memory file %s does not belong to state file %s (its contents differ "
			    "from the snapshot's)%s",
			    mem, state,
			    vm->snap->h.flags & SNAP_F_DIFF
				? "; this is a diff snapshot: merge its memory file into the base "
				  "first (ember snapshot merge BASE DIFF) and load the base"
				: "");
	}
	vm->mem_terms = mh.terms;
	vm->mem_hash_sum = *sum;
	return 0;
}

/* The CPUID the guest had, if this host can give it; set on every vCPU
 * by create_vcpus (vm.c) in place of the host's. */
int vm_restore_cpuid(struct vm *vm, const struct kvm_cpuid2 *host, char *err, size_t errlen)
{
	uint64_t len;
	const struct kvm_cpuid2 *c = snap_r_find(vm->snap, TAG_CPID, 0, &len);
	if (!c || len < sizeof(*c) || len != cpuid_bytes(c) || snap_cpuid_sig(c) != vm->snap->h.cpuid_sig)
		return fail(err, errlen, EXIT_CONFIG, "%s: the CPUID section is missing or damaged",
			    vm->restore->state_path);
	char missing[256];
	if (vcpu_cpuid_compatible(c, host, missing, sizeof(missing)))
		return fail(err, errlen, EXIT_CONFIG,
			    "%s: this host lacks CPU features the guest was given: %s",
			    vm->restore->state_path, missing);
	free(vm->guest_cpuid);
	vm->guest_cpuid = malloc(len);
	if (!vm->guest_cpuid)
		return fail(err, errlen, EXIT_HOST, "out of memory");
	memcpy(vm->guest_cpuid, c, len);
	return 0;
}

/* After the VM, its vCPUs and devices are built: overlay what was saved. */
int vm_restore_state(struct vm *vm, char *err, size_t errlen)
{
	char why[VM_ERR_MAX];
	const struct vm_kvm_state *ks = need(vm, TAG_KVMS, 0, sizeof(*ks), err, errlen);
	if (!ks)
		return EXIT_CONFIG;
	int r = vcpu_vm_restore(vm->vm_fd, ks);
	if (r)
		return fail(err, errlen, EXIT_HOST, "cannot restore the VM's KVM state: %s",
			    strerror(-r));
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		const struct vcpu_state *vs = need(vm, TAG_VCPU, i, sizeof(*vs), err, errlen);
		if (!vs)
			return EXIT_CONFIG;
		r = vcpu_restore_state(&vm->vcpus[i], vm->has_irqchip, vs);
		if (r)
			return fail(err, errlen, EXIT_HOST, "vcpu%u: cannot restore its state: %s", i,
				    strerror(-r));
	}
	const struct uart_state *us = need(vm, TAG_UART, 0, sizeof(*us), err, errlen);
	if (!us)
		return EXIT_CONFIG;
	uart_restore(&vm->com1, us);
	struct virtio_dev *d;
	unsigned i;
	for (i = 0; (d = vdevs_get(vm, i)) != NULL; i++) {
		const struct virtio_dev_state *s = need(vm, TAG_VDEV, i, sizeof(*s), err, errlen);
		if (!s)
			return EXIT_CONFIG;
		if (virtio_dev_restore(d, s, why, sizeof(why)))
			return fail(err, errlen, EXIT_CONFIG, "%s: %s", vm->restore->state_path, why);
		uint64_t len;
		const void *rec = snap_r_find(vm->snap, TAG_VDVX, i, &len);
		if (d->ops->restore && rec) {
			pthread_mutex_lock(&d->lock);
			r = d->ops->restore(d, rec, len);
			pthread_mutex_unlock(&d->lock);
			if (r)
				return fail(err, errlen, EXIT_CONFIG,
					    "%s: %s: its saved record does not fit this device",
					    vm->restore->state_path, d->name);
		}
	}
	if (snap_r_find(vm->snap, TAG_VDEV, i, NULL))
		return fail(err, errlen, EXIT_CONFIG,
			    "%s: the snapshot has more virtio devices than its configuration",
			    vm->restore->state_path);
	return 0;
}

/* A Solo5 hvt guest's manifest and layout, in place of its ELF's. */
int vm_restore_hvt(struct vm *vm, struct hvt_guest *g, char *err, size_t errlen)
{
	const struct hvt_record *h = need(vm, TAG_HVTG, 0, sizeof(*h), err, errlen);
	if (!h)
		return EXIT_CONFIG;
	char why[256];
	memset(g, 0, sizeof(*g));
	if (snap_check_hvt(h, vm->cfg->mem_size, &g->mft, why, sizeof(why)))
		return fail(err, errlen, EXIT_CONFIG, "%s: section HVTG: %s",
			    vm->restore->state_path, why);
	g->mem_size = h->mem_size;
	g->kernel_end = h->kernel_end;
	g->mem = &vm->mem;
	return 0;
}

void vm_restore_close(struct vm *vm)
{
	if (!vm->snap)
		return;
	snap_r_close(vm->snap);
	free(vm->snap);
	vm->snap = NULL;
}
