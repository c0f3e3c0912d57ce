/* Prints what CPUID tells the boot vCPU, so tests can check ember's
 * patching: hypervisor bit, APIC id, logical count, APIC presence, and the
 * hypervisor signature leaf (KVM's "KVMKVMKVM"). */
#include "lib.h"

int main(void)
{
	u32 a, b, c, d;
	char sig[13];

	cpuid(1, &a, &b, &c, &d);
	kprintf("cpuid: hypervisor=%u apic_id=%u count=%u apic=%u x2apic=%u\n", (c >> 31) & 1,
	        b >> 24, (b >> 16) & 0xff, (d >> 9) & 1, (c >> 21) & 1);
	cpuid(0x40000000, &a, &b, &c, &d);
	memcpy(sig, &b, 4);
	memcpy(sig + 4, &c, 4);
	memcpy(sig + 8, &d, 4);
	sig[12] = '\0';
	kprintf("cpuid: signature=%s\n", sig);
	return 0;
}
