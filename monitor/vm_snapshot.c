/* Snapshots of a running VM (see monitor/vm.h and docs/snapshots.md);
 * their restores into a fresh process are monitor/vm_restore.c's, streams
 * monitor/vm_stream.c's.  The pieces are their owners': each part of the
 * VM saves its own record (vm_state_save walks them, monitor/vm_parts.c),
 * the file format and memory files are snapshot/'s; this file adds what
 * a restore builds from (CPID, CONF) and the memory's records.
 *
 * The state file's sections (in the file: the parts' in vm_state_save's
 * order — UART, VDEV i and VDVX i, HVTG, KVMS, VCPU i — then CPID, CONF,
 * MEMF, MEMH):
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
 * Crash safety with two files: the memory file is written whole under
 * "<mem>.next" first, then the state file (temp, fsync, rename: the
 * commit point), then "<mem>.next" is renamed over "<mem>".  A crash
 * before the commit leaves the previous snapshot as it was; a crash
 * after it leaves the new state file with its memory still under
 * "<mem>.next", which a restore recognises (the state file records that
 * file's device and inode) and moves into place.  Never a mix: a memory
 * file whose digest is not the state file's is refused. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "monitor/vm.h"
#include "monitor/snap_records.h"
#include "snapshot/snapshot.h"

/* CONF: struct vm_config is mostly unused path buffers (zeros), so it is
 * held with its zero runs squeezed out (snap_check.c): 110 KiB become a
 * few hundred bytes, which the CRC and every restore read. */

/* ---- create ---- */

/* The dirty pages since the last call (guest memory's fetch: KVM's log
 * and ember's own writes, both cleared).  NULL with err set on failure. */
static uint64_t *dirty_bitmap(struct vm *vm, char *err, size_t errlen)
{
	uint64_t *bm = malloc(gmem_dirty_words(&vm->mem) * 8);
	int r = bm ? gmem_dirty_fetch(&vm->mem, bm) : -ENOMEM;
	if (r) {
		snap_err(err, errlen, 0, "cannot read the dirty page log: %s", strerror(-r));
		free(bm);
		return NULL;
	}
	return bm;
}

int vm_track_dirty(struct vm *vm, bool on)
{
	int r = gmem_log_dirty(&vm->mem, on);
	if (r)
		return r;
	vm->track_dirty = on;
	/* Off, the base goes: the writes from now on are not recorded, so a
	 * diff needs a full snapshot first (and tracking back on). */
	if (!on) {
		free(vm->mem_terms);
		vm->mem_terms = NULL;
	}
	return 0;
}

/* What a restore builds from: the CPUID the guest was given and the
 * configuration. */
static int add_build_records(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	int r = snap_w_add(w, TAG_CPID, 0, vm->guest_cpuid, snap_cpuid_bytes(vm->guest_cpuid));
	if (!r) {
		/* Worst case: a header per 8 bytes of literal.  One user at a
		 * time: the vmm thread's snapshots, or a migration's thread
		 * (changes such as snapshots are refused while it runs). */
		static uint8_t conf[sizeof(struct vm_config) * 2];
		size_t n = snap_conf_squeeze((const uint8_t *)vm->cfg, sizeof(*vm->cfg), conf);
		r = snap_w_add(w, TAG_CONF, 0, conf, n);
	}
	return r ? snap_err(err, errlen, r, "cannot build the state file: %s", strerror(-r)) : 0;
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
	/* Every part's record, then what a restore builds from: the CPUID
	 * the guest was given and the configuration; memory is the
	 * caller's. */
	int r = vm_state_save(vm, w, err, errlen);
	if (r)
		return r;
	return add_build_records(vm, w, err, errlen);
}

int vm_setup_records(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	struct snap_header h = {
	    .nr_vcpus = vm->nr_vcpus,
	    .mem_size = vm->mem.ram_size,
	    .cpuid_sig = snap_cpuid_sig(vm->guest_cpuid),
	};
	snap_w_init(w, &h);
	return add_build_records(vm, w, err, errlen);
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
		return snap_err(err, errlen, -EINVAL, "%s: not a usable file path", path);
	memcpy(dir, slash ? path : ".", n);
	dir[n] = '\0';
	id->name = slash ? slash + 1 : path;
	struct stat st;
	if (!*id->name || !strcmp(id->name, ".") || !strcmp(id->name, ".."))
		return snap_err(err, errlen, -EINVAL, "%s: names a folder, not a file", path);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return snap_err(err, errlen, -ENOENT, "%s: folder %s %s", path, dir,
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
		return snap_err(err, errlen, -errno, "%s %s: %s", what, path, strerror(errno));
	}
	if (!S_ISREG(st->st_mode))
		return snap_err(err, errlen, -EEXIST,
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
		return snap_err(err, errlen, -EINVAL,
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
		return snap_err(err, errlen, -EINVAL,
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
		return snap_err(err, errlen, -EBUSY, "the VM must be paused first");
	if (diff && !vm->track_dirty)
		return snap_err(err, errlen, -EINVAL,
			    "a diff snapshot needs dirty page tracking (track_dirty_pages)");
	if (diff && !vm->mem_terms)
		return snap_err(err, errlen, -EINVAL,
			    "a diff snapshot needs a base: a full snapshot of this VM taken since "
			    "it started, or the snapshot it was restored from (and the last "
			    "snapshot must not have failed)");
	if (!state_path || !mem_path)
		return snap_err(err, errlen, -EINVAL, "snapshot_path and mem_file_path are required");
	if (snprintf(next, sizeof(next), "%s.next", mem_path) >= (int)sizeof(next))
		return snap_err(err, errlen, -ENAMETOOLONG, "%s: path too long", mem_path);
	int r = check_create_paths(state_path, mem_path, next, err, errlen);
	if (r)
		return r;
	/* With tracking on, a full snapshot keeps each page's hash for the
	 * diffs that follow it. */
	struct snap_mem_hash mh = {vm->mem_hash_sum, vm->mem_terms};
	if (!diff && vm->track_dirty && !mh.terms &&
	    !(mh.terms = malloc(vm->mem.ram_size / SNAP_PAGE * sizeof(uint64_t))))
		return snap_err(err, errlen, -ENOMEM, "no memory for the page hashes");
	vm->mem_terms = NULL; /* given back below only if this snapshot is whole */

	struct snap_writer w;
	snap_progress_phase(vm->progress, "saving state", 0);
	r = vm_snapshot_records(vm, &w, diff, err, errlen);

	/* Tracking on: every snapshot resets the log, so a diff holds the
	 * pages since the previous snapshot, full or diff. */
	uint64_t *dirty = NULL;
	if (!r && vm->track_dirty && !(dirty = dirty_bitmap(vm, err, errlen)))
		r = -EIO;
	if (!r) {
		snap_progress_phase(vm->progress, "writing memory",
				    diff ? snap_pages_bytes(dirty, vm->mem.ram_size)
					 : vm->mem.ram_size);
		r = diff ? snap_mem_write_diff(next, vm->mem.base, vm->mem.ram_size, dirty, &mh,
					       vm->progress, err, errlen)
			 : snap_mem_write_full(next, vm->mem.base, vm->mem.ram_size, &mh,
					       vm->progress, err, errlen);
	}
	free(dirty);
	snap_progress_phase(vm->progress, "committing", 0);
	struct stat st;
	if (!r && stat(next, &st) < 0)
		r = snap_err(err, errlen, -errno, "%s: %s", next, strerror(errno));
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
		return snap_err(err, errlen, -errno, "%s: cannot move the memory file into place: %s "
						 "(it is whole under %s; a restore finds it)",
			    mem_path, strerror(errno), next);
	int e = snap_sync_dir(mem_path);
	return e ? snap_err(err, errlen, e, "%s: cannot sync its folder: %s", mem_path, strerror(-e))
		 : 0;
}

