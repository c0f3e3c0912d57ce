/* Guest physical memory: the only way any part of ember touches guest RAM.
 *
 * RAM is one anonymous mapping split around the 32-bit MMIO hole
 * (0xC000_0000 .. 4 GiB): guest-physical [0, min(size, 3 GiB)) and, for
 * larger guests, [4 GiB, 4 GiB + rest).  Every access goes through
 * gmem_ptr(), which checks the whole range [gpa, gpa+len) against one
 * region without overflowing; a bad guest address yields NULL, never a
 * host pointer outside the mapping. */
#ifndef EMBER_GUEST_MEM_H
#define EMBER_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GMEM_HOLE_START 0xC0000000ULL
#define GMEM_HOLE_END 0x100000000ULL
#define GMEM_MAX_REGIONS 2

struct gmem_region {
	uint64_t gpa;  /* guest-physical start */
	uint64_t size; /* bytes */
	uint8_t *host; /* host address of gpa */
};

struct gmem {
	struct gmem_region r[GMEM_MAX_REGIONS];
	unsigned nr;
	uint64_t ram_size; /* sum of region sizes */
	uint8_t *base;	   /* the one mapping, ram_size bytes */
	/* The pages ember itself wrote since the last gmem_dirty_fetch(),
	 * one bit per page of the mapping (slot 0 then slot 1, as the
	 * mapping lays them out); NULL when not tracking.  KVM's dirty log
	 * sees only the guest's own writes. */
	_Atomic uint64_t *dirty;
};

/* Map ram_size bytes of anonymous memory (MAP_NORESERVE, untouched pages
 * cost nothing) and lay them out around the hole.  0 or -errno. */
__attribute__((warn_unused_result)) int gmem_init(struct gmem *m, uint64_t ram_size);

/* The same layout over a snapshot's memory file (fd, exactly ram_size
 * bytes): its data ranges mapped MAP_PRIVATE, so pages load lazily and
 * the guest's writes stay private (the file is never written), its holes
 * anonymous zero pages; or, with copy, read into anonymous memory (holes
 * skipped) so the file may go away.  0, -ERANGE
 * when the file's size is not ram_size, -EINVAL when it is not a regular
 * file, or -errno. */
__attribute__((warn_unused_result)) int gmem_init_file(struct gmem *m, int fd, uint64_t ram_size,
						       bool copy);

/* Unmap; safe on a zeroed or already-freed gmem. */
void gmem_free(struct gmem *m);

/* Host pointer to [gpa, gpa+len) if that range lies wholly inside one RAM
 * region, else NULL.  len 0 is refused.  Overflow-safe for any inputs. */
void *gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len);

/* Copy in/out of guest RAM; -EFAULT if any byte falls outside RAM. */
__attribute__((warn_unused_result)) int gmem_write(const struct gmem *m, uint64_t gpa,
						   const void *src, uint64_t len);
__attribute__((warn_unused_result)) int gmem_read(const struct gmem *m, uint64_t gpa, void *dst,
						  uint64_t len);

/* Dirty tracking of the monitor's own writes (devices' buffers, used
 * rings, hvt results): start (on) or stop it.  Starting allocates the
 * bitmap (pages / 8 bytes, MAP_NORESERVE), stopping frees it; call from
 * the vmm thread before the sandbox closes, or with the VM paused.  0 or
 * -errno. */
__attribute__((warn_unused_result)) int gmem_track(struct gmem *m, bool on);

/* Mark [host, host+len) — a pointer gmem_ptr() returned — as written by
 * ember.  Every write into guest RAM after boot goes through a pointer
 * its writer marks (virtio/virtqueue.c marks writable buffers as a
 * device takes them and the used ring as it fills it; the hvt frontend
 * marks the buffers a hypercall names).  Any thread; a no-op when not
 * tracking. */
void gmem_mark(const struct gmem *m, const void *host, uint64_t len);

/* OR the pages marked since the last call into out (one bit per page of
 * the mapping, KVM_GET_DIRTY_LOG's order) and clear them, atomically per
 * word: a mark made concurrently lands in this fetch or the next. */
void gmem_dirty_fetch(const struct gmem *m, uint64_t *out);

/* Highest guest-physical address + 1 that is RAM below the hole. */
uint64_t gmem_low_end(const struct gmem *m);

#endif
