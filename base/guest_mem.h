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
	/* A post-copy migration's target: pages still on the source when the
	 * VM is built, so no device reads RAM at its restore (virtio's sweep
	 * waits for virtio_dev_kick, after GOGO). */
	bool partial;
	uint8_t *base;	   /* the one mapping, ram_size bytes */
	int vm_fd;	   /* the KVM VM whose slots r[i] are (gmem_kvm_attach), or -1 */
	/* Dirty tracking (gmem_log_dirty).  dirty: the pages ember itself
	 * wrote since the last gmem_dirty_fetch(), one bit per page of the
	 * mapping (slot 0 then slot 1, as the mapping lays them out); KVM's
	 * dirty log sees only the guest's own writes.  Mapped with the RAM
	 * (MAP_NORESERVE: no memory until a page is marked), so logging can
	 * start after the sandbox closes without an mmap.  all: nothing
	 * recorded the writes since the last fetch (logging was off), so the
	 * next one returns every page. */
	_Atomic uint64_t *dirty;
	_Atomic bool logging;
	bool all;
	/* Shared RAM (guest_mem_fd.c): the mapping is memfd's, MAP_SHARED,
	 * so another ember on this host can take it over.  memfd is open
	 * (and closed by gmem_free) only when shared. */
	bool shared;
	int memfd;
	/* Anonymous private RAM (gmem_init, or a file read in with copy): a
	 * page never touched is zero and holds no memory, which
	 * gmem_populated() can tell without touching it. */
	bool anon;
};

/* Map ram_size bytes of anonymous memory (MAP_NORESERVE, untouched pages
 * cost nothing) and lay them out around the hole; the dirty bitmap
 * beside it, logging off.  0 or -errno. */
__attribute__((warn_unused_result)) int gmem_init(struct gmem *m, uint64_t ram_size);

/* Which pages of anonymous RAM (m->anon) may hold data: bit i of bits
 * (KVM_GET_DIRTY_LOG's order, gmem_dirty_words() words) set for each page
 * present or swapped out, clear for one never touched (zero, no memory),
 * read from pagemap_fd (/proc/self/pagemap, opened before the sandbox)
 * without faulting any page in.  0, -EINVAL when RAM is not anonymous
 * (file-backed pages are data though absent), or -errno; bits is then
 * unspecified. */
__attribute__((warn_unused_result)) int gmem_populated(const struct gmem *m, int pagemap_fd,
						       uint64_t *bits);

/* The same layout over a snapshot's memory file (fd, exactly ram_size
 * bytes): its data ranges mapped MAP_PRIVATE, so pages load lazily and
 * the guest's writes stay private (the file is never written), its holes
 * anonymous zero pages; or, with copy, read into anonymous memory (holes
 * skipped) so the file may go away.  0, -ERANGE
 * when the file's size is not ram_size, -EINVAL when it is not a regular
 * file, or -errno. */
__attribute__((warn_unused_result)) int gmem_init_file(struct gmem *m, int fd, uint64_t ram_size,
						       bool copy);

/* Lay RAM out as one region from guest-physical 0, with no MMIO hole
 * (Solo5 hvt guests: no devices in the address space, and solo5-hvt gives
 * them flat RAM up to 4 GiB).  The mapping stays as it is, so guest
 * pages keep their host address and their place in the dirty bitmap.
 * Before gmem_kvm_attach() only.  0, -EBUSY when already attached,
 * -ERANGE when RAM would reach past 4 GiB. */
__attribute__((warn_unused_result)) int gmem_flatten(struct gmem *m);

/* gmem_init's layout over a memfd (sealed against growing and
 * shrinking) mapped MAP_SHARED, so that its fd can be handed to a new
 * ember on this host (docs/migration.md, "Same-host upgrade").  Its
 * pages are shmem's: no transparent huge pages unless shmem_enabled says
 * so, and a read of an untouched page allocates it.  0 or -errno. */
__attribute__((warn_unused_result)) int gmem_init_shared(struct gmem *m, uint64_t ram_size);

/* Whether fd is RAM another ember may hand over for m: a memfd (it takes
 * seals, and has F_SEAL_SHRINK and F_SEAL_GROW: a plain tmpfs file can
 * never get them, and without them the sender could shrink it under the
 * guest), not sealed against writes, of exactly m->ram_size bytes.  0,
 * or -EINVAL / -ERANGE (the size) / -errno with the reason in err. */
__attribute__((warn_unused_result)) int gmem_check_memfd(const struct gmem *m, int fd, char *err,
							 size_t errlen);

/* Replace m's RAM (gmem_init's, not yet attached to KVM, untouched) by
 * fd's, MAP_SHARED at the same address; m then owns fd.  Checked first
 * as gmem_check_memfd does.  0 or -errno (fd not taken). */
__attribute__((warn_unused_result)) int gmem_adopt_memfd(struct gmem *m, int fd, char *err,
							 size_t errlen);

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

/* Register r[i] as KVM memory slot i of vm_fd (KVM API §4.35), with
 * KVM_MEM_LOG_DIRTY_PAGES when log.  Before KVM_CREATE_IRQCHIP: the other
 * order costs 7 ms on these hosts.  With log, tracking starts here: the
 * memory as it is now (a fresh boot's, a restored snapshot's) is the base
 * the first gmem_dirty_fetch() counts from.  0 or -errno. */
__attribute__((warn_unused_result)) int gmem_kvm_attach(struct gmem *m, int vm_fd, bool log);

/* Switch dirty logging on or off at run time: each slot again with the
 * same slot, address and size, only KVM_MEM_LOG_DIRTY_PAGES changed (KVM
 * API §4.35: the flags of an existing slot may change), and ember's own
 * marks with it.  Allocates nothing.  The vmm thread, with the VM running
 * or paused.  Turned on, there is no base yet: the first fetch returns
 * every page, as a migration's first pass copies all of RAM.  On an
 * ioctl's failure the slots are put back as they were.  0 or -errno. */
__attribute__((warn_unused_result)) int gmem_log_dirty(struct gmem *m, bool on);

/* Mark [host, host+len) — a pointer gmem_ptr() returned — as written by
 * ember.  Every write into guest RAM after boot goes through a pointer
 * its writer marks (virtio/virtqueue.c marks writable buffers as a
 * device takes them and the used ring as it fills it; the hvt frontend
 * marks the buffers a hypercall names).  Any thread; one load and a
 * return while logging is off. */
void gmem_mark(const struct gmem *m, const void *host, uint64_t len);

/* Words (uint64_t) of a dirty bitmap over the mapping: one bit per page. */
uint64_t gmem_dirty_words(const struct gmem *m);

/* The pages dirtied since the last call, into out (gmem_dirty_words()
 * words, overwritten): bit i of out[i / 64] is page i of the mapping
 * (KVM_GET_DIRTY_LOG's order, slot 0 then slot 1), the bits past the last
 * page clear.  KVM's log of every slot (the guest's writes) and ember's
 * marks, each cleared as it is handed over; a mark made concurrently
 * lands in this fetch or the next.  Every page when logging is off, and
 * on the first fetch after gmem_log_dirty() turned it on.  The vmm
 * thread.  0, or -errno from KVM_GET_DIRTY_LOG: then out is not to be
 * used and the next fetch returns every page (a slot's log may be
 * spent). */
__attribute__((warn_unused_result)) int gmem_dirty_fetch(struct gmem *m, uint64_t *out);

/* Highest guest-physical address + 1 that is RAM below the hole. */
uint64_t gmem_low_end(const struct gmem *m);

#endif
