/* Virtual CPUs: KVM vCPU setup (CPUID, MSRs, FPU, entry state) and the
 * per-vCPU thread that runs KVM_RUN and hands every exit to its owner
 * through struct vcpu_exit_ops.  vcpu/ knows nothing of devices, config
 * or the API; it only knows x86 and KVM. */
#ifndef EMBER_VCPU_H
#define EMBER_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* GDT layout every entry mode uses (as Firecracker's, so FC-style guests
 * see what they expect): null, code, data, TSS. */
#define VCPU_GDT_ENTRIES 4
#define VCPU_SEL_CODE 0x08
#define VCPU_SEL_DATA 0x10
#define VCPU_SEL_TSS 0x18

enum vcpu_mode {
	VCPU_MODE_PVH32 = 1, /* 32-bit protected mode, paging off (PVH boot ABI) */
	VCPU_MODE_LONG64,    /* 64-bit long mode, identity paging via cr3 */
	VCPU_MODE_HVT64,     /* long mode as solo5-hvt sets it: also SSE enabled, NX */
};

/* Register state at the first instruction.  Unused fields stay 0. */
struct vcpu_entry {
	enum vcpu_mode mode;
	uint64_t rip, rsp, rbp;
	uint64_t rsi, rdi, rbx;
	uint64_t cr3;	  /* LONG64: PML4 address */
	uint64_t gdt_gpa; /* where the caller placed vcpu_gdt_build()'s table */
	uint64_t idt_gpa; /* an empty IDT (limit 0) lives here */
};

/* Why a vCPU thread stopped running the guest. */
enum vcpu_stop {
	VCPU_STOP_KICKED = 1, /* asked to stop (vcpu_kick) */
	VCPU_STOP_SHUTDOWN,   /* triple fault or shutdown: the guest is gone */
	VCPU_STOP_HALTED,     /* HLT with no irqchip: nothing can ever wake it */
	VCPU_STOP_INTERNAL,   /* KVM internal error, failed entry, unknown exit */
	VCPU_STOP_HANDLER,    /* an exit handler asked to stop (returned > 0) */
	VCPU_STOP_IOCTL,      /* KVM_RUN itself failed */
};

struct vcpu;

/* Supplied by the owner (the monitor).  pio/mmio: data holds len bytes to
 * fill (read) or consume (write).  Return 0 to keep running, > 0 to stop
 * this vCPU (the handler has already recorded why), < 0 for a failed
 * access (logged, the guest goes on).  interrupted (optional): KVM_RUN
 * returned EINTR without a kick, i.e. some other signal (the monitor's
 * timeout timer); > 0 stops the vCPU.  stopped: called once from the vCPU
 * thread when its loop ends for any reason but VCPU_STOP_KICKED and
 * VCPU_STOP_HANDLER.  ready (optional): called on the vCPU's own thread
 * once its signals are set up, just before its first KVM_RUN (the
 * monitor loads the thread's seccomp filter there); nonzero ends the loop
 * before the guest runs, as VCPU_STOP_HANDLER (the hook says why). */
struct vcpu_exit_ops {
	int (*pio)(void *opaque, struct vcpu *v, uint16_t port, uint8_t *data, uint32_t len,
		   bool is_write);
	int (*mmio)(void *opaque, struct vcpu *v, uint64_t addr, uint8_t *data, uint32_t len,
		    bool is_write);
	int (*interrupted)(void *opaque, struct vcpu *v);
	void (*stopped)(void *opaque, struct vcpu *v, enum vcpu_stop why);
	int (*ready)(void *opaque, struct vcpu *v);
};

/* The signal that kicks a vCPU out of KVM_RUN (its handler does nothing;
 * the EINTR is the point).  Owners may use it to interrupt a vCPU too. */
#define VCPU_KICK_SIGNAL SIGUSR1

struct vcpu {
	int fd;
	unsigned index; /* also the APIC id */
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;	/* the thread running the loop, once it runs */
	atomic_bool thread_set; /* thread is valid: kicks may signal it */
	bool thread_started;	/* created by vcpu_start(): join it */
	atomic_bool stop;	/* set by vcpu_kick(); checked before every KVM_RUN */
	const struct vcpu_exit_ops *ops;
	void *opaque;
	bool has_irqchip;  /* HLT is handled in the kernel when true */
	/* Pausing (vcpu_pause): the thread parks at the top of its loop. */
	atomic_bool pause_req;
	bool parked;
	bool loop_done; /* vcpu_run() has returned */
	pthread_mutex_t park_lock;
	pthread_cond_t park_cond;
	uint64_t nr_exits; /* all userspace exits, for statistics */
	uint64_t nr_pio_exits;
	uint64_t nr_mmio_exits;
};

/* The host's KVM_GET_SUPPORTED_CPUID, allocated; free() it.  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out);

/* The same answer, from a cache file when it was written by this boot of
 * this KVM module (else the ioctl, and the file is rewritten atomically).
 * Where the host cannot be identified (no /proc or /sys: in a jail) an
 * intact file is trusted as ember-jailer checked it.  cache_path NULL or
 * "" disables the cache.  *hit says which.  0 or -errno. */
__attribute__((warn_unused_result)) int
vcpu_supported_cpuid_cached(int kvm_fd, const char *cache_path, struct kvm_cpuid2 **out, bool *hit);

/* Where ember keeps the cache: tmpfs, gone at reboot, when its contents
 * would be stale anyway. */
#define VCPU_CPUID_CACHE_DEFAULT "/run/ember/supported-cpuid"

/* 0 if the cache file at path was written by this boot of this KVM
 * module (intact, key matching), else -errno.  For ember-jailer, which
 * copies a valid cache into a jail (where ember cannot check the key). */
__attribute__((warn_unused_result)) int vcpu_cpuid_cache_valid(const char *path);

/* Create vCPU `index` on vm_fd and map its kvm_run (run_size from
 * KVM_GET_VCPU_MMAP_SIZE).  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_create(struct vcpu *v, int vm_fd, unsigned index,
						    size_t run_size);

/* vcpu_create()'s two host calls alone: *fd and *run (unmap run_size
 * bytes and close fd to undo), for a vCPU made before its struct vcpu
 * (the API's pre-build).  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_open(int vm_fd, unsigned index, size_t run_size,
						  int *fd, struct kvm_run **run);

/* Make v the vCPU `index` whose fd and kvm_run vcpu_open() gave (v owns
 * them from now on, as after vcpu_create()). */
void vcpu_adopt(struct vcpu *v, unsigned index, int fd, struct kvm_run *run, size_t run_size);

/* Program CPUID (the supported set, patched: APIC id = index, logical
 * count = nr_vcpus, hypervisor bit set, x2APIC topology leaf; no APIC
 * bits without an irqchip), the boot MSRs and a reset FPU.  0 or -errno. */
__attribute__((warn_unused_result)) int
vcpu_init(struct vcpu *v, const struct kvm_cpuid2 *supported, unsigned nr_vcpus, bool has_irqchip);

/* Fill gdt[] for mode (code descriptor 64-bit for LONG64, 32-bit for
 * PVH32).  The caller copies it to entry->gdt_gpa. */
void vcpu_gdt_build(uint64_t gdt[VCPU_GDT_ENTRIES], enum vcpu_mode mode);

/* Load registers and system registers for the first instruction (BSP
 * only; APs wait for INIT/SIPI in the in-kernel LAPIC).  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_set_entry(struct vcpu *v, const struct vcpu_entry *e);

/* Run the vCPU on the calling thread (KVM_RUN in a loop, exits to ops)
 * until it stops; returns why.  Used for the boot vCPU, so a single-vCPU
 * VM needs no thread and no cross-CPU wake-up (0.2 ms or more here). */
enum vcpu_stop vcpu_run(struct vcpu *v, const struct vcpu_exit_ops *ops, void *opaque);

/* Install the process's handler for VCPU_KICK_SIGNAL (it only interrupts
 * system calls), once per process.  vcpu_run() does it itself; call it
 * first on a thread that may receive the signal without running a vCPU,
 * or before a vcpu_run() on a thread whose filter has no sigaction.
 * 0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_kick_init(void);

/* Ask the vCPU to park at a clean point: out of KVM_RUN, its last exit
 * completed (a pending MMIO/PIO read is finished by one more KVM_RUN with
 * immediate_exit, as KVM's API asks before state is read).  Returns at
 * once; vcpu_wait_parked() waits for it.  vcpu_resume() lets it go on;
 * vcpu_kick() (stop) also releases a parked vCPU. */
void vcpu_pause(struct vcpu *v);
/* Wait until v is parked or its loop has ended. */
void vcpu_wait_parked(struct vcpu *v);
void vcpu_resume(struct vcpu *v);

/* Start a thread that does vcpu_run().  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_start(struct vcpu *v, const struct vcpu_exit_ops *ops,
						   void *opaque);

/* Ask the vCPU to leave KVM_RUN and stop; safe from any thread, any
 * number of times. */
void vcpu_kick(struct vcpu *v);

/* Wait for the vCPU thread to end (after vcpu_kick or a stop). */
void vcpu_join(struct vcpu *v);

/* Registers, segments and control registers, for a post-mortem. */
void vcpu_dump(struct vcpu *v, FILE *out);

/* Unmap kvm_run and close the fd. */
void vcpu_destroy(struct vcpu *v);

/* ---- Snapshot records (vcpu/state.c, vcpu/vmstate.c, vcpu/cpuid_compat.c) ----
 * A snapshot pauses every vCPU at a clean point (vcpu_pause), saves these
 * records, and a restore builds a fresh VM as a boot does (slots,
 * irqchip, vCPUs with vcpu_init) and then overlays them: VM state first
 * (vcpu_vm_restore), then each vCPU (vcpu_restore_state), before the
 * sandbox drops privileges (the SET ioctls are not allowed after it). */

#define VCPU_STATE_MAX_MSRS 256
#define VCPU_STATE_LAPIC 1u /* flags: lapic holds the in-kernel LAPIC */

/* One vCPU's architectural state as KVM holds it; fixed-width, the
 * snapshot record itself (size asserted in state.c).  Fields that move
 * on their own between a restore and the next save: msrs[IA32_TSC]
 * (counts on), lapic's current-count register when its timer runs. */
struct vcpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave xsave; /* the legacy 4 KiB layout: see vcpu_state_init */
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic; /* zero without an irqchip */
	struct kvm_vcpu_events events;
	struct kvm_debugregs debugregs;
	struct kvm_mp_state mp_state;
	uint32_t flags;	  /* VCPU_STATE_* */
	uint32_t tsc_khz; /* the guest's TSC frequency, 0 if KVM would not say */
	uint32_t nr_msrs;
	struct kvm_msr_entry msrs[VCPU_STATE_MAX_MSRS]; /* nr_msrs used, rest zero */
};

/* Read, once, what saving needs from /dev/kvm and keep it in a static
 * table (written before the jail closes, read-only after): the MSRs to
 * save (KVM_GET_MSR_INDEX_LIST, less Hyper-V and VMX capability MSRs,
 * plus the architectural ones a guest's kernel writes: MTRRs, PAT,
 * SYSENTER/SYSCALL, TSC_AUX, ...) and the XSAVE size.  Call at VM build
 * time, before the drop; calling again is harmless.  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_state_init(int kvm_fd);

/* Save v's state into *s (zeroed first).  v must be parked (vcpu_pause +
 * vcpu_wait_parked) or never run; only GET ioctls, allowed after the
 * drop.  has_irqchip: the VM has an in-kernel LAPIC (else lapic stays
 * zero).  MSRs KVM refuses to read are left out, and without an
 * irqchip the LAPIC-only ones (TSC_DEADLINE, async PF, PV EOI), which KVM
 * reads but will not write back there.  -ENODATA if
 * vcpu_state_init() was not called; -E2BIG where this host's XSAVE area
 * is larger than 4 KiB (KVM_CAP_XSAVE2: AMX), which this record cannot
 * hold whole.  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_save_state(struct vcpu *v, bool has_irqchip,
							struct vcpu_state *s);

/* Load *s into v, a vCPU fresh from vcpu_create + vcpu_init (its CPUID
 * as the snapshot's), never run.  Order (Firecracker's, KVM API §4):
 * mp_state, regs, sregs (APIC base), xsave, xcrs, debugregs, lapic (after
 * the APIC base), MSRs (after the LAPIC: a TSC deadline is dropped unless
 * the LAPIC timer is in deadline mode; TSC_DEADLINE after IA32_TSC),
 * vcpu events last (SET_REGS/SREGS clear pending exceptions).  -EINVAL
 * if an MSR is refused or the record's LAPIC flag does not match
 * has_irqchip; -ENOTSUP if the TSC frequency differs and KVM cannot scale
 * it.  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_restore_state(struct vcpu *v, bool has_irqchip,
							   const struct vcpu_state *s);

/* The VM-wide KVM state; fixed-width, the snapshot record. */
struct vm_kvm_state {
	uint32_t has_irqchip, pad;
	struct kvm_irqchip pic_master, pic_slave, ioapic; /* zero without irqchip */
	struct kvm_pit_state2 pit;			  /* zero without irqchip */
	struct kvm_clock_data clock;			  /* kvmclock at the save */
};

/* Save the VM's irqchips, PIT (when has_irqchip: ember creates both
 * together) and kvmclock.  GET ioctls only.  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_vm_save(int vm_fd, bool has_irqchip,
						     struct vm_kvm_state *s);

/* Load *s into a fresh VM built as the snapshot's (irqchip and PIT
 * created when s->has_irqchip).  Before the vCPUs' state.  kvmclock
 * resumes at the saved value: the guest never sees time run backwards,
 * and the time it spent saved does not exist for it (as Firecracker;
 * NTP in the guest catches up its wall clock).  0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_vm_restore(int vm_fd, const struct vm_kvm_state *s);

/* The CPUID entries v was given (KVM_GET_CPUID2), allocated; free() it.
 * With KVM's run-time bits (OSXSAVE, OSPKE, APIC as APIC_BASE says).
 * 0 or -errno. */
__attribute__((warn_unused_result)) int vcpu_get_cpuid(struct vcpu *v, struct kvm_cpuid2 **out);

/* 0 if every feature bit the guest was given (leaves 1 ECX/EDX, 7.0
 * EBX/ECX/EDX, 0xd.1 EAX, 0x80000001 ECX/EDX) is in host (KVM's
 * supported set), ignoring the bits a VMM or KVM sets itself (hypervisor,
 * HTT, OSXSAVE, OSPKE).  Else -ENOTSUP and missing names them,
 * comma-separated ("avx512f, sha_ni"; "leaf 7 ebx bit 22" for bits
 * without a name), truncated with "..." to fit len. */
__attribute__((warn_unused_result)) int vcpu_cpuid_compatible(const struct kvm_cpuid2 *guest,
							      const struct kvm_cpuid2 *host,
							      char *missing, size_t len);

#endif
