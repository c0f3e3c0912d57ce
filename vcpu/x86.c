/* Architectural vCPU state at boot: MSRs, FPU, GDT descriptors and the two
 * entry states (PVH 32-bit protected mode; Linux 64-bit long mode). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vcpu/cpuid_internal.h"
#include "vcpu/vcpu.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_APICBASE 0x1b
#define APICBASE_BSP (1u << 8)
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

#define CR0_PE 0x1ULL
#define CR0_MP 0x2ULL
#define CR0_NE 0x20ULL
#define CR0_WP 0x10000ULL
#define CR4_OSFXSR 0x200ULL
#define CR4_OSXMMEXCPT 0x400ULL
#define EFER_NXE 0x800ULL
#define CR0_ET 0x10ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

/* Without an in-kernel LAPIC there is no APIC at all: disable it in
 * IA32_APIC_BASE too, since KVM derives CPUID.1:EDX.APIC from that MSR. */
static int disable_apic(struct vcpu *v)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.e.index = MSR_IA32_APICBASE;
	m.e.data = 0xfee00000ULL | (v->index == 0 ? APICBASE_BSP : 0);
	int r = ioctl(v->fd, KVM_SET_MSRS, &m);
	return r < 0 ? -errno : r == 1 ? 0 : -EINVAL;
}

static int set_msrs(struct vcpu *v)
{
	static const struct {
		uint32_t index;
		uint64_t data;
	} boot[] = {
	    {MSR_IA32_SYSENTER_CS, 0},
	    {MSR_IA32_SYSENTER_ESP, 0},
	    {MSR_IA32_SYSENTER_EIP, 0},
	    {MSR_STAR, 0},
	    {MSR_CSTAR, 0},
	    {MSR_KERNEL_GS_BASE, 0},
	    {MSR_SYSCALL_MASK, 0},
	    {MSR_LSTAR, 0},
	    {MSR_IA32_TSC, 0},
	    /* Fast strings on, as firmware leaves it. */
	    {MSR_IA32_MISC_ENABLE, 1},
	    /* MTRRs enabled, default type write-back: no firmware sets them. */
	    {MSR_MTRR_DEF_TYPE, (1u << 11) | 6},
	};
	enum { N = sizeof(boot) / sizeof(boot[0]) };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[N];
	} msrs;
	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = N;
	for (unsigned i = 0; i < N; i++) {
		msrs.e[i].index = boot[i].index;
		msrs.e[i].data = boot[i].data;
	}
	int r = ioctl(v->fd, KVM_SET_MSRS, &msrs);
	if (r < 0)
		return -errno;
	return r == N ? 0 : -EINVAL; /* KVM returns how many it set */
}

static int set_fpu(struct vcpu *v)
{
	struct kvm_fpu fpu;
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;    /* FNINIT state */
	fpu.mxcsr = 0x1f80; /* all SSE exceptions masked */
	return ioctl(v->fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

int vcpu_init(struct vcpu *v, const struct kvm_cpuid2 *supported, unsigned nr_vcpus,
	      bool has_irqchip)
{
	size_t sz = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return -ENOMEM;
	memcpy(c, supported, sz);
	cpuid_patch(c, v->index, nr_vcpus, has_irqchip);
	int r = ioctl(v->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
	free(c);
	if (r)
		return r;
	v->has_irqchip = has_irqchip;
	if (!has_irqchip && (r = disable_apic(v)))
		return r;
	r = set_msrs(v);
	if (r)
		return r;
	return set_fpu(v);
}

/* Descriptor from flags (type, S, DPL, P in bits 0-7; AVL, L, D/B, G in
 * bits 12-15 of the 16-bit `flags`, as Firecracker writes 0xa09b). */
static uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
	return ((uint64_t)(base & 0xff000000) << 32) | ((uint64_t)(flags & 0xf0ff) << 40) |
	       ((uint64_t)(limit & 0x000f0000) << 32) | ((uint64_t)(base & 0x00ffffff) << 16) |
	       (uint64_t)(limit & 0x0000ffff);
}

void vcpu_gdt_build(uint64_t gdt[VCPU_GDT_ENTRIES], enum vcpu_mode mode)
{
	gdt[0] = 0;
	gdt[1] = gdt_entry(mode == VCPU_MODE_PVH32 ? 0xc09b : 0xa09b, 0, 0xfffff);
	gdt[2] = gdt_entry(0xc093, 0, 0xfffff);
	gdt[3] = gdt_entry(0x808b, 0, 0xfffff);
}

/* The kvm_segment KVM wants for a GDT descriptor (must match the table the
 * guest can read, or a reload of a selector changes the segment). */
static struct kvm_segment segment(uint64_t desc, uint16_t sel)
{
	return (struct kvm_segment){
	    .base = (uint32_t)(((desc >> 16) & 0xffffff) | ((desc >> 32) & 0xff000000)),
	    .limit = (uint32_t)((desc & 0xffff) | ((desc >> 32) & 0xf0000)),
	    .selector = sel,
	    .type = (desc >> 40) & 0xf,
	    .present = (desc >> 47) & 1,
	    .dpl = (desc >> 45) & 3,
	    .db = (desc >> 54) & 1,
	    .s = (desc >> 44) & 1,
	    .l = (desc >> 53) & 1,
	    .g = (desc >> 55) & 1,
	    .avl = (desc >> 52) & 1,
	    .unusable = !((desc >> 47) & 1),
	};
}

int vcpu_set_entry(struct vcpu *v, const struct vcpu_entry *e)
{
	struct kvm_sregs sregs;
	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	uint64_t gdt[VCPU_GDT_ENTRIES];
	vcpu_gdt_build(gdt, e->mode);
	struct kvm_segment code = segment(gdt[1], VCPU_SEL_CODE);
	struct kvm_segment data = segment(gdt[2], VCPU_SEL_DATA);
	struct kvm_segment tss = segment(gdt[3], VCPU_SEL_TSS);
	/* With G set the limit is in 4 KiB units; KVM wants bytes. */
	code.limit = data.limit = tss.limit = 0xffffffff;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.tr = tss;
	sregs.gdt.base = e->gdt_gpa;
	sregs.gdt.limit = VCPU_GDT_ENTRIES * 8 - 1;
	sregs.idt.base = e->idt_gpa;
	sregs.idt.limit = 7; /* one null gate: any interrupt escalates to a triple fault */

	switch (e->mode) {
	case VCPU_MODE_PVH32:
		/* PVH: protected mode, paging off (xen docs/misc/pvh.pandoc). */
		sregs.cr0 = CR0_PE | CR0_ET;
		sregs.cr3 = 0;
		sregs.cr4 = 0;
		sregs.efer = 0;
		break;
	case VCPU_MODE_LONG64:
		/* Linux 64-bit boot protocol: long mode, identity paging. */
		sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
		sregs.cr3 = e->cr3;
		sregs.cr4 = CR4_PAE;
		sregs.efer = EFER_LME | EFER_LMA;
		break;
	case VCPU_MODE_HVT64:
		/* Solo5 unikernels use SSE (x87 off, FXSR on) and NX pages. */
		sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
		sregs.cr3 = e->cr3;
		sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
		sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
		break;
	default:
		return -EINVAL;
	}
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;

	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2; /* reserved bit 1; IF clear */
	regs.rip = e->rip;
	regs.rsp = e->rsp;
	regs.rbp = e->rbp;
	regs.rsi = e->rsi;
	regs.rdi = e->rdi;
	regs.rbx = e->rbx;
	return ioctl(v->fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}
