/* The VM-wide KVM state of a snapshot: the in-kernel PICs and IOAPIC,
 * the PIT, kvmclock (KVM API §4.26-27 KVM_GET/SET_IRQCHIP, §4.40-41
 * KVM_GET/SET_CLOCK, §4.67-68 KVM_GET/SET_PIT2). */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vcpu/vcpu.h"

_Static_assert(sizeof(struct vm_kvm_state) == 8 + 3 * 520 + 112 + 48,
	       "vm_kvm_state is a snapshot record");

static int get_chip(int vm_fd, uint32_t id, struct kvm_irqchip *c)
{
	c->chip_id = id;
	return ioctl(vm_fd, KVM_GET_IRQCHIP, c) < 0 ? -errno : 0;
}

int vcpu_vm_save(int vm_fd, bool has_irqchip, struct vm_kvm_state *s)
{
	memset(s, 0, sizeof(*s));
	if (has_irqchip) {
		s->has_irqchip = 1;
		int r = get_chip(vm_fd, KVM_IRQCHIP_PIC_MASTER, &s->pic_master);
		if (!r)
			r = get_chip(vm_fd, KVM_IRQCHIP_PIC_SLAVE, &s->pic_slave);
		if (!r)
			r = get_chip(vm_fd, KVM_IRQCHIP_IOAPIC, &s->ioapic);
		if (r)
			return r;
		if (ioctl(vm_fd, KVM_GET_PIT2, &s->pit) < 0)
			return -errno;
	}
	return ioctl(vm_fd, KVM_GET_CLOCK, &s->clock) < 0 ? -errno : 0;
}

int vcpu_vm_restore(int vm_fd, const struct vm_kvm_state *s)
{
	if (s->has_irqchip > 1)
		return -EINVAL;
	if (s->has_irqchip) {
		if (s->pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER ||
		    s->pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE ||
		    s->ioapic.chip_id != KVM_IRQCHIP_IOAPIC)
			return -EINVAL;
		/* The PIT reloads its counters at the time of the call (their
		 * count_load_time is the host's now), as on a real restore. */
		if (ioctl(vm_fd, KVM_SET_PIT2, &s->pit) < 0 ||
		    ioctl(vm_fd, KVM_SET_IRQCHIP, &s->pic_master) < 0 ||
		    ioctl(vm_fd, KVM_SET_IRQCHIP, &s->pic_slave) < 0 ||
		    ioctl(vm_fd, KVM_SET_IRQCHIP, &s->ioapic) < 0)
			return -errno;
	}
	/* The saved value, flags 0: with KVM_CLOCK_REALTIME KVM would advance
	 * the clock by the wall time since the save, but the restored IA32_TSC
	 * does not advance, and kernels before 5.16 refuse any flag.
	 * TSC_STABLE is KVM's report, not an input. */
	struct kvm_clock_data c = {.clock = s->clock.clock};
	return ioctl(vm_fd, KVM_SET_CLOCK, &c) < 0 ? -errno : 0;
}
