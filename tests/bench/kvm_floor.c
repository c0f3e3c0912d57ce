/* KVM floor: the least a monitor can do before its guest's first exit.
 * open /dev/kvm, KVM_CREATE_VM, one memory slot, KVM_CREATE_VCPU, real-mode
 * registers, KVM_RUN to the first exit (an `out` to COM1), write that byte
 * to stdout, exit.  Built static, like ember.  The slot is as large as
 * ember's default guest (64 MiB, untouched but one page) so the two pay the
 * same for it.
 *
 *   kvm_floor          the floor
 *   kvm_floor cpuid    plus KVM_GET_SUPPORTED_CPUID and KVM_SET_CPUID2, which
 *                      any monitor that boots Linux does (inline: on a nested
 *                      host each CPUID the kernel runs is an exit to L0) */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_SIZE (64UL << 20)
#define CODE_GPA 0x1000

static int fail(const char *what)
{
	perror(what);
	return 1;
}

int main(int argc, char **argv)
{
	/* 1: mov $0x3f8,%dx; mov $'h',%al; out %al,%dx; jmp 1b  (16-bit) */
	static const unsigned char code[] = {0xba, 0xf8, 0x03, 0xb0, 'h', 0xee, 0xeb, 0xf9};

	int want_cpuid = argc > 1 && strcmp(argv[1], "cpuid") == 0;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("/dev/kvm");
	struct kvm_cpuid2 *cpuid = NULL;
	if (want_cpuid) {
		enum { NENT = 256 };
		cpuid = calloc(1, sizeof(*cpuid) + NENT * sizeof(cpuid->entries[0]));
		if (!cpuid)
			return fail("calloc");
		cpuid->nent = NENT;
		if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
			return fail("KVM_GET_SUPPORTED_CPUID");
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	unsigned char *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	memcpy(mem + CODE_GPA, code, sizeof(code));
	struct kvm_userspace_memory_region reg = {.slot = 0,
						  .guest_phys_addr = 0,
						  .memory_size = MEM_SIZE,
						  .userspace_addr = (unsigned long)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &reg) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run =
	    mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap kvm_run");
	if (cpuid && ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0)
		return fail("KVM_SET_CPUID2");
	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = CODE_GPA, .rflags = 2};
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		return fail("KVM_RUN");
	if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x3f8) {
		fprintf(stderr, "kvm_floor: unexpected exit %u\n", run->exit_reason);
		return 1;
	}
	if (write(1, (char *)run + run->io.data_offset, 1) != 1)
		return fail("write");
	return 0;
}
