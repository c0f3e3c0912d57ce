/* Private to vcpu/. */
#ifndef EMBER_VCPU_CPUID_INTERNAL_H
#define EMBER_VCPU_CPUID_INTERNAL_H

#include <linux/kvm.h>
#include <stdbool.h>

/* Patch a copy of the supported CPUID for vCPU `index` of nr_vcpus. */
void cpuid_patch(struct kvm_cpuid2 *c, unsigned index, unsigned nr_vcpus, bool has_irqchip);

#endif
