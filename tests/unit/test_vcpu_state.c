/* vCPU and VM snapshot records against real KVM: save -> restore into a
 * second, fresh VM -> save gives the same bytes (less the fields that
 * move by themselves: IA32_TSC, kvmclock, the PIT's load times), with
 * and without an irqchip; and the CPUID compatibility check. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "vcpu/vcpu.h"

#define MEM_SIZE (2u << 20)
#define CODE_GPA 0x1000
#define KVMCLOCK_GPA 0x2000
#define STACK 0x8000
#define IOAPIC_RTE4 0x0000000000010024ULL /* masked, vector 0x24 */
#define PIC_IMR 0xeb
#define PIT2_COUNT 0x1234
#define MSR_IA32_TSC 0x10
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KERNEL_GS_BASE 0xc0000102
#define APIC_TPR 0x80
#define APIC_SPIV 0xf0
#define APIC_LVT0 0x350
#define APIC_LVTT 0x320
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define DEADLINE_AHEAD (1ULL << 50) /* days of TSC ticks */

#define GS_BASE 0xffff888012345000ULL
#define RAX 0x1122334455667788ULL
#define CLOCK_NS 1000000000000ULL /* 1000 s */
#define XMM0_BYTE 0xa5
#define DR0 0x7000ULL
#define XSAVE_XMM0 160 /* XMM0 in the legacy area (SDM vol. 1 §13.4.1) */
#define XSAVE_BV 512   /* XSTATE_BV in the XSAVE header (§13.4.2) */

static int kvm_fd = -1;
static struct kvm_cpuid2 *supported;

struct tvm {
	int vm;
	uint8_t *mem;
	struct vcpu v;
	bool irqchip;
};

static int setup(void **state)
{
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		fprintf(stderr, "test_vcpu_state: /dev/kvm: %s: KVM tests skipped\n",
			strerror(errno));
		return 0;
	}
	if (vcpu_state_init(kvm_fd) || vcpu_supported_cpuid(kvm_fd, &supported))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	free(supported);
	if (kvm_fd >= 0)
		close(kvm_fd);
	return 0;
}

#define NEED_KVM()                                                                                 \
	do {                                                                                       \
		if (kvm_fd < 0)                                                                    \
			skip();                                                                    \
	} while (0)

/* As vm.c builds one: slot, TSS, irqchip + PIT, a vCPU with CPUID, MSRs
 * and FPU from vcpu_init; real mode at CODE_GPA. */
static void tvm_make(struct tvm *t, bool irqchip)
{
	memset(t, 0, sizeof(*t));
	t->irqchip = irqchip;
	t->vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	assert_true(t->vm >= 0);
	t->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(t->mem != MAP_FAILED);
	/* mov $0x42,%al; out %al,$0x10; hlt */
	static const uint8_t code[] = {0xb0, 0x42, 0xe6, 0x10, 0xf4};
	memcpy(t->mem + CODE_GPA, code, sizeof(code));
	/* Real-mode IVT: the NMI (vector 2) goes to the hlt. */
	const uint16_t nmi_vec[2] = {CODE_GPA + 4, 0};
	memcpy(t->mem + 2 * 4, nmi_vec, sizeof(nmi_vec));
	struct kvm_userspace_memory_region reg = {
	    .slot = 0,
	    .guest_phys_addr = 0,
	    .memory_size = MEM_SIZE,
	    .userspace_addr = (uint64_t)(uintptr_t)t->mem,
	};
	assert_int_equal(ioctl(t->vm, KVM_SET_USER_MEMORY_REGION, &reg), 0);
	assert_int_equal(ioctl(t->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL), 0);
	if (irqchip) {
		assert_int_equal(ioctl(t->vm, KVM_CREATE_IRQCHIP, 0), 0);
		struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
		assert_int_equal(ioctl(t->vm, KVM_CREATE_PIT2, &pit), 0);
	}
	int run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	assert_true(run_size > 0);
	assert_int_equal(vcpu_create(&t->v, t->vm, 0, (size_t)run_size), 0);
	assert_int_equal(vcpu_init(&t->v, supported, 1, irqchip), 0);
	struct kvm_sregs sregs;
	assert_int_equal(ioctl(t->v.fd, KVM_GET_SREGS, &sregs), 0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	assert_int_equal(ioctl(t->v.fd, KVM_SET_SREGS, &sregs), 0);
	struct kvm_regs regs = {.rip = CODE_GPA, .rsp = STACK, .rflags = 2};
	assert_int_equal(ioctl(t->v.fd, KVM_SET_REGS, &regs), 0);
}

static void tvm_free(struct tvm *t)
{
	vcpu_destroy(&t->v);
	close(t->vm);
	munmap(t->mem, MEM_SIZE);
}

/* Run to the guest's `out`, then finish that exit as vcpu_pause does
 * (immediate_exit) so the state is at a clean point. */
static void run_to_out(struct tvm *t)
{
	assert_int_equal(ioctl(t->v.fd, KVM_RUN, 0), 0);
	assert_int_equal(t->v.run->exit_reason, KVM_EXIT_IO);
	assert_int_equal(t->v.run->io.port, 0x10);
	t->v.run->immediate_exit = 1;
	assert_int_equal(ioctl(t->v.fd, KVM_RUN, 0), -1);
	assert_int_equal(errno, EINTR);
	t->v.run->immediate_exit = 0;
}

static void set_msr(struct vcpu *v, uint32_t index, uint64_t data)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.e.index = index;
	m.e.data = data;
	assert_int_equal(ioctl(v->fd, KVM_SET_MSRS, &m), 1);
}

static uint64_t get_msr(struct vcpu *v, uint32_t index)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.e.index = index;
	assert_int_equal(ioctl(v->fd, KVM_GET_MSRS, &m), 1);
	return m.e.data;
}

static uint32_t *lapic_reg(struct kvm_lapic_state *l, unsigned off)
{
	return (uint32_t *)(void *)&l->regs[off];
}

/* State a guest could have made, recognisable after a round trip. */
static void set_recognisable(struct tvm *t)
{
	struct kvm_regs regs;
	assert_int_equal(ioctl(t->v.fd, KVM_GET_REGS, &regs), 0);
	regs.rax = RAX;
	assert_int_equal(ioctl(t->v.fd, KVM_SET_REGS, &regs), 0);
	set_msr(&t->v, MSR_KERNEL_GS_BASE, GS_BASE);
	set_msr(&t->v, MSR_KVM_SYSTEM_TIME_NEW, KVMCLOCK_GPA | 1);
	if (t->irqchip) {
		struct kvm_lapic_state l;
		assert_int_equal(ioctl(t->v.fd, KVM_GET_LAPIC, &l), 0);
		*lapic_reg(&l, APIC_SPIV) = 0x1ff;
		*lapic_reg(&l, APIC_TPR) = 0x30;
		*lapic_reg(&l, APIC_LVT0) = 0x700;	       /* ExtINT */
		*lapic_reg(&l, APIC_LVTT) = (2u << 17) | 0xec; /* TSC-deadline mode */
		assert_int_equal(ioctl(t->v.fd, KVM_SET_LAPIC, &l), 0);
		/* A deadline far ahead: KVM keeps it only in deadline mode. */
		set_msr(&t->v, MSR_IA32_TSC_DEADLINE,
			get_msr(&t->v, MSR_IA32_TSC) + DEADLINE_AHEAD);
	}
	struct kvm_clock_data c = {.clock = CLOCK_NS};
	assert_int_equal(ioctl(t->vm, KVM_SET_CLOCK, &c), 0);

	/* SSE (XMM0 in the XSAVE area), XCR0, a debug register, a pending
	 * NMI (which SET_VCPU_EVENTS only takes when told it is valid), and
	 * with a LAPIC a halted run state. */
	static struct kvm_xsave xs;
	assert_int_equal(ioctl(t->v.fd, KVM_GET_XSAVE, &xs), 0);
	memset((uint8_t *)xs.region + XSAVE_XMM0, XMM0_BYTE, 16);
	uint64_t bv;
	memcpy(&bv, (uint8_t *)xs.region + XSAVE_BV, sizeof(bv));
	bv |= 2; /* SSE state not in its init state (else KVM reports zeros) */
	memcpy((uint8_t *)xs.region + XSAVE_BV, &bv, sizeof(bv));
	assert_int_equal(ioctl(t->v.fd, KVM_SET_XSAVE, &xs), 0);
	struct kvm_xcrs xcrs = {.nr_xcrs = 1, .xcrs = {{.xcr = 0, .value = 3}}};
	assert_int_equal(ioctl(t->v.fd, KVM_SET_XCRS, &xcrs), 0);
	struct kvm_debugregs dr;
	assert_int_equal(ioctl(t->v.fd, KVM_GET_DEBUGREGS, &dr), 0);
	dr.db[0] = DR0;
	assert_int_equal(ioctl(t->v.fd, KVM_SET_DEBUGREGS, &dr), 0);
	struct kvm_vcpu_events ev;
	assert_int_equal(ioctl(t->v.fd, KVM_GET_VCPU_EVENTS, &ev), 0);
	ev.nmi.pending = 1;
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING;
	assert_int_equal(ioctl(t->v.fd, KVM_SET_VCPU_EVENTS, &ev), 0);
	if (t->irqchip) {
		struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_HALTED};
		assert_int_equal(ioctl(t->v.fd, KVM_SET_MP_STATE, &mp), 0);
		/* An IOAPIC route and the master PIC's mask, as a guest sets. */
		struct kvm_irqchip chip = {.chip_id = KVM_IRQCHIP_IOAPIC};
		assert_int_equal(ioctl(t->vm, KVM_GET_IRQCHIP, &chip), 0);
		chip.chip.ioapic.redirtbl[4].bits = IOAPIC_RTE4;
		assert_int_equal(ioctl(t->vm, KVM_SET_IRQCHIP, &chip), 0);
		chip = (struct kvm_irqchip){.chip_id = KVM_IRQCHIP_PIC_MASTER};
		assert_int_equal(ioctl(t->vm, KVM_GET_IRQCHIP, &chip), 0);
		chip.chip.pic.imr = PIC_IMR;
		assert_int_equal(ioctl(t->vm, KVM_SET_IRQCHIP, &chip), 0);
		/* PIT channel 2 (the speaker's: gated off, so it stays put). */
		struct kvm_pit_state2 pit;
		assert_int_equal(ioctl(t->vm, KVM_GET_PIT2, &pit), 0);
		pit.channels[2].count = PIT2_COUNT;
		pit.channels[2].mode = 3;
		assert_int_equal(ioctl(t->vm, KVM_SET_PIT2, &pit), 0);
	}
}

static const struct kvm_msr_entry *find_msr(const struct vcpu_state *s, uint32_t index)
{
	for (uint32_t i = 0; i < s->nr_msrs; i++)
		if (s->msrs[i].index == index)
			return &s->msrs[i];
	return NULL;
}

/* Equal bytes, or the offset of the first difference for the log. */
static void assert_same_bytes(const void *a, const void *b, size_t n, const char *what)
{
	const uint8_t *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i]) {
			fprintf(stderr, "%s: first difference at byte %zu of %zu\n", what, i, n);
			fail();
		}
}

/* The volatile fields, checked for sanity and then copied from a so the
 * rest can be compared whole. */
static void mask_volatile(const struct vcpu_state *a, struct vcpu_state *b,
			  const struct vm_kvm_state *va, struct vm_kvm_state *vb)
{
	const struct kvm_msr_entry *ta = find_msr(a, MSR_IA32_TSC);
	struct kvm_msr_entry *tb = (struct kvm_msr_entry *)find_msr(b, MSR_IA32_TSC);
	assert_non_null(ta);
	assert_non_null(tb);
	/* The TSC went on from the saved value (seconds at most, not the
	 * host's uptime, which a lost IA32_TSC would show). */
	uint64_t khz = a->tsc_khz ? a->tsc_khz : 3000000;
	assert_true(tb->data >= ta->data);
	assert_true(tb->data - ta->data < khz * 1000 * 60);
	tb->data = ta->data;

	/* kvmclock resumed at the saved value: never backwards. */
	assert_true(vb->clock.clock >= va->clock.clock);
	assert_true(vb->clock.clock - va->clock.clock < 60ULL * 1000000000ULL);
	vb->clock = va->clock;
	for (int i = 0; i < 3; i++)
		vb->pit.channels[i].count_load_time = va->pit.channels[i].count_load_time;
}

static void round_trip(bool irqchip)
{
	struct tvm a, b;
	static struct vcpu_state sa, sb;
	struct vm_kvm_state va, vb;

	tvm_make(&a, irqchip);
	run_to_out(&a);
	set_recognisable(&a);
	assert_int_equal(vcpu_vm_save(a.vm, irqchip, &va), 0);
	assert_int_equal(vcpu_save_state(&a.v, irqchip, &sa), 0);

	/* What was saved. */
	assert_int_equal(sa.regs.rax, RAX);
	assert_int_equal(sa.regs.rip, CODE_GPA + 4); /* at the hlt */
	const struct kvm_msr_entry *gs = find_msr(&sa, MSR_KERNEL_GS_BASE);
	assert_non_null(gs);
	assert_int_equal(gs->data, GS_BASE);
	const uint32_t want[] = {
	    MSR_IA32_TSC, MSR_KVM_SYSTEM_TIME_NEW, 0x277, 0x2ff, 0x174, 0xc0000082, 0x1a0};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!find_msr(&sa, want[i])) {
			fprintf(stderr, "MSR %#x not saved\n", want[i]);
			fail();
		}
	assert_true(va.clock.clock >= CLOCK_NS);
	const uint8_t *xmm0 = (const uint8_t *)sa.xsave.region + XSAVE_XMM0;
	for (int i = 0; i < 16; i++)
		assert_int_equal(xmm0[i], XMM0_BYTE);
	assert_int_equal(sa.xcrs.nr_xcrs, 1);
	assert_int_equal(sa.xcrs.xcrs[0].value, 3);
	assert_int_equal(sa.debugregs.db[0], DR0);
	assert_int_equal(sa.events.nmi.pending, 1);
	assert_int_equal(sa.mp_state.mp_state,
			 irqchip ? KVM_MP_STATE_HALTED : KVM_MP_STATE_RUNNABLE);
	assert_int_equal(va.has_irqchip, irqchip);
	assert_int_equal(!!(sa.flags & VCPU_STATE_LAPIC), irqchip);
	if (irqchip) {
		assert_int_equal(*lapic_reg(&sa.lapic, APIC_TPR), 0x30);
		assert_int_equal(*lapic_reg(&sa.lapic, APIC_LVT0), 0x700);
		const struct kvm_msr_entry *dl = find_msr(&sa, MSR_IA32_TSC_DEADLINE);
		assert_non_null(dl);
		assert_true(dl->data > find_msr(&sa, MSR_IA32_TSC)->data);
		assert_int_equal(va.ioapic.chip_id, KVM_IRQCHIP_IOAPIC);
		assert_int_equal(va.ioapic.chip.ioapic.redirtbl[4].bits, IOAPIC_RTE4);
		assert_int_equal(va.pic_master.chip.pic.imr, PIC_IMR);
		assert_int_equal(va.pit.channels[2].count, PIT2_COUNT);
	}

	/* A fresh VM built the same way, then overlaid. */
	tvm_make(&b, irqchip);
	assert_int_equal(vcpu_vm_restore(b.vm, &va), 0);
	assert_int_equal(vcpu_restore_state(&b.v, irqchip, &sa), 0);
	assert_int_equal(vcpu_vm_save(b.vm, irqchip, &vb), 0);
	assert_int_equal(vcpu_save_state(&b.v, irqchip, &sb), 0);

	mask_volatile(&sa, &sb, &va, &vb);
	assert_same_bytes(&sa, &sb, sizeof(sa), "vcpu_state");
	assert_same_bytes(&va, &vb, sizeof(va), "vm_kvm_state");

	/* Both vCPUs hold the same CPUID.  (Not checked against the
	 * supported set: on a PVM host KVM_GET_CPUID2 answers the hardware's
	 * bits, beyond what KVM_GET_SUPPORTED_CPUID lists.) */
	struct kvm_cpuid2 *ca, *cb;
	assert_int_equal(vcpu_get_cpuid(&a.v, &ca), 0);
	assert_int_equal(vcpu_get_cpuid(&b.v, &cb), 0);
	assert_int_equal(ca->nent, cb->nent);
	assert_memory_equal(ca->entries, cb->entries, ca->nent * sizeof(ca->entries[0]));
	free(ca);
	free(cb);

	/* The restored vCPU runs: it takes the pending NMI first (FLAGS, CS
	 * and IP pushed), whose handler is the hlt.  Only without an
	 * irqchip: there HLT comes out to us, with one it would sleep. */
	if (!irqchip) {
		assert_int_equal(ioctl(b.v.fd, KVM_RUN, 0), 0);
		assert_int_equal(b.v.run->exit_reason, KVM_EXIT_HLT);
		struct kvm_regs regs;
		assert_int_equal(ioctl(b.v.fd, KVM_GET_REGS, &regs), 0);
		assert_int_equal(regs.rsp, STACK - 6);
		assert_int_equal(regs.rax, RAX);
	}
	tvm_free(&a);
	tvm_free(&b);
}

static void test_round_trip_irqchip(void **state)
{
	NEED_KVM();
	round_trip(true);
}

static void test_round_trip_no_irqchip(void **state)
{
	NEED_KVM();
	round_trip(false);
}

/* A record from an irqchip VM does not load into one without. */
static void test_restore_mismatch(void **state)
{
	NEED_KVM();
	struct tvm a, b;
	static struct vcpu_state s;
	tvm_make(&a, true);
	assert_int_equal(vcpu_save_state(&a.v, true, &s), 0);
	tvm_make(&b, false);
	assert_int_equal(vcpu_restore_state(&b.v, false, &s), -EINVAL);
	tvm_free(&a);
	tvm_free(&b);
}

/* Two-entry CPUID sets: leaf 1 and leaf 7.0. */
struct cpuid_set {
	struct kvm_cpuid2 hdr;
	struct kvm_cpuid_entry2 e[2];
};

static void cpuid_set_init(struct cpuid_set *c)
{
	memset(c, 0, sizeof(*c));
	c->hdr.nent = 2;
	c->e[0].function = 1;
	c->e[1].function = 7;
	c->e[1].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
}

static void test_cpuid_names(void **state)
{
	struct cpuid_set g, h;
	char missing[128];
	cpuid_set_init(&g);
	cpuid_set_init(&h);
	g.e[1].ebx = (1u << 16) | (1u << 29) | (1u << 3); /* avx512f, sha_ni, bmi1 */
	h.e[1].ebx = 1u << 3;
	assert_int_equal(vcpu_cpuid_compatible(&g.hdr, &h.hdr, missing, sizeof(missing)), -ENOTSUP);
	assert_string_equal(missing, "avx512f, sha_ni");

	/* A reserved bit has no name. */
	cpuid_set_init(&g);
	g.e[0].ecx = 1u << 16;
	assert_int_equal(vcpu_cpuid_compatible(&g.hdr, &h.hdr, missing, sizeof(missing)), -ENOTSUP);
	assert_string_equal(missing, "leaf 1 ecx bit 16");

	/* Bits the VMM sets itself do not count; a subset is fine. */
	cpuid_set_init(&g);
	g.e[0].ecx = (1u << 31) | (1u << 27);
	g.e[0].edx = 1u << 28;
	g.e[1].ebx = 1u << 3;
	assert_int_equal(vcpu_cpuid_compatible(&g.hdr, &h.hdr, missing, sizeof(missing)), 0);
	assert_string_equal(missing, "");

	/* A host without leaf 7 lacks all of it; a short buffer ends "...". */
	struct cpuid_set h1;
	cpuid_set_init(&h1);
	h1.hdr.nent = 1;
	g.e[1].ebx = 0xffffffff;
	assert_int_equal(vcpu_cpuid_compatible(&g.hdr, &h1.hdr, missing, 16), -ENOTSUP);
	assert_true(strlen(missing) <= 15);
	assert_non_null(strstr(missing, "..."));
	assert_int_equal(strncmp(missing, "fsgsbase", 8), 0);
}

/* The real host's set, less a leaf 7 feature it lacks, added. */
static void test_cpuid_host_lacks(void **state)
{
	NEED_KVM();
	static const struct {
		unsigned bit;
		const char *name;
	} candidates[] = {
	    {16, "avx512f"}, {29, "sha_ni"}, {14, "mpx"}, {27, "avx512er"}, {26, "avx512pf"}};
	size_t sz = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *g = malloc(sz);
	assert_non_null(g);
	memcpy(g, supported, sz);
	struct kvm_cpuid_entry2 *l7 = NULL;
	for (uint32_t i = 0; i < g->nent; i++)
		if (g->entries[i].function == 7 && g->entries[i].index == 0)
			l7 = &g->entries[i];
	assert_non_null(l7);
	const char *name = NULL;
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]) && !name; i++)
		if (!(l7->ebx & (1u << candidates[i].bit))) {
			l7->ebx |= 1u << candidates[i].bit;
			name = candidates[i].name;
		}
	assert_non_null(name);
	char missing[128];
	assert_int_equal(vcpu_cpuid_compatible(g, supported, missing, sizeof(missing)), -ENOTSUP);
	assert_string_equal(missing, name);
	assert_int_equal(vcpu_cpuid_compatible(supported, supported, missing, sizeof(missing)), 0);
	free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_irqchip), cmocka_unit_test(test_round_trip_no_irqchip),
	    cmocka_unit_test(test_restore_mismatch),   cmocka_unit_test(test_cpuid_names),
	    cmocka_unit_test(test_cpuid_host_lacks),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
