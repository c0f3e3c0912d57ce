/* Snapshots of a running VM and restores into a fresh process (see
 * monitor/vm.h and docs/snapshots.md).  The pieces are their owners':
 * vCPU and VM state in vcpu/ (vcpu_save_state, vcpu_vm_save), the file
 * format and memory files in snapshot/, each device's record in the
 * device; this file only puts them in order.
 *
 * The state file's sections:
 *   CONF 0    struct vm_config the VM was built from
 *   CPID 0    the CPUID entries the guest was given (struct kvm_cpuid2 + entries)
 *   KVMS 0    struct vm_kvm_state (irqchip, PIT, kvmclock)
 *   VCPU i    struct vcpu_state of vCPU i
 *   UART 0    struct uart_state
 *   VDEV i    struct virtio_dev_state of virtio device i
 *   VDVX i    virtio device i's own record (its ops->save)
 *   HVTG 0    Solo5 hvt guests: the manifest and layout (struct hvt_record)
 *   MEMH 0    the memory's content hash (snapshot.h's struct snap_mem_hash sum)
 *   MEMF 0    the identity of the memory file as written (struct memfile_id)
 *
 * A state file is untrusted input (it may come from shared storage or
 * another host): every record passes the checks a user's configuration
 * or a device's own input does before anything is allocated or opened
 * from it (the configuration through cfg_import(), the manifest through
 * hvt_parse_manifest(), the devices through their restore ops), and the
 * host paths its configuration names are opened only once the one who
 * loads it confirms them (vm_snapshot_check_paths()).
 *
 * Crash safety with two files: the memory file is written whole under
 * "<mem>.next" first, then the state file (temp, fsync, rename: the
 * commit point), then "<mem>.next" is renamed over "<mem>".  A crash
 * before the commit leaves the previous snapshot as it was; a crash
 * after it leaves the new state file with its memory still under
 * "<mem>.next", which a restore recognises (the state file records that
 * file's device and inode) and moves into place.  Never a mix: a memory
 * file whose digest is not the state file's is refused. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "monitor/exitcodes.h"
#include "monitor/hvt.h"
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

/* CONF: struct vm_config is mostly unused path buffers (zeros), so it is
 * held with its zero runs squeezed out (snap_check.c): 110 KiB become a
 * few hundred bytes, which the CRC and every restore read. */

/* ---- create ---- */

/* The dirty pages since the last call, as one bitmap over the RAM
 * mapping (slot 0 then slot 1, as the mapping lays them out): KVM's log
 * of the guest's writes and guest memory's of ember's own.  Both are
 * cleared as they are handed over.  NULL with err set on failure. */
static uint64_t *dirty_bitmap(struct vm *vm, char *err, size_t errlen)
{
	uint64_t pages = vm->mem.ram_size / 4096;
	uint64_t *bm = calloc((pages + 63) / 64, 8);
	if (!bm) {
		fail(err, errlen, 0, "no memory for the dirty bitmap");
		return NULL;
	}
	uint64_t first = 0; /* page index of the slot in the mapping */
	for (unsigned i = 0; i < vm->mem.nr; i++) {
		uint64_t n = vm->mem.r[i].size / 4096;
		uint64_t *slot = calloc((n + 63) / 64, 8);
		struct kvm_dirty_log log = {.slot = i, .dirty_bitmap = slot};
		if (!slot || ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			fail(err, errlen, 0, "KVM_GET_DIRTY_LOG: %s", strerror(slot ? errno : ENOMEM));
			free(slot);
			free(bm);
			return NULL;
		}
		for (uint64_t p = 0; p < n; p++)
			if (slot[p / 64] >> (p % 64) & 1)
				bm[(first + p) / 64] |= 1ULL << ((first + p) % 64);
		free(slot);
		first += n;
	}
	/* and the pages ember wrote itself (device buffers, used rings, hvt
	 * results), which KVM's log does not see */
	gmem_dirty_fetch(&vm->mem, bm);
	return bm;
}

static int add_devices(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	struct uart_state us;
	uart_save(&vm->com1, &us);
	int r = snap_w_add(w, TAG_UART, 0, &us, sizeof(us));
	struct virtio_dev *d;
	static uint8_t rec[SNAP_DEV_RECORD_MAX]; /* vmm thread only */
	for (unsigned i = 0; !r && (d = vdevs_get(vm, i)) != NULL; i++) {
		struct virtio_dev_state s;
		virtio_dev_save(d, &s);
		r = snap_w_add(w, TAG_VDEV, i, &s, sizeof(s));
		if (r || !d->ops->save)
			continue;
		pthread_mutex_lock(&d->lock);
		int n = d->ops->save(d, rec, sizeof(rec));
		pthread_mutex_unlock(&d->lock);
		if (n < 0)
			return fail(err, errlen, n, "%s: cannot save its state: %s", d->name,
				    strerror(-n));
		r = snap_w_add(w, TAG_VDVX, i, rec, (uint64_t)n);
	}
	if (!r && vm->hvt) {
		struct hvt_record h = {vm->hvt->mft, vm->hvt->mem_size, vm->hvt->kernel_end};
		r = snap_w_add(w, TAG_HVTG, 0, &h, sizeof(h));
	}
	return r ? fail(err, errlen, r, "cannot build the state file: %s", strerror(-r)) : 0;
}

static int add_machine(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	static struct vcpu_state vs; /* 8+ KiB: not on the stack; vmm thread only */
	static struct vm_kvm_state ks;
	int r = vcpu_vm_save(vm->vm_fd, vm->has_irqchip, &ks);
	if (r)
		return fail(err, errlen, r, "cannot read the VM's KVM state: %s", strerror(-r));
	r = snap_w_add(w, TAG_KVMS, 0, &ks, sizeof(ks));
	for (unsigned i = 0; !r && i < vm->nr_vcpus; i++) {
		r = vcpu_save_state(&vm->vcpus[i], vm->has_irqchip, &vs);
		if (r)
			return fail(err, errlen, r, "vcpu%u: cannot read its state: %s", i,
				    strerror(-r));
		r = snap_w_add(w, TAG_VCPU, i, &vs, sizeof(vs));
	}
	if (!r)
		r = snap_w_add(w, TAG_CPID, 0, vm->guest_cpuid, cpuid_bytes(vm->guest_cpuid));
	if (!r) {
		/* Worst case: a header per 8 bytes of literal. */
		static uint8_t conf[sizeof(struct vm_config) * 2];
		size_t n = snap_conf_squeeze((const uint8_t *)vm->cfg, sizeof(*vm->cfg), conf);
		r = snap_w_add(w, TAG_CONF, 0, conf, n);
	}
	return r ? fail(err, errlen, r, "cannot build the state file: %s", strerror(-r)) : 0;
}

int vm_snapshot_records(struct vm *vm, struct snap_writer *w, bool diff, char *err, size_t errlen)
{
	struct snap_header h = {
	    .nr_vcpus = vm->nr_vcpus,
	    .flags = diff ? SNAP_F_DIFF : 0,
	    .mem_size = vm->mem.ram_size,
	    .mem_digest = snap_mem_digest(vm->mem.base, vm->mem.ram_size),
	    .cpuid_sig = snap_cpuid_sig(vm->guest_cpuid),
	};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	h.created_ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
	snap_w_init(w, &h);
	/* Devices first (they are quiet: the vCPUs are parked and the vmm
	 * thread is here), then vCPUs and the VM; memory is the caller's. */
	int r = add_devices(vm, w, err, errlen);
	return r ? r : add_machine(vm, w, err, errlen);
}

/* ---- the two paths of a create: never one file under two names ---- */

/* A path's identity without following its last component: the folder's
 * device and inode, and the name in it.  A missing folder is refused:
 * nothing can be written there. */
struct path_id {
	uint64_t dev, ino;
	const char *name;
};

static int path_id(const char *path, struct path_id *id, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
	if (!*path || n >= sizeof(dir))
		return fail(err, errlen, -EINVAL, "%s: not a usable file path", path);
	memcpy(dir, slash ? path : ".", n);
	dir[n] = '\0';
	id->name = slash ? slash + 1 : path;
	struct stat st;
	if (!*id->name || !strcmp(id->name, ".") || !strcmp(id->name, ".."))
		return fail(err, errlen, -EINVAL, "%s: names a folder, not a file", path);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return fail(err, errlen, -ENOENT, "%s: folder %s %s", path, dir,
			    errno == ENOENT || !S_ISDIR(st.st_mode) ? "does not exist"
								     : strerror(errno));
	id->dev = (uint64_t)st.st_dev;
	id->ino = (uint64_t)st.st_ino;
	return 0;
}

/* Does b name a or a's temp name ("<a>.tmp-<pid>")? */
static bool names_or_temp(const struct path_id *a, const struct path_id *b)
{
	if (a->dev != b->dev || a->ino != b->ino)
		return false;
	size_t n = strlen(a->name);
	return !strcmp(a->name, b->name) ||
	       (!strncmp(b->name, a->name, n) && !strncmp(b->name + n, ".tmp-", 5));
}

/* What is at path now must be a regular file (it is replaced) or
 * nothing; a FIFO, device, folder or symlink is refused, not replaced. */
static int replaceable(const char *path, const char *what, struct stat *st, char *err,
		       size_t errlen)
{
	if (lstat(path, st) < 0) {
		if (errno == ENOENT)
			return 0;
		return fail(err, errlen, -errno, "%s %s: %s", what, path, strerror(errno));
	}
	if (!S_ISREG(st->st_mode))
		return fail(err, errlen, -EEXIST,
			    "%s %s is %s: ember replaces only regular files (give another path)",
			    what, path,
			    S_ISDIR(st->st_mode)    ? "a folder"
			    : S_ISFIFO(st->st_mode) ? "a FIFO"
			    : S_ISLNK(st->st_mode)  ? "a symbolic link"
			    : S_ISSOCK(st->st_mode) ? "a socket"
						    : "a device");
	return 1;
}

/* Refuse a create whose files would overwrite each other: the state file
 * and the memory file (or "<mem>.next", or either's temp name) the same
 * file, by name in the same folder or by inode. */
static int check_create_paths(const char *state_path, const char *mem_path, const char *next,
			      char *err, size_t errlen)
{
	struct path_id s, m, nx;
	int r = path_id(state_path, &s, err, errlen);
	if (!r)
		r = path_id(mem_path, &m, err, errlen);
	if (!r)
		r = path_id(next, &nx, err, errlen);
	if (r)
		return r;
	if (names_or_temp(&s, &m) || names_or_temp(&m, &s) || names_or_temp(&s, &nx) ||
	    names_or_temp(&nx, &s))
		return fail(err, errlen, -EINVAL,
			    "snapshot_path %s and mem_file_path %s name the same file (or one is "
			    "the other's temporary name): give two different files",
			    state_path, mem_path);
	struct stat a, b, c;
	int ea = replaceable(state_path, "snapshot_path", &a, err, errlen);
	int eb = ea < 0 ? 0 : replaceable(mem_path, "mem_file_path", &b, err, errlen);
	int ec = ea < 0 || eb < 0 ? 0 : replaceable(next, "mem_file_path's", &c, err, errlen);
	if (ea < 0 || eb < 0 || ec < 0)
		return ea < 0 ? ea : eb < 0 ? eb : ec;
	if (ea > 0 && ((eb > 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) ||
		       (ec > 0 && a.st_dev == c.st_dev && a.st_ino == c.st_ino)))
		return fail(err, errlen, -EINVAL,
			    "snapshot_path %s and mem_file_path %s are one file (hard links): give "
			    "two different files",
			    state_path, mem_path);
	return 0;
}

int vm_snapshot_create(struct vm *vm, const char *state_path, const char *mem_path, bool diff,
		       char *err, size_t errlen)
{
	char next[PATH_MAX];
	if (!vm->paused)
		return fail(err, errlen, -EBUSY, "the VM must be paused first");
	if (diff && !vm->track_dirty)
		return fail(err, errlen, -EINVAL,
			    "a diff snapshot needs dirty page tracking (track_dirty_pages)");
	if (diff && !vm->mem_terms)
		return fail(err, errlen, -EINVAL,
			    "a diff snapshot needs a base: a full snapshot of this VM taken since "
			    "it started, or the snapshot it was restored from (and the last "
			    "snapshot must not have failed)");
	if (!state_path || !mem_path)
		return fail(err, errlen, -EINVAL, "snapshot_path and mem_file_path are required");
	if (snprintf(next, sizeof(next), "%s.next", mem_path) >= (int)sizeof(next))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", mem_path);
	int r = check_create_paths(state_path, mem_path, next, err, errlen);
	if (r)
		return r;
	/* With tracking on, a full snapshot keeps each page's hash for the
	 * diffs that follow it. */
	struct snap_mem_hash mh = {vm->mem_hash_sum, vm->mem_terms};
	if (!diff && vm->track_dirty && !mh.terms &&
	    !(mh.terms = malloc(vm->mem.ram_size / SNAP_PAGE * sizeof(uint64_t))))
		return fail(err, errlen, -ENOMEM, "no memory for the page hashes");
	vm->mem_terms = NULL; /* given back below only if this snapshot is whole */

	struct snap_writer w;
	r = vm_snapshot_records(vm, &w, diff, err, errlen);

	/* Tracking on: every snapshot resets the log, so a diff holds the
	 * pages since the previous snapshot, full or diff. */
	uint64_t *dirty = NULL;
	if (!r && vm->track_dirty && !(dirty = dirty_bitmap(vm, err, errlen)))
		r = -EIO;
	if (!r)
		r = diff ? snap_mem_write_diff(next, vm->mem.base, vm->mem.ram_size, dirty, &mh,
					       err, errlen)
			 : snap_mem_write_full(next, vm->mem.base, vm->mem.ram_size, &mh, err,
					       errlen);
	free(dirty);
	struct stat st;
	if (!r && stat(next, &st) < 0)
		r = fail(err, errlen, -errno, "%s: %s", next, strerror(errno));
	if (!r) {
		struct memfile_id id = {(uint64_t)st.st_dev, (uint64_t)st.st_ino,
					(uint64_t)st.st_size,
					(uint64_t)st.st_mtim.tv_sec * 1000000000ULL +
					    (uint64_t)st.st_mtim.tv_nsec};
		r = snap_w_add(&w, TAG_MEMF, 0, &id, sizeof(id));
	}
	if (!r)
		r = snap_w_add(&w, TAG_MEMH, 0, &mh.sum, sizeof(mh.sum));
	if (!r)
		r = snap_w_commit(&w, state_path, err, errlen);
	snap_w_free(&w);
	if (r) {
		/* The dirty log is spent: only a full snapshot can follow. */
		free(mh.terms);
		unlink(next);
		return r;
	}
	vm->mem_terms = vm->track_dirty ? mh.terms : NULL;
	vm->mem_hash_sum = mh.sum;
	if (!vm->track_dirty)
		free(mh.terms);
	if (rename(next, mem_path) < 0)
		return fail(err, errlen, -errno, "%s: cannot move the memory file into place: %s "
						 "(it is whole under %s; a restore finds it)",
			    mem_path, strerror(errno), next);
	int e = snap_sync_dir(mem_path);
	return e ? fail(err, errlen, e, "%s: cannot sync its folder: %s", mem_path, strerror(-e))
		 : 0;
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
