/* Snapshots as one stream (snapshot/snapshot.h, "streams"; docs/
 * snapshots.md, "Streams"): written from a paused VM into a file
 * descriptor its controller passed over the API socket (the jailed VMM
 * never opens a socket or a path for it), and read by a fresh process
 * from stdin (its state through vm_snapshot_open_stream, its memory
 * here, in vm_build).  The records are vm_snapshot.c's, the same walk of
 * the parts as a state file's; this file adds memory and the order:
 * header, state, memory. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/snap_records.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

int vm_snapshot_stream(struct vm *vm, int fd, char *err, size_t errlen)
{
	if (!vm->paused)
		return snap_err(err, errlen, -EBUSY, "the VM must be paused first");
	uint64_t size = vm->mem.ram_size, pages = size / SNAP_PAGE;
	uint64_t *nonzero = malloc((pages + 63) / 64 * sizeof(uint64_t));
	if (!nonzero)
		return snap_err(err, errlen, -ENOMEM, "no memory for the page bitmap");
	struct snap_writer w;
	snap_progress_phase(vm->progress, "saving state", 0);
	int r = vm_snapshot_records(vm, &w, false, err, errlen);
	/* The state goes first and holds the memory's hash: one pass over
	 * RAM finds it (and which pages are not zero) before any is sent. */
	struct snap_mem_hash mh = {0, NULL};
	if (!r) {
		snap_progress_phase(vm->progress, "scanning memory", 0);
		snap_mem_scan(vm->mem.base, size, &mh, nonzero);
		r = snap_w_add(&w, TAG_MEMH, 0, &mh.sum, sizeof(mh.sum));
		if (r)
			snap_err(err, errlen, r, "cannot build the state file: %s", strerror(-r));
	}
	struct snap_stream s = {.fd = fd, .prog = vm->progress};
	if (!r) {
		snap_progress_phase(vm->progress, "sending state", 0);
		r = snap_stream_put_state(&s, &w, err, errlen);
	}
	snap_w_free(&w);
	if (!r) {
		snap_progress_phase(vm->progress, "sending memory",
				    snap_stream_mem_bytes(nonzero, size));
		r = snap_stream_put_mem(&s, vm->mem.base, size, nonzero, mh.sum, err, errlen);
	}
	free(nonzero);
	return r;
}

int vm_stream_memory(struct vm_snapshot *s, struct vm *vm, char *err, size_t errlen)
{
	const struct snap_header *h = &s->rd.h;
	uint64_t len;
	const uint64_t *sum = snap_r_find(&s->rd, TAG_MEMH, 0, &len);
	if (!sum || len != sizeof(*sum))
		return snap_err(err, errlen, -EINVAL,
			    VM_STREAM_NAME ": section MEMH (the memory's hash) is missing or "
					   "damaged");
	/* The receiver starts from zero RAM: the stream holds the pages
	 * that are not zero, read straight into it. */
	int r = gmem_init(&vm->mem, h->mem_size);
	if (r)
		return snap_err(err, errlen, vm_host_err(r), "memory: cannot map %llu MiB: %s",
			    (unsigned long long)(h->mem_size >> 20), strerror(-r));
	struct snap_mem_hash mh = {0, NULL};
	char why[SNAP_ERR_MAX];
	/* the pages that are not zero: not known until the end */
	snap_progress_phase(vm->progress, "receiving memory", 0);
	s->stream->prog = vm->progress;
	r = snap_stream_get_mem(s->stream, vm->mem.base, h->mem_size, true, &mh, why, sizeof(why));
	if (r)
		return snap_err(err, errlen, r == -EINVAL ? r : vm_host_err(r), "%s", why);
	/* The end record's hash is the pages'; the state must name it too,
	 * or state and memory are of two snapshots. */
	if (mh.sum != *sum)
		return snap_err(err, errlen, -EINVAL,
			    "stream: byte %" PRIu64 ": its memory (hash 0x%016" PRIx64
			    ") is not the memory its state file records (0x%016" PRIx64 ")",
			    s->stream->off, mh.sum, *sum);
	if (snap_mem_digest(vm->mem.base, vm->mem.ram_size) != h->mem_digest)
		return snap_err(err, errlen, -EINVAL,
			    "stream: its memory's contents differ from its state file's digest");
	/* A diff snapshot needs a base on disk, which a stream is not:
	 * the next one must be full. */
	vm->mem_terms = NULL;
	vm->mem_hash_sum = mh.sum;
	return 0;
}
