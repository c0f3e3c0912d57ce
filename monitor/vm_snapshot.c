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
#include "snapshot/snapshot.h"

#define TAG_CONF SNAP_TAG('C', 'O', 'N', 'F')
#define TAG_CPID SNAP_TAG('C', 'P', 'I', 'D')
#define TAG_KVMS SNAP_TAG('K', 'V', 'M', 'S')
#define TAG_VCPU SNAP_TAG('V', 'C', 'P', 'U')
#define TAG_UART SNAP_TAG('U', 'A', 'R', 'T')
#define TAG_VDEV SNAP_TAG('V', 'D', 'E', 'V')
#define TAG_VDVX SNAP_TAG('V', 'D', 'V', 'X')
#define TAG_HVTG SNAP_TAG('H', 'V', 'T', 'G')
#define TAG_MEMF SNAP_TAG('M', 'E', 'M', 'F')

/* Which file the snapshot's memory was written to: after a crash between
 * the state file's commit and the memory file's rename, "<mem>.next" is
 * recognised by this, exactly (a memory digest samples pages, and two
 * snapshots of one VM may differ only in pages it does not sample). */
struct memfile_id {
	uint64_t dev, ino;
};

#define DEV_RECORD_MAX 4096

/* What a restore of a Solo5 hvt guest needs besides its memory. */
struct hvt_record {
	struct hvt_manifest mft;
	uint64_t mem_size, kernel_end;
};

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

/* FNV-1a over the CPUID entries: the header's signature. */
static uint64_t cpuid_sig(const struct kvm_cpuid2 *c)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	const uint8_t *p = (const uint8_t *)c->entries;
	for (size_t i = 0; i < c->nent * sizeof(c->entries[0]); i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static size_t cpuid_bytes(const struct kvm_cpuid2 *c)
{
	return sizeof(*c) + c->nent * sizeof(c->entries[0]);
}

/* ---- the configuration: struct vm_config is mostly unused path
 * buffers (zeros), so CONF holds it with its zero runs squeezed out:
 * pairs of {u32 literal bytes, u32 zero bytes} each followed by the
 * literal bytes.  110 KiB become a few hundred bytes, which the CRC and
 * every restore read. ---- */

static size_t squeeze(const uint8_t *in, size_t len, uint8_t *out)
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

/* 0, or -EINVAL when in is not a squeezed blob of exactly len bytes. */
static int unsqueeze(const uint8_t *in, size_t inlen, uint8_t *out, size_t len)
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

/* ---- create ---- */

/* The dirty pages since the last call, as one bitmap over the RAM
 * mapping (slot 0 then slot 1, as the mapping lays them out).  KVM
 * clears its log as it hands it over.  NULL with err set on failure. */
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
	return bm;
}

static int add_devices(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	struct uart_state us;
	uart_save(&vm->com1, &us);
	int r = snap_w_add(w, TAG_UART, 0, &us, sizeof(us));
	struct virtio_dev *d;
	static uint8_t rec[DEV_RECORD_MAX]; /* vmm thread only */
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
		size_t n = squeeze((const uint8_t *)vm->cfg, sizeof(*vm->cfg), conf);
		r = snap_w_add(w, TAG_CONF, 0, conf, n);
	}
	return r ? fail(err, errlen, r, "cannot build the state file: %s", strerror(-r)) : 0;
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
	if (snprintf(next, sizeof(next), "%s.next", mem_path) >= (int)sizeof(next))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", mem_path);

	struct snap_header h = {
	    .nr_vcpus = vm->nr_vcpus,
	    .flags = diff ? SNAP_F_DIFF : 0,
	    .mem_size = vm->mem.ram_size,
	    .mem_digest = snap_mem_digest(vm->mem.base, vm->mem.ram_size),
	    .cpuid_sig = cpuid_sig(vm->guest_cpuid),
	};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	h.created_ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
	struct snap_writer w;
	snap_w_init(&w, &h);
	/* Devices first (they are quiet: the vCPUs are parked and the vmm
	 * thread is here), then vCPUs and the VM, then memory. */
	int r = add_devices(vm, &w, err, errlen);
	if (!r)
		r = add_machine(vm, &w, err, errlen);

	/* Tracking on: every snapshot resets the log, so a diff holds the
	 * pages since the previous snapshot, full or diff. */
	uint64_t *dirty = NULL;
	if (!r && vm->track_dirty && !(dirty = dirty_bitmap(vm, err, errlen)))
		r = -EIO;
	if (!r)
		r = diff ? snap_mem_write_diff(next, vm->mem.base, vm->mem.ram_size, dirty, err,
					       errlen)
			 : snap_mem_write_full(next, vm->mem.base, vm->mem.ram_size, err, errlen);
	free(dirty);
	struct stat st;
	if (!r && stat(next, &st) < 0)
		r = fail(err, errlen, -errno, "%s: %s", next, strerror(errno));
	if (!r) {
		struct memfile_id id = {(uint64_t)st.st_dev, (uint64_t)st.st_ino};
		r = snap_w_add(&w, TAG_MEMF, 0, &id, sizeof(id));
	}
	if (!r)
		r = snap_w_commit(&w, state_path, err, errlen);
	snap_w_free(&w);
	if (r) {
		unlink(next);
		return r;
	}
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

int vm_snapshot_config(const char *state_path, struct vm_config *cfg, char *err, size_t errlen)
{
	drop_kept();
	int r = snap_r_open(&kept.rd, state_path, err, errlen);
	if (r)
		return r;
	uint64_t len;
	const void *c = snap_r_find(&kept.rd, TAG_CONF, 0, &len);
	if (!c || unsqueeze(c, len, (uint8_t *)cfg, sizeof(*cfg))) {
		snap_r_close(&kept.rd);
		return fail(err, errlen, -EINVAL,
			    "%s: no configuration of this ember's layout in the snapshot", state_path);
	}
	kept.open = snprintf(kept.path, sizeof(kept.path), "%s", state_path) < (int)sizeof(kept.path);
	if (!kept.open)
		snap_r_close(&kept.rd);
	return 0;
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

/* Map (or read) the memory file and check it is this snapshot's. */
static bool is_file(const char *path, const struct memfile_id *id)
{
	struct stat st;
	return id && stat(path, &st) == 0 && (uint64_t)st.st_dev == id->dev &&
	       (uint64_t)st.st_ino == id->ino;
}

int vm_restore_memory(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_restore *rs = vm->restore;
	char next[PATH_MAX];
	snprintf(next, sizeof(next), "%s.next", rs->mem_path);
	uint64_t len;
	const struct memfile_id *id = snap_r_find(vm->snap, TAG_MEMF, 0, &len);
	if (id && len != sizeof(*id))
		id = NULL;
	/* A crash after the state file's commit left this snapshot's memory
	 * under "<mem>.next": finish the snapshot's last step. */
	if (is_file(next, id) && rename(next, rs->mem_path) < 0)
		return fail(err, errlen, EXIT_HOST, "%s: cannot move it to %s: %s", next,
			    rs->mem_path, strerror(errno));
	int fd = open(rs->mem_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, EXIT_CONFIG, "memory file %s: %s", rs->mem_path,
			    strerror(errno));
	int r = gmem_init_file(&vm->mem, fd, vm->snap->h.mem_size, rs->copy_mem);
	close(fd);
	if (r == -ERANGE)
		return fail(err, errlen, EXIT_CONFIG,
			    "memory file %s: its size is not the snapshot's %llu bytes", rs->mem_path,
			    (unsigned long long)vm->snap->h.mem_size);
	if (r)
		return fail(err, errlen, EXIT_HOST, "memory file %s: %s", rs->mem_path,
			    strerror(-r));
	/* The file the snapshot wrote, or a copy of it (another inode): the
	 * digest must match either way. */
	if (snap_mem_digest(vm->mem.base, vm->mem.ram_size) == vm->snap->h.mem_digest)
		return 0;
	gmem_free(&vm->mem);
	return fail(err, errlen, EXIT_CONFIG,
		    "memory file %s does not belong to state file %s (its contents differ from "
		    "the snapshot's)%s",
		    rs->mem_path, rs->state_path,
		    vm->snap->h.flags & SNAP_F_DIFF
			? "; this is a diff snapshot: merge its memory file into the base first "
			  "(ember snapshot merge BASE DIFF) and load the base"
			: "");
}

/* The CPUID the guest had, if this host can give it; set on every vCPU
 * by create_vcpus (vm.c) in place of the host's. */
int vm_restore_cpuid(struct vm *vm, const struct kvm_cpuid2 *host, char *err, size_t errlen)
{
	uint64_t len;
	const struct kvm_cpuid2 *c = snap_r_find(vm->snap, TAG_CPID, 0, &len);
	if (!c || len < sizeof(*c) || len != cpuid_bytes(c) || cpuid_sig(c) != vm->snap->h.cpuid_sig)
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
	memset(g, 0, sizeof(*g));
	g->mft = h->mft;
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
