/* One vCPU's snapshot record: what KVM holds for it, saved with GET
 * ioctls only (after the sandbox drop) and loaded into a fresh vCPU in
 * the order KVM needs (KVM API §4: KVM_SET_SREGS, _LAPIC, _MSRS,
 * _VCPU_EVENTS; Firecracker's vcpu restore_state). */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vcpu/vcpu.h"

_Static_assert(sizeof(struct vcpu_state) == 10272, "vcpu_state is a snapshot record");
_Static_assert(offsetof(struct vcpu_state, msrs) % 8 == 0, "msrs aligned");

#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_KVM_WALL_CLOCK_NEW 0x4b564d00
#define MSR_KVM_ASYNC_PF_EN 0x4b564d02
#define MSR_KVM_PV_EOI_EN 0x4b564d04
#define MSR_KVM_ASYNC_PF_INT 0x4b564d06

/* KVM takes fewer than 256 MSRs an ioctl (MAX_IO_MSRS). */
#define MSR_CHUNK 128

/* MSRs a running guest's kernel writes that KVM_GET_MSR_INDEX_LIST may
 * leave out (it lists no MTRRs; TSC_AUX only with RDTSCP, ...): ranges,
 * merged with KVM's list; those KVM then refuses are dropped at save. */
static const struct {
	uint32_t first, count;
} arch_msrs[] = {
    {MSR_IA32_TSC, 1},		 /* the guest's TSC goes on from where it was */
    {0x1a0, 1},			 /* IA32_MISC_ENABLE */
    {0x174, 3},			 /* IA32_SYSENTER_CS, _ESP, _EIP */
    {0x277, 1},			 /* IA32_PAT */
    {0x2ff, 1},			 /* IA32_MTRR_DEF_TYPE */
    {0x250, 1},			 /* IA32_MTRR_FIX64K_00000 */
    {0x258, 2},			 /* IA32_MTRR_FIX16K_80000, _A0000 */
    {0x268, 8},			 /* IA32_MTRR_FIX4K_C0000 .. _F8000 */
    {0x200, 16},		 /* IA32_MTRR_PHYSBASE0/PHYSMASK0 .. 7 (KVM has 8) */
    {0xc0000081, 4},		 /* STAR, LSTAR, CSTAR, SYSCALL_MASK (FMASK) */
    {0xc0000102, 2},		 /* KERNEL_GS_BASE, TSC_AUX */
    {MSR_KVM_WALL_CLOCK_NEW, 5}, /* kvmclock, ASYNC_PF_EN, STEAL_TIME, PV_EOI_EN */
    {MSR_KVM_ASYNC_PF_INT, 1},	 /* async page faults as interrupts */
    {0x11, 2},			 /* KVM_WALL_CLOCK, KVM_SYSTEM_TIME (the old ones) */
    {MSR_IA32_TSC_DEADLINE, 1},	 /* restored last: see vcpu_restore_state */
};

/* Listed by KVM but not guest state ember keeps: Hyper-V's synthetic
 * MSRs (ember offers no Hyper-V CPUID), the VMX capability MSRs (read
 * only, derived from CPUID; nested state is not snapshotted). */
static bool skipped(uint32_t msr)
{
	return (msr >= 0x40000000 && msr <= 0x400001ff) || (msr >= 0x480 && msr <= 0x491);
}

/* MSRs that only mean something to an in-kernel LAPIC: KVM reads them
 * without one but refuses to write them (ASYNC_PF_INT), so a VM without
 * an irqchip leaves them out. */
static bool lapic_only(uint32_t msr)
{
	return msr == MSR_IA32_TSC_DEADLINE || msr == MSR_KVM_ASYNC_PF_EN ||
	       msr == MSR_KVM_PV_EOI_EN || msr == MSR_KVM_ASYNC_PF_INT;
}

/* The registration-style table vcpu_state_init() fills before the jail
 * closes; read-only afterwards. */
static struct {
	bool ready;
	unsigned nr;
	uint32_t index[VCPU_STATE_MAX_MSRS];
	int xsave_size; /* KVM_CAP_XSAVE2, or 0 where KVM predates it */
} msr_table;

static int add_msr(uint32_t msr)
{
	if (skipped(msr))
		return 0;
	for (unsigned i = 0; i < msr_table.nr; i++)
		if (msr_table.index[i] == msr)
			return 0;
	if (msr_table.nr == VCPU_STATE_MAX_MSRS)
		return -E2BIG;
	msr_table.index[msr_table.nr++] = msr;
	return 0;
}

int vcpu_state_init(int kvm_fd)
{
	if (msr_table.ready)
		return 0;
	enum { MAX_LIST = 1024 };
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + MAX_LIST * sizeof(l->indices[0]));
	if (!l)
		return -ENOMEM;
	l->nmsrs = MAX_LIST;
	int r = ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0 ? -errno : 0;
	msr_table.nr = 0;
	for (unsigned i = 0; !r && i < l->nmsrs; i++)
		r = add_msr(l->indices[i]);
	free(l);
	for (size_t i = 0; !r && i < sizeof(arch_msrs) / sizeof(arch_msrs[0]); i++)
		for (uint32_t j = 0; !r && j < arch_msrs[i].count; j++)
			r = add_msr(arch_msrs[i].first + j);
	if (r)
		return r;
	int x = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	msr_table.xsave_size = x > 0 ? x : 0;
	msr_table.ready = true;
	return 0;
}

struct msr_buf {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[MSR_CHUNK];
};

/* KVM_GET_MSRS stops at the first MSR it refuses and returns how many it
 * read: keep those, skip the refused one, go on. */
static int save_msrs(struct vcpu *v, bool has_irqchip, struct vcpu_state *s)
{
	uint32_t want[VCPU_STATE_MAX_MSRS];
	unsigned n = 0;
	for (unsigned i = 0; i < msr_table.nr; i++)
		if (has_irqchip || !lapic_only(msr_table.index[i]))
			want[n++] = msr_table.index[i];
	struct msr_buf m;
	unsigned i = 0;
	s->nr_msrs = 0;
	while (i < n) {
		unsigned c = n - i < MSR_CHUNK ? n - i : MSR_CHUNK;
		memset(&m, 0, sizeof(m));
		m.hdr.nmsrs = c;
		for (unsigned j = 0; j < c; j++)
			m.e[j].index = want[i + j];
		int r = ioctl(v->fd, KVM_GET_MSRS, &m);
		if (r < 0)
			return -errno;
		memcpy(&s->msrs[s->nr_msrs], m.e, (size_t)r * sizeof(m.e[0]));
		s->nr_msrs += (unsigned)r;
		i += (unsigned)r + ((unsigned)r < c); /* past the refused one */
	}
	return 0;
}

/* Set the record's MSRs whose index is (deadline) or is not (!deadline)
 * IA32_TSC_DEADLINE.  KVM_SET_MSRS returns how many it set. */
static int set_msrs(struct vcpu *v, const struct vcpu_state *s, bool deadline)
{
	struct msr_buf m;
	unsigned i = 0;
	if (s->nr_msrs > VCPU_STATE_MAX_MSRS)
		return -EINVAL;
	while (i < s->nr_msrs) {
		memset(&m, 0, sizeof(m));
		unsigned c = 0;
		for (; i < s->nr_msrs && c < MSR_CHUNK; i++)
			if ((s->msrs[i].index == MSR_IA32_TSC_DEADLINE) == deadline)
				m.e[c++] = s->msrs[i];
		if (!c)
			break;
		m.hdr.nmsrs = c;
		int r = ioctl(v->fd, KVM_SET_MSRS, &m);
		if (r < 0)
			return -errno;
		if ((unsigned)r != c)
			return -EINVAL; /* m.e[r] was refused */
	}
	return 0;
}

int vcpu_save_state(struct vcpu *v, bool has_irqchip, struct vcpu_state *s)
{
	memset(s, 0, sizeof(*s));
	if (!msr_table.ready)
		return -ENODATA;
	/* A larger area (AMX tiles) does not fit struct kvm_xsave: refuse
	 * rather than save a truncated state (KVM_GET_XSAVE would fail). */
	if (msr_table.xsave_size > (int)sizeof(s->xsave))
		return -E2BIG;
	/* KVM_GET_MP_STATE first: it may accept pending INIT/SIPI events and
	 * change the LAPIC and registers the later calls read.  Events last:
	 * the other GETs may still settle an event. */
	if (ioctl(v->fd, KVM_GET_MP_STATE, &s->mp_state) < 0 ||
	    ioctl(v->fd, KVM_GET_REGS, &s->regs) < 0 ||
	    ioctl(v->fd, KVM_GET_SREGS, &s->sregs) < 0 ||
	    ioctl(v->fd, KVM_GET_XSAVE, &s->xsave) < 0 ||
	    ioctl(v->fd, KVM_GET_XCRS, &s->xcrs) < 0 ||
	    ioctl(v->fd, KVM_GET_DEBUGREGS, &s->debugregs) < 0)
		return -errno;
	if (has_irqchip) {
		if (ioctl(v->fd, KVM_GET_LAPIC, &s->lapic) < 0)
			return -errno;
		s->flags |= VCPU_STATE_LAPIC;
	}
	int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	s->tsc_khz = khz > 0 ? (uint32_t)khz : 0;
	int r = save_msrs(v, has_irqchip, s);
	if (r)
		return r;
	return ioctl(v->fd, KVM_GET_VCPU_EVENTS, &s->events) < 0 ? -errno : 0;
}

/* Same frequency within 250 ppm (as Firecracker and QEMU: calibration
 * differs from boot to boot), else ask KVM to scale the guest's TSC. */
static int restore_tsc_khz(struct vcpu *v, uint32_t want)
{
	int now = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (!want || now <= 0)
		return 0;
	uint64_t diff = (uint64_t)now > want ? (uint64_t)now - want : want - (uint64_t)now;
	if (diff * 1000000 <= (uint64_t)want * 250)
		return 0;
	return ioctl(v->fd, KVM_SET_TSC_KHZ, (unsigned long)want) < 0 ? -ENOTSUP : 0;
}

int vcpu_restore_state(struct vcpu *v, bool has_irqchip, const struct vcpu_state *s)
{
	if (!(s->flags & VCPU_STATE_LAPIC) != !has_irqchip || s->nr_msrs > VCPU_STATE_MAX_MSRS)
		return -EINVAL;
	int r = restore_tsc_khz(v, s->tsc_khz);
	if (r)
		return r;
	/* mp_state before the events (a latched INIT in them would make
	 * KVM refuse an INIT_RECEIVED state); KVM accepts RUNNABLE without
	 * an irqchip. */
	if (ioctl(v->fd, KVM_SET_MP_STATE, &s->mp_state) < 0)
		return -errno;
	if (ioctl(v->fd, KVM_SET_REGS, &s->regs) < 0)
		return -errno;
	/* sregs carry IA32_APIC_BASE: before the LAPIC, whose registers KVM
	 * reads in the mode (xAPIC or x2APIC) that base selects. */
	if (ioctl(v->fd, KVM_SET_SREGS, &s->sregs) < 0)
		return -errno;
	if (ioctl(v->fd, KVM_SET_XSAVE, &s->xsave) < 0 ||
	    ioctl(v->fd, KVM_SET_XCRS, &s->xcrs) < 0 ||
	    ioctl(v->fd, KVM_SET_DEBUGREGS, &s->debugregs) < 0)
		return -errno;
	if (has_irqchip && ioctl(v->fd, KVM_SET_LAPIC, &s->lapic) < 0)
		return -errno;
	/* After the LAPIC: KVM drops a TSC deadline unless the LAPIC timer is
	 * in deadline mode; and the deadline after IA32_TSC, which KVM reads
	 * to arm the timer. */
	r = set_msrs(v, s, false);
	if (!r)
		r = set_msrs(v, s, true);
	if (r)
		return r;
	/* Last: SET_REGS and SET_SREGS clear a pending exception.  (GET
	 * marks the pending NMI valid, so SET takes it as saved.) */
	return ioctl(v->fd, KVM_SET_VCPU_EVENTS, &s->events) < 0 ? -errno : 0;
}

int vcpu_get_cpuid(struct vcpu *v, struct kvm_cpuid2 **out)
{
	enum { MAX_ENTRIES = 256 };
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + MAX_ENTRIES * sizeof(c->entries[0]));
	if (!c)
		return -ENOMEM;
	c->nent = MAX_ENTRIES;
	if (ioctl(v->fd, KVM_GET_CPUID2, c) < 0) {
		int e = -errno;
		free(c);
		return e;
	}
	*out = c;
	return 0;
}
