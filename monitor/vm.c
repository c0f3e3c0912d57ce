/* VM assembly (running it is vm_run.c).  Order matters for start time:
 * load the kernel into plain memory first (bad input fails before any KVM
 * work), then VM, memory slots, irqchip (slots first: 7 ms otherwise),
 * vCPUs, devices. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "monitor/exitcodes.h"
#include "base/hostfile.h"
#include "monitor/layout.h"
#include "monitor/snap_records.h"
#include "monitor/startup.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"

#define KVM_API_EXPECTED 12

struct mapped_file {
	const uint8_t *data;
	size_t len;
};

/* Map a whole regular file read-only.  0 or -errno, reason in err. */
static int map_file(const char *what, const char *path, struct mapped_file *f, char *err,
		    size_t errlen)
{
	f->data = NULL;
	f->len = 0;
	char why[VM_ERR_MAX];
	int fd = host_open(path, O_RDONLY, HOST_REG, why, sizeof(why));
	if (fd < 0) {
		snprintf(err, errlen, "%s %s", what, why);
		return fd;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
		close(fd);
		return -e;
	}
	if (st.st_size == 0) {
		snprintf(err, errlen, "%s %s: file is empty", what, path);
		close(fd);
		return -EINVAL;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "%s %s: cannot map: %s", what, path, strerror(e));
		return -e;
	}
	f->data = p;
	f->len = (size_t)st.st_size;
	return 0;
}

static void unmap_file(struct mapped_file *f)
{
	if (f->data)
		munmap((void *)f->data, f->len);
	f->data = NULL;
}

static void now(struct timespec *t)
{
	clock_gettime(CLOCK_MONOTONIC, t);
}

/* A Solo5 hvt unikernel: no initrd, one vCPU, no interrupts; devices from
 * the manifest, attached by name. */
static int load_hvt(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	if (cfg->initrd[0]) {
		snprintf(err, errlen, "initrd: hvt unikernels take no initrd");
		return -EINVAL;
	}
	if (cfg->vcpus != 1) {
		snprintf(err, errlen, "vcpus: hvt unikernels run on one vCPU (asked for %u)",
			 cfg->vcpus);
		return -EINVAL;
	}
	if (cfg->irqchip == CFG_IRQCHIP_ON) {
		snprintf(err, errlen, "irqchip: hvt unikernels take no interrupts (irqchip = on)");
		return -EINVAL;
	}
	if (cfg->vsock.enabled || cfg->rng.enabled) {
		snprintf(err, errlen, "[%s]: hvt unikernels have no virtio devices (only the block "
				      "and net devices of their manifest)",
			 cfg->vsock.enabled ? "vsock" : "rng");
		return -EINVAL;
	}
	startup_phase("opening the hvt devices");
	int r = hvt_attach(vm->hvt, cfg, err, errlen);
	if (!r)
		r = hvt_setup(vm->hvt, &vm->mem, cfg->mem_size, vm->boot.kernel_end, cfg->cmdline,
			      cfg->cmdline_len, err, errlen);
	return r ? -EINVAL : 0;
}

/* Load kernel, initrd and boot structures into guest memory.  Pure: no
 * KVM yet, so --dry-run checks exactly this. */
static int load_guest(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	struct mapped_file k, rd = {0};
	char why[VM_ERR_MAX];
	startup_phase("loading the kernel");
	int r = map_file("kernel", cfg->kernel, &k, err, errlen);
	if (r)
		return -EINVAL;

	why[0] = '\0';
	switch (loader_probe(k.data, k.len)) {
	case KFMT_ELF:
		r = loader_elf(&vm->mem, k.data, k.len, &vm->boot, why, sizeof(why));
		break;
	case KFMT_BZIMAGE:
		r = loader_bzimage(&vm->mem, k.data, k.len, &vm->boot, why, sizeof(why));
		break;
	default:
		snprintf(why, sizeof(why), "not an ELF executable or a Linux bzImage");
		r = -ENOEXEC;
		break;
	}
	if (r == 0 && vm->boot.proto == BOOT_HVT) {
		/* The manifest lives in the image: take it before unmapping. */
		vm->hvt = malloc(sizeof(*vm->hvt));
		r = vm->hvt ? hvt_init(vm->hvt, &vm->boot.solo5, why, sizeof(why)) : -ENOMEM;
	}
	unmap_file(&k);
	vm->boot.solo5.mft = NULL;
	if (r) {
		snprintf(err, errlen, "kernel %s: %s", cfg->kernel, why);
		return -EINVAL;
	}
	if (vm->boot.proto == BOOT_HVT)
		return load_hvt(vm, err, errlen);

	if (cfg->initrd[0]) {
		startup_phase("loading the initrd");
		if (map_file("initrd", cfg->initrd, &rd, err, errlen))
			return -EINVAL;
		r = loader_initrd(&vm->mem, &vm->boot, rd.data, rd.len, &vm->initrd_gpa, why,
				  sizeof(why));
		vm->initrd_size = rd.len;
		unmap_file(&rd);
		if (r) {
			snprintf(err, errlen, "initrd %s: %s", cfg->initrd, why);
			return -EINVAL;
		}
	}

	/* The virtio devices are announced after the user's arguments, as
	 * Firecracker does. */
	static char line[CFG_CMDLINE_MAX + 1 + VDEVS_MAX * 48];
	memcpy(line, cfg->cmdline, cfg->cmdline_len + 1);
	size_t len = vdevs_cmdline(cfg, false, line, cfg->cmdline_len, sizeof(line));
	r = len == (size_t)-1 ? -E2BIG : boot_cmdline(&vm->mem, line, len, vm->boot.cmdline_max);
	if (r) {
		snprintf(err, errlen,
			 "cmdline: %zu bytes%s is too long for this kernel (at most %u)",
			 len == (size_t)-1 ? sizeof(line) : len,
			 len > cfg->cmdline_len ? " with the virtio devices' announcements" : "",
			 vm->boot.cmdline_max);
		return -EINVAL;
	}

	uint64_t gdt[VCPU_GDT_ENTRIES], idt = 0;
	vcpu_gdt_build(gdt, vm->boot.proto == BOOT_PVH ? VCPU_MODE_PVH32 : VCPU_MODE_LONG64);
	if (gmem_write(&vm->mem, LAYOUT_GDT, gdt, sizeof(gdt)) ||
	    gmem_write(&vm->mem, LAYOUT_IDT, &idt, sizeof(idt))) {
		snprintf(err, errlen, "memory: too small for boot structures");
		return -EINVAL;
	}
	if (vm->boot.proto == BOOT_PVH)
		r = boot_pvh_info(&vm->mem, vm->initrd_gpa, vm->initrd_size);
	else
		r = boot_page_tables(&vm->mem)
			?: boot_zero_page(&vm->mem, &vm->boot, vm->initrd_gpa, vm->initrd_size);
	if (r) {
		snprintf(err, errlen, "cannot write boot structures: %s", strerror(-r));
		return -EINVAL;
	}
	return 0;
}

/* Pulse an ISA interrupt (edge-triggered on the IOAPIC). */
static void vm_irq(void *opaque, unsigned irq)
{
	struct vm *vm = opaque;
	struct kvm_irq_level l = {.irq = irq, .level = 1};
	ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
	l.level = 0;
	ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
}

static void dev_stop(void *opaque, int code, const char *why)
{
	vm_stop(opaque, code, why);
}

static void first_output(void *opaque)
{
	struct vm *vm = opaque;
	now(&vm->stats.t_first_output);
	atomic_store(&vm->stats.have_first_output, true);
}

/* hvt's POLL was interrupted: stop if the VM is stopping or timed out;
 * give the vCPU back (POLL returns early, nothing ready, which Solo5
 * allows) when it is asked to pause, so a snapshot can be taken. */
static int hvt_check(void *opaque)
{
	struct vm *vm = opaque;
	if (vm_check_stop(vm))
		return 1;
	return atomic_load(&vm->vcpus[0].pause_req) ? -1 : 0;
}

static int want_irqchip(const struct vm *vm, char *err, size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	if (vm->boot.proto == BOOT_HVT)
		return 0;
	unsigned vdevs = vdevs_count(cfg, false);
	if (cfg->irqchip == CFG_IRQCHIP_OFF) {
		if (cfg->vcpus > 1 || vdevs) {
			if (vdevs)
				snprintf(err, errlen, "virtio devices need the irqchip (irqchip = off)");
			else
				snprintf(err, errlen, "vcpus: %u vCPUs need the irqchip (irqchip = off)",
					 cfg->vcpus);
			return -EINVAL;
		}
		return 0;
	}
	if (cfg->irqchip == CFG_IRQCHIP_ON)
		return 1;
	/* auto: its teardown costs 16-24 ms here, so only guests that use
	 * interrupts get one (virtio's go through irqfds into it). */
	return cfg->vcpus > 1 || vdevs || vm->boot.is_linux || vm->boot.proto == BOOT_LINUX64;
}

/* A host call failed (errno): -errno as vm_host_err() gives it. */
static int host_err(char *err, size_t errlen, const char *what)
{
	int e = errno;
	snprintf(err, errlen, "%s: %s", what, strerror(e));
	return vm_host_err(-e);
}

static int open_kvm(struct vm *vm, struct vm_prebuilt *pre, char *err, size_t errlen)
{
	if (pre && pre->kvm_fd >= 0) {
		vm->kvm_fd = pre->kvm_fd; /* its API version checked */
		pre->kvm_fd = -1;
		return 0;
	}
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		return host_err(err, errlen, "/dev/kvm");
	int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_EXPECTED) {
		snprintf(err, errlen, "/dev/kvm: API version %d, need %d", api, KVM_API_EXPECTED);
		return -EPROTONOSUPPORT;
	}
	return 0;
}

static int create_kvm(struct vm *vm, struct vm_prebuilt *pre, char *err, size_t errlen)
{
	if (pre && pre->vm_fd >= 0) {
		vm->vm_fd = pre->vm_fd;
		vm->run_size = pre->run_size;
		pre->vm_fd = -1;
	} else {
		vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
		if (vm->vm_fd < 0)
			return host_err(err, errlen, "KVM_CREATE_VM");
		int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
		if (sz <= 0)
			return host_err(err, errlen, "KVM_GET_VCPU_MMAP_SIZE");
		vm->run_size = (size_t)sz;
	}

	/* KVM logs the guest's writes; ember's own are marked beside it. */
	int e = gmem_kvm_attach(&vm->mem, vm->vm_fd, vm->track_dirty);
	if (e) {
		snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(-e));
		return vm_host_err(e);
	}
	/* Needed on Intel for real-mode emulation (APs start in real mode).
	 * Its three pages must not overlap RAM (KVM would refuse them with
	 * EEXIST): a 4 GiB hvt guest's flat RAM covers them, and needs none
	 * (one vCPU, started in long mode), as solo5-hvt sets none. */
	bool tss_in_ram = gmem_ptr(&vm->mem, LAYOUT_KVM_TSS, 3 * 4096) != NULL;
	if (!(tss_in_ram && vm->hvt) &&
	    ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_KVM_TSS) < 0)
		return host_err(err, errlen, "KVM_SET_TSS_ADDR");
	if (vm->has_irqchip) {
		/* After the memory slots: the other order costs 7 ms here. */
		if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
			return host_err(err, errlen, "KVM_CREATE_IRQCHIP");
		struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
		if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
			return host_err(err, errlen, "KVM_CREATE_PIT2");
	}
	return 0;
}

/* The vCPUs, each registering its part.  snap: a restore's (the vCPUs
 * get the guest's saved CPUID, their registers come from the overlay);
 * NULL: a boot (the host's CPUID, vCPU 0 at the kernel's entry). */
static int create_vcpus(struct vm *vm, const struct vm_snapshot *snap, struct vm_prebuilt *pre,
			char *err, size_t errlen)
{
	/* Inline, not on a helper thread: waking the idle CPU costs
	 * 0.2-1.9 ms on these hosts, more than the call itself (~0.4 ms);
	 * the cache makes it ~20 us. */
	struct kvm_cpuid2 *cpuid = NULL;
	int r = 0;
	if (pre && pre->cpuid) {
		cpuid = pre->cpuid;
		vm->cpuid_cache_hit = pre->cpuid_hit;
		pre->cpuid = NULL;
	} else {
		r = vcpu_supported_cpuid_cached(vm->kvm_fd, vm->cpuid_cache, &cpuid,
						&vm->cpuid_cache_hit);
	}
	if (r) {
		snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-r));
		return vm_host_err(r);
	}
	/* A restored guest gets the CPUID it was built with (the snapshot's,
	 * vm_snapshot_guest), if this host has every feature in it. */
	if (vm->guest_cpuid) {
		char missing[256];
		r = vcpu_cpuid_compatible(vm->guest_cpuid, cpuid, missing, sizeof(missing));
		free(cpuid);
		if (r) {
			snprintf(err, errlen,
				 "%s: this host lacks CPU features the guest was given: %s",
				 snap ? snap->name : "the guest's CPUID", missing);
			return -EINVAL;
		}
	} else {
		vm->guest_cpuid = cpuid;
	}
	r = vcpu_state_init(vm->kvm_fd);
	if (r) {
		snprintf(err, errlen, "cannot read what snapshots need from KVM: %s", strerror(-r));
		return vm_host_err(r);
	}
	for (unsigned i = 0; i < vm->nr_vcpus && !r; i++) {
		if (i == 0 && pre && pre->vcpu0_fd >= 0) {
			vcpu_adopt(&vm->vcpus[0], 0, pre->vcpu0_fd, pre->vcpu0_run, vm->run_size);
			pre->vcpu0_fd = -1;
		} else {
			r = vcpu_create(&vm->vcpus[i], vm->vm_fd, i, vm->run_size);
		}
		if (r)
			snprintf(err, errlen, "vcpu%u: KVM_CREATE_VCPU: %s", i, strerror(-r));
		else if ((r = vcpu_init(&vm->vcpus[i], vm->guest_cpuid, vm->nr_vcpus,
					vm->has_irqchip)))
			snprintf(err, errlen, "vcpu%u: setup: %s", i, strerror(-r));
		else if ((r = vm_parts_add_vcpu(vm, i)))
			snprintf(err, errlen, "vcpu%u: cannot register its part: %s", i,
				 strerror(-r));
	}
	if (r)
		return vm_host_err(r);
	if (snap)
		return 0; /* registers come from the snapshot */

	struct vcpu_entry e = {
	    .rip = vm->boot.entry,
	    .gdt_gpa = LAYOUT_GDT,
	    .idt_gpa = LAYOUT_IDT,
	};
	if (vm->boot.proto == BOOT_PVH) {
		e.mode = VCPU_MODE_PVH32;
		e.rbx = LAYOUT_PVH_INFO;
	} else if (vm->boot.proto == BOOT_HVT) {
		/* solo5-hvt's entry: rdi = boot info, stack at the top of RAM */
		e.mode = VCPU_MODE_HVT64;
		e.rdi = HVT_BOOT_INFO;
		e.rsp = hvt_ram_top(vm->hvt) - 8; /* below the ring, if any */
		e.cr3 = HVT_PML4;
		e.gdt_gpa = HVT_GDT;
		e.idt_gpa = HVT_GDT + 0x40;
		int khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
		hvt_set_tsc(vm->hvt, khz > 0 ? (uint64_t)khz * 1000 : 0);
	} else {
		e.mode = VCPU_MODE_LONG64;
		e.rsi = LAYOUT_ZERO_PAGE;
		e.rsp = e.rbp = LAYOUT_BOOT_STACK;
		e.cr3 = LAYOUT_PML4;
	}
	r = vcpu_set_entry(&vm->vcpus[0], &e);
	if (r) {
		snprintf(err, errlen, "vcpu0: entry state: %s", strerror(-r));
		return vm_host_err(r);
	}
	return 0;
}

static int open_serial(struct vm *vm, char *err, size_t errlen)
{
	const char *out = vm->cfg->serial_out;
	vm->serial_fd = -1;
	if (!out[0] || strcmp(out, "stdout") == 0)
		return STDOUT_FILENO;
	if (strcmp(out, "none") == 0)
		return -1;
	/* A terminal or /dev/null as well as a file; a FIFO only with its
	 * reader already there (the open would wait for one). */
	char why[VM_ERR_MAX];
	vm->serial_fd = host_open(out, O_WRONLY | O_CREAT | O_TRUNC,
				  HOST_REG | HOST_CHR | HOST_FIFO, why, sizeof(why));
	if (vm->serial_fd < 0) {
		vm->serial_fd = -1;
		snprintf(err, errlen, "serial output %s", why);
		return -2;
	}
	return vm->serial_fd;
}

/* A boot: fresh RAM, the kernel loaded, boot structures written. */
static int boot_guest(struct vm *vm, bool shared, char *err, size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	int r = shared ? gmem_init_shared(&vm->mem, cfg->mem_size) : gmem_init(&vm->mem, cfg->mem_size);
	if (r) {
		snprintf(err, errlen, "memory: cannot map %llu MiB: %s",
			 (unsigned long long)(cfg->mem_size >> 20), strerror(-r));
		return vm_host_err(r);
	}
	r = load_guest(vm, err, errlen);
	if (r)
		return r;
	r = want_irqchip(vm, err, errlen);
	if (r < 0)
		return r;
	vm->has_irqchip = r;
	if (vm->has_irqchip && vm->boot.proto == BOOT_LINUX64 &&
	    boot_mptable(&vm->mem, vm->nr_vcpus)) {
		snprintf(err, errlen, "vcpus: no room for an MP table for %u vCPUs", vm->nr_vcpus);
		return -EINVAL;
	}
	/* ACPI too, for kernels without CONFIG_X86_MPPARSE (Debian's, whose
	 * vmlinux boots through PVH).  The zero page or the PVH start info
	 * (written by load_guest) points at the RSDP so the kernel need not
	 * scan for it.  Guests without an irqchip get neither. */
	if (vm->has_irqchip && (vm->boot.proto == BOOT_LINUX64 || vm->boot.proto == BOOT_PVH)) {
		uint64_t rsdp = LAYOUT_ACPI_RSDP;
		uint64_t at =
		    vm->boot.proto == BOOT_PVH ? LAYOUT_PVH_INFO_RSDP : LAYOUT_ZERO_PAGE_RSDP;
		struct acpi_mmio_dev devs[VDEVS_MAX];
		unsigned nr_devs = vdevs_acpi(cfg, false, devs);
		if (boot_acpi(&vm->mem, vm->nr_vcpus, devs, nr_devs) ||
		    gmem_write(&vm->mem, at, &rsdp, sizeof(rsdp))) {
			snprintf(err, errlen, "vcpus: cannot write ACPI tables for %u vCPUs",
				 vm->nr_vcpus);
			return -EINVAL;
		}
	}
	return 0;
}

/* A restore: the guest the snapshot holds (vm_snapshot_guest: RAM from
 * its memory file or stream, irqchip, CPUID, an hvt manifest); nothing is
 * loaded or written into guest memory. */
static int restore_guest(struct vm *vm, const struct vm_build_opts *o, char *err, size_t errlen)
{
	if (o->mem) { /* filled by the caller (a migration): taken over */
		vm->mem = *o->mem;
		memset(o->mem, 0, sizeof(*o->mem));
	}
	int r = vm_snapshot_guest(o->snapshot, vm, o->mem_path, o->copy_mem, err, errlen);
	if (r || !vm->hvt)
		return r;
	startup_phase("opening the hvt devices");
	return hvt_attach(vm->hvt, vm->cfg, err, errlen) ? -EINVAL : 0;
}

/* The devices on the port bus (UART, i8042, exit port) and an hvt
 * guest's hypercalls, with their parts. */
static int create_legacy(struct vm *vm, int out_fd, char *err, size_t errlen)
{
	int r = uart_init(&vm->com1, &vm->pio, PORT_COM1, IRQ_COM1, out_fd,
			  vm->has_irqchip ? vm_irq : NULL, vm);
	vm->com1.first_output = first_output;
	vm->com1.first_opaque = vm;
	if (!r)
		r = vm_parts_add_uart(vm);
	if (!r)
		r = i8042_init(&vm->kbd, &vm->pio, dev_stop, vm);
	if (!r)
		r = exit_port_init(&vm->exitp, &vm->pio, dev_stop, vm);
	if (r)
		snprintf(err, errlen, "devices: %s", strerror(-r));
	return r ? vm_host_err(r) : 0;
}

static int create_hvt(struct vm *vm, int out_fd, char *err, size_t errlen)
{
	vm->hvt->out_fd = out_fd;
	vm->hvt->stop = dev_stop;
	vm->hvt->check = hvt_check;
	vm->hvt->first_output = first_output;
	vm->hvt->opaque = vm;
	int r = hvt_register(vm->hvt, &vm->pio);
	if (!r)
		r = vm_parts_add_hvt(vm);
	if (r) {
		snprintf(err, errlen, "devices: %s", strerror(-r));
		return vm_host_err(r);
	}
	/* Ring I/O is served by the vmm thread's event loop (which makes
	 * vm_run() give vCPU 0 a thread of its own); a restore attaches to
	 * the ring the snapshot's RAM holds. */
	if (hvt_ring_place(vm->hvt) && vm->ev.epfd < 0 && (r = ev_init(&vm->ev))) {
		snprintf(err, errlen, "event loop: %s", strerror(-r));
		return vm_host_err(r);
	}
	r = hvt_ring_attach(vm->hvt, vm->vm_fd, &vm->ev, vm->restored, err, errlen);
	return r ? vm_host_err(r) : 0;
}

int vm_build(struct vm *vm, const struct vm_config *cfg, const struct vm_build_opts *o, char *err,
	     size_t errlen)
{
	memset(vm, 0, sizeof(*vm));
	vm->dry_run = o->dry_run;
	vm->verbose = o->verbose;
	vm->track_dirty = o->track_dirty;
	vm->seccomp = o->seccomp;
	vm->progress = o->progress;
	vm->cpuid_cache = o->cpuid_cache;
	vm->restored = o->snapshot != NULL;
	vm->start_paused = o->paused;
	vm->cfg = cfg;
	vm->kvm_fd = vm->vm_fd = vm->serial_fd = -1;
	vm->ev.epfd = vm->ev.wake_fd = -1;
	vm->nr_vcpus = cfg->vcpus;
	now(&vm->stats.t_start);

	int r = o->snapshot ? restore_guest(vm, o, err, errlen)
			     : boot_guest(vm, o->mem_shared, err, errlen);
	if (r)
		return r;
	startup_phase("opening the serial output");
	int out_fd = open_serial(vm, err, errlen);
	if (out_fd == -2)
		return -EINVAL;
	if (vm->dry_run)
		return 0;

	/* The machine, then its devices; each part registers as it is
	 * built, so the list holds the build's order (vm.h, "Parts"). */
	startup_phase("creating the VM");
	/* Pieces made ahead are of one KVM VM: taken together or not at all,
	 * and not for a VM with an irqchip when vCPU 0 exists already (KVM
	 * makes an irqchip only before the first vCPU). */
	struct vm_prebuilt *pre = o->pre && o->pre->kvm_fd >= 0 ? o->pre : NULL;
	if (pre && vm->has_irqchip && pre->vcpu0_fd >= 0)
		pre = NULL;
	r = open_kvm(vm, pre, err, errlen);
	if (r)
		return r;
	r = create_kvm(vm, pre, err, errlen);
	if (!r && (r = vm_parts_add_kvm(vm)))
		snprintf(err, errlen, "cannot register the VM's part: %s", strerror(-r));
	if (r)
		return vm_host_err(r);
	r = create_vcpus(vm, o->snapshot, pre, err, errlen);
	if (r)
		return r;
	r = create_legacy(vm, out_fd, err, errlen);
	if (r)
		return r;
	if (vdevs_count(cfg, vm->hvt != NULL)) {
		r = ev_init(&vm->ev);
		if (r) {
			snprintf(err, errlen, "event loop: %s", strerror(-r));
			return vm_host_err(r);
		}
		startup_phase("opening the virtio devices");
		r = vdevs_build(vm, err, errlen);
		if (r)
			return r;
	}
	if (vm->hvt && (r = create_hvt(vm, out_fd, err, errlen)))
		return r;
	/* A restore is this build and one overlay of the saved parts. */
	if (o->snapshot) {
		startup_phase("restoring the snapshot's state");
		r = vm_state_load(vm, &o->snapshot->rd, o->snapshot->name, err, errlen);
	}
	return r;
}

void vm_destroy(struct vm *vm)
{
	free(vm->guest_cpuid);
	vm->guest_cpuid = NULL;
	free(vm->mem_terms);
	vm->mem_terms = NULL;
	vdevs_destroy(vm);
	ev_fini(&vm->ev);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].run)
			vcpu_destroy(&vm->vcpus[i]);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	if (vm->serial_fd >= 0)
		close(vm->serial_fd);
	if (vm->hvt) {
		hvt_close(vm->hvt);
		free(vm->hvt);
		vm->hvt = NULL;
	}
	jail_filter_free(&vm->vmm_filter);
	jail_filter_free(&vm->vcpu_filter);
	gmem_free(&vm->mem);
	vm->vm_fd = vm->kvm_fd = vm->serial_fd = -1;
}
