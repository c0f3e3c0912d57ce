/* An hvt guest's page tables, with the protections of its ELF segments
 * (solo5-hvt mprotect()s its host mapping of each PT_LOAD segment as the
 * segment's flags say: code R-X, rodata R--, data RW-; ember sets the
 * same in the guest's own page tables, with NX, which also stops a jump
 * into data: host PROT_EXEC means nothing to KVM), and what a fault on a
 * protected page was. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

#include "monitor/hvt/hvt.h"

/* x86-64 paging entries (Intel SDM vol. 3, 4.5) */
#define PTE_P 0x1ULL
#define PTE_W 0x2ULL
#define PTE_PS 0x80ULL
#define PTE_NX (1ULL << 63)
#define PTE_ADDR 0x000ffffffffff000ULL

#define PG_W 1u /* writable */
#define PG_X 2u /* executable */

/* The protection of the 4 KiB page at gpa: the union of the segments it
 * holds part of; writable and executable when it holds none. */
static unsigned page_prot(const struct hvt_seg *seg, unsigned nr, uint64_t gpa)
{
	unsigned prot = 0;
	bool any = false;
	for (unsigned i = 0; i < nr; i++) {
		if (gpa + 4096 <= seg[i].gpa || gpa >= seg[i].gpa + seg[i].size)
			continue;
		any = true;
		prot |= (seg[i].flags & HVT_PF_W ? PG_W : 0) | (seg[i].flags & HVT_PF_X ? PG_X : 0);
	}
	return any ? prot : PG_W | PG_X;
}

static uint64_t prot_bits(unsigned prot)
{
	return (prot & PG_W ? PTE_W : 0) | (prot & PG_X ? 0 : PTE_NX);
}

int hvt_page_tables(const struct gmem *m, uint64_t mem_size, const struct hvt_seg *seg,
		    unsigned nr_seg)
{
	uint64_t *pml4 = gmem_ptr(m, HVT_PML4, 4096);
	uint64_t *pdpt = gmem_ptr(m, HVT_PDPT, 4096);
	uint64_t *pd = gmem_ptr(m, HVT_PD, 4 * 4096);
	uint64_t *pt = gmem_ptr(m, HVT_PT, HVT_NR_PT * 4096);
	if (!pml4 || !pdpt || !pd || !pt || mem_size > HVT_MAX_MEM || mem_size < HVT_PAGE)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	memset(pd, 0, 4 * 4096);
	memset(pt, 0, HVT_NR_PT * 4096);
	uint64_t seg_end = 0;
	for (unsigned i = 0; i < nr_seg; i++)
		if (seg[i].gpa + seg[i].size > seg_end)
			seg_end = seg[i].gpa + seg[i].size;
	/* Upper levels allow everything; the leaf entry decides. */
	pml4[0] = HVT_PDPT | PTE_P | PTE_W;
	for (uint64_t g = 0; g < 4; g++)
		pdpt[g] = (HVT_PD + g * 4096) | PTE_P | PTE_W;
	unsigned used = 0;
	for (uint64_t i = 0; i < mem_size / HVT_PAGE; i++) {
		uint64_t base = i * HVT_PAGE;
		unsigned first = page_prot(seg, nr_seg, base);
		bool uniform = i > 0; /* the first 2 MiB: the low 64 KiB unmapped */
		for (uint64_t a = base + 4096; uniform && a < base + HVT_PAGE && a < seg_end;
		     a += 4096)
			uniform = page_prot(seg, nr_seg, a) == first;
		if (uniform) {
			pd[i] = base | PTE_P | PTE_PS | prot_bits(first);
			continue;
		}
		if (used == HVT_NR_PT)
			return -ENOSPC;
		uint64_t *t = pt + used * 512;
		pd[i] = (HVT_PT + used++ * 4096) | PTE_P | PTE_W;
		for (uint64_t j = 0; j < 512; j++) {
			uint64_t a = base + j * 4096;
			if (a >= HVT_LOW_UNMAPPED)
				t[j] = a | PTE_P | prot_bits(page_prot(seg, nr_seg, a));
		}
	}
	return 0;
}

/* One entry of the table at gpa `table`, or 0 when it is not in RAM. */
static uint64_t entry(const struct gmem *m, uint64_t table, unsigned index)
{
	const uint64_t *e = gmem_ptr(m, (table & PTE_ADDR) + index * 8ULL, 8);
	return e ? *e : 0;
}

const char *hvt_page_kind(const struct gmem *m, uint64_t cr3, uint64_t gva, bool *writable,
			  bool *executable)
{
	uint64_t e = cr3;
	bool w = true, x = true;
	for (int level = 3; level >= 0; level--) {
		e = entry(m, e, (unsigned)(gva >> (12 + 9 * level)) & 511);
		if (!(e & PTE_P))
			return NULL;
		w = w && (e & PTE_W);
		x = x && !(e & PTE_NX);
		if (level > 0 && level < 3 && (e & PTE_PS))
			break;
	}
	*writable = w;
	*executable = x;
	if (x && !w)
		return "its code (.text, read-only)";
	if (!x && !w)
		return "its read-only data (.rodata)";
	if (!x)
		return "its data (not executable)";
	return "writable, executable memory";
}

bool hvt_explain_shutdown(const struct hvt_guest *g, int vcpu_fd, char *msg, size_t len)
{
	struct kvm_sregs s;
	struct kvm_regs r;
	bool w, x;
	if (!g || ioctl(vcpu_fd, KVM_GET_SREGS, &s) || ioctl(vcpu_fd, KVM_GET_REGS, &r))
		return false;
	const char *kind = hvt_page_kind(g->mem, s.cr3, s.cr2, &w, &x);
	/* A fetch faults at rip (or within the instruction, which may
	 * straddle a page); any other fault on a present page is a write. */
	bool fetch = s.cr2 >= r.rip && s.cr2 - r.rip < 16;
	if (!kind || (fetch ? x : w))
		return false;
	snprintf(msg, len, "the guest %s %s at 0x%" PRIx64 " (rip 0x%" PRIx64 "); guest stopped",
		 fetch ? "executed" : "wrote to", kind, (uint64_t)s.cr2, (uint64_t)r.rip);
	return true;
}
