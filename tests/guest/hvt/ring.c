/* The guest's side of Solo5's ring I/O (hvt_ring.h, as Solo5's
 * bindings/hvt/net.c uses it): entries in, commits out, and a kick on
 * port 0x600 only when the monitor says it sleeps (needs_kick).  Linked
 * into net.hvt. */
#include "hvt_guest.h"

#define MASK (HVT_RING_SIZE - 1)

static volatile struct hvt_ring *ring;
static u32 next_id;

/* The store-load barrier of hvt_ring.h's protocol (its hvt_mb(): mfence). */
static inline void full_barrier(void)
{
	__asm__ volatile("mfence" ::: "memory");
}

static inline void compiler_barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

static inline void relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* A second of TSC, or (no frequency) a large count. */
static u64 one_second(void)
{
	return hvt_bi->cpu_cycle_freq ? hvt_bi->cpu_cycle_freq : 1ULL << 32;
}

int ring_accept(void)
{
	struct hvt_boot_info *bi = (struct hvt_boot_info *)hvt_bi;
	if (!(bi->host_features & HVT_FEATURE_RING_IO) || !bi->net_ring)
		return -1;
	ring = (volatile struct hvt_ring *)(uintptr_t)bi->net_ring;
	bi->guest_features |= HVT_FEATURE_RING_IO;
	return 0;
}

void ring_submit(u32 op, u32 handle, u64 data, u32 len)
{
	if (ring->ent_tail - ring->ent_head >= HVT_RING_SIZE - 1) {
		u64 t0 = rdtsc();
		while (ring->ent_tail - ring->ent_head >= HVT_RING_SIZE - 1 &&
		       rdtsc() - t0 < one_second())
			relax();
	}
	volatile struct hvt_ring_entry *e = &ring->entries[ring->ent_tail & MASK];
	e->operation = op;
	e->handle = handle;
	e->data = data;
	e->len = len;
	e->id = next_id++;
	compiler_barrier(); /* the entry before the index (x86 keeps stores in order) */
	ring->ent_tail = ring->ent_tail + 1;
	full_barrier(); /* our ent_tail visible before we read needs_kick */
	if (ring->needs_kick)
		__asm__ volatile("outl %0, %1"
				 :
				 : "a"(0u), "d"((u16)HVT_RING_KICK_PORT)
				 : "memory");
}

void ring_write(u32 handle, u64 data, u32 len)
{
	ring_submit(HVT_RING_NET_WRITE, handle, data, len);
}

int ring_read(u32 handle, u64 data, u64 *len)
{
	ring_submit(HVT_RING_NET_READ, handle, data, (u32)*len);
	u64 t0 = rdtsc();
	while (ring->com_head == ring->com_tail)
		if (rdtsc() - t0 > one_second())
			return -1;
	compiler_barrier();
	volatile struct hvt_ring_commit *c = &ring->commits[ring->com_head & MASK];
	int ret = c->ret;
	*len = c->len;
	ring->com_head = ring->com_head + 1;
	return ret;
}

int ring_drain(void)
{
	u64 t0 = rdtsc();
	while (ring->ent_head != ring->ent_tail)
		if (rdtsc() - t0 > one_second())
			return -1;
	return 0;
}
