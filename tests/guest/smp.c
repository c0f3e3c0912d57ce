/* Brings up every AP (INIT/SIPI through the in-kernel LAPIC); each prints
 * `cpu K checked in` (K = APIC id) and bumps a shared counter.  The BSP
 * waits a bounded time and prints `smp: N of N cpus up` (exit 0) or
 * `smp: only K of N cpus up` (exit 1).  N comes from CPUID leaf 1
 * EBX[23:16], or `cpus=N` on the command line. */
#include "lib.h"

#define LAPIC 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_ALL_BUT_SELF (3u << 18)
#define ICR_ASSERT (1u << 14)
#define ICR_PENDING (1u << 12)
#define ICR_INIT (5u << 8)
#define ICR_SIPI (6u << 8)
#define TRAMPOLINE 0x30000 /* free low RAM, below 1 MiB, 4 KiB aligned */
/* TSC cycles to wait for the APs: 1-5 s at 2-10 GHz is generous, as an AP
 * runs a few hundred emulated ring-0 instructions to check in. */
#define WAIT_CYCLES 10000000000ULL

extern char ap_tramp_start[], ap_tramp_end[]; /* ap.S */
void ap_main(void);

static volatile u32 print_lock;
static volatile u32 checked_in;

/* xchg and lock xadd only: the emulator lacks some atomics (cmpxchg16b). */
static void lock(void)
{
	while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}

static void unlock(void)
{
	__atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

static u32 apic_id(void)
{
	u32 a, b, c, d;

	cpuid(1, &a, &b, &c, &d);
	return b >> 24;
}

static void check_in(void)
{
	u32 id = apic_id();

	lock();
	kprintf("cpu %u checked in\n", id);
	unlock();
	/* Counted after printing, so the BSP cannot exit mid-line. */
	__atomic_fetch_add(&checked_in, 1, __ATOMIC_RELEASE);
}

void ap_main(void)
{
	check_in();
}

static void lapic_write(u32 reg, u32 v)
{
	*(volatile u32 *)(LAPIC + reg) = v;
}

static u32 lapic_read(u32 reg)
{
	return *(volatile u32 *)(LAPIC + reg);
}

static void send_ipi(u32 icr)
{
	lapic_write(LAPIC_ICR_HI, 0);
	lapic_write(LAPIC_ICR_LO, icr);
	for (int i = 0; i < 1000 && (lapic_read(LAPIC_ICR_LO) & ICR_PENDING); i++)
		cpu_relax();
}

int main(void)
{
	u32 a, b, c, d;
	u64 n;

	cpuid(1, &a, &b, &c, &d);
	n = (b >> 16) & 0xff;
	const char *arg = cmdline_arg("cpus");
	if (arg && parse_u64(arg, &n))
		print("smp: bad cpus= value\n");
	if (n == 0)
		n = 1;

	check_in(); /* the BSP */
	if (n > 1) {
		memcpy((void *)TRAMPOLINE, ap_tramp_start, ap_tramp_end - ap_tramp_start);
		lapic_write(LAPIC_SVR, 0x1ff); /* software-enable, spurious 0xff */
		/* The broadcast INIT-SIPI-SIPI of the MP spec; KVM needs none
		 * of its delays. */
		send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_INIT);
		send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_SIPI | (TRAMPOLINE >> 12));
		send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_SIPI | (TRAMPOLINE >> 12));
	}

	u64 start = rdtsc();
	while (__atomic_load_n(&checked_in, __ATOMIC_ACQUIRE) < n && rdtsc() - start < WAIT_CYCLES)
		cpu_relax();

	u32 k = __atomic_load_n(&checked_in, __ATOMIC_ACQUIRE);
	lock();
	if (k == n)
		kprintf("smp: %u of %lu cpus up\n", k, n);
	else if (k < n)
		kprintf("smp: only %u of %lu cpus up\n", k, n);
	else
		kprintf("smp: %u cpus up, expected %lu\n", k, n);
	unlock();
	return k == n ? 0 : 1;
}
