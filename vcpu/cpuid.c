/* CPUID: what the host's KVM supports, patched per vCPU (Intel SDM vol. 2A
 * "CPUID"; KVM API §4.46 KVM_GET_SUPPORTED_CPUID). */
#include <errno.h>
#include <stdlib.h>
#include <sys/ioctl.h>

#include "vcpu/cpuid_internal.h"
#include "vcpu/vcpu.h"

#define CPUID_MAX_ENTRIES 256

int vcpu_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out)
{
	size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = calloc(1, sz);
	if (!c)
		return -ENOMEM;
	c->nent = CPUID_MAX_ENTRIES;
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		int e = -errno;
		free(c);
		return e;
	}
	*out = c;
	return 0;
}

static unsigned order_of(unsigned n)
{
	unsigned s = 0;
	while ((1u << s) < n)
		s++;
	return s;
}

void cpuid_patch(struct kvm_cpuid2 *c, unsigned index, unsigned nr_vcpus, bool has_irqchip)
{
	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			/* EBX[31:24] initial APIC id, [23:16] logical processors. */
			e->ebx = (e->ebx & 0xffff) | (index << 24) | ((nr_vcpus & 0xff) << 16);
			e->ecx |= 1u << 31; /* hypervisor present */
			if (nr_vcpus > 1)
				e->edx |= 1u << 28; /* HTT: the count above is valid */
			if (!has_irqchip) {
				/* No local APIC exists: say so, so a guest never
				 * touches 0xFEE00000 expecting one. */
				e->edx &= ~(1u << 9);  /* APIC */
				e->ecx &= ~(1u << 21); /* x2APIC */
				e->ecx &= ~(1u << 24); /* TSC deadline */
			}
			break;
		case 4:
			/* Cores per package - 1 in EAX[31:26] (one core a vCPU). */
			if (e->eax & 0x1f)
				e->eax = (e->eax & 0x03ffffff) | ((nr_vcpus - 1) << 26);
			break;
		case 0xb:
		case 0x1f:
			/* Extended topology: one thread per core, nr_vcpus cores. */
			e->edx = index;
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = (1u << 8) | 0; /* level 0: SMT */
			} else if (e->index == 1) {
				e->eax = order_of(nr_vcpus);
				e->ebx = nr_vcpus;
				e->ecx = (2u << 8) | 1; /* level 1: core */
			} else {
				e->eax = e->ebx = 0;
				e->ecx = e->index;
			}
			break;
		default:
			break;
		}
	}
}
