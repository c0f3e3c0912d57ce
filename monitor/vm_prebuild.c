/* The pieces of a VM made before its configuration is known (vm.h,
 * struct vm_prebuilt): what InstanceStart would otherwise pay for after
 * the request came (measured here: KVM_CREATE_VM ~0.1-0.3 ms, KVM_CREATE_VCPU
 * and its kvm_run mapping ~0.2-0.5 ms on these nested hosts). */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "monitor/vm.h"

int vm_prebuild(struct vm_prebuilt *p, const char *cpuid_cache)
{
	*p = (struct vm_prebuilt){.kvm_fd = -1, .vm_fd = -1, .vcpu0_fd = -1};
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return -errno;
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		close(kvm);
		return -EPROTONOSUPPORT; /* vm_build() says so, with the versions */
	}
	p->kvm_fd = kvm;
	int r = vcpu_supported_cpuid_cached(kvm, cpuid_cache, &p->cpuid, &p->cpuid_hit);
	if (r)
		p->cpuid = NULL;
	int e = vcpu_state_init(kvm);
	r = r ? r : e;
	int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz <= 0)
		return r ? r : -errno;
	p->run_size = (size_t)sz;
	p->vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	if (p->vm_fd < 0)
		return r ? r : -errno;
	e = vcpu_open(p->vm_fd, 0, p->run_size, &p->vcpu0_fd, &p->vcpu0_run);
	return r ? r : e;
}

void vm_prebuilt_free(struct vm_prebuilt *p)
{
	if (p->vcpu0_fd >= 0) {
		munmap(p->vcpu0_run, p->run_size);
		close(p->vcpu0_fd);
	}
	if (p->vm_fd >= 0)
		close(p->vm_fd);
	if (p->kvm_fd >= 0)
		close(p->kvm_fd);
	free(p->cpuid);
	*p = (struct vm_prebuilt){.kvm_fd = -1, .vm_fd = -1, .vcpu0_fd = -1};
}
