/* The VM's parts (see monitor/vm.h, "Parts"): the list each part joins as
 * it is built, the two walks over it (a snapshot's save, a restore's
 * overlay), and the machine's own parts: the KVM VM state, each vCPU, the
 * UART and the hvt frontend.  Virtio devices register theirs in
 * monitor/vdevs.c.  A part saves and restores itself; this file only
 * walks, and checks what every record must be (there, of its size). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/hvt/hvt.h"
#include "monitor/snap_records.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

_Static_assert(sizeof(struct vcpu_state) <= VM_PART_RECORD_MAX, "a vCPU's record fits");
_Static_assert(sizeof(struct vm_kvm_state) <= VM_PART_RECORD_MAX, "the VM's record fits");
_Static_assert(SNAP_DEV_RECORD_MAX <= VM_PART_RECORD_MAX, "a device's record fits");

static void tag_name(uint32_t tag, char t[5])
{
	for (int i = 0; i < 4; i++) {
		char c = (char)(tag >> (8 * i));
		t[i] = c >= 0x20 && c < 0x7f ? c : '?';
	}
	t[4] = '\0';
}

int vm_part_add(struct vm *vm, const struct vm_part *p)
{
	for (unsigned i = 0; i < vm->nr_parts; i++)
		if (vm->parts[i].tag == p->tag && vm->parts[i].index == p->index)
			return -EEXIST;
	if (vm->nr_parts == VM_PARTS_MAX)
		return -ENOSPC;
	vm->parts[vm->nr_parts++] = *p;
	return 0;
}

static int save_one(const struct vm_part *p, struct snap_writer *w, uint8_t *buf, char *err,
		    size_t errlen)
{
	int n = p->save(p, buf, VM_PART_RECORD_MAX, err, errlen);
	if (n < 0)
		return n;
	if (p->size && (unsigned)n != p->size) {
		char t[5];
		tag_name(p->tag, t);
		snprintf(err, errlen, "section %s %u: %d bytes, its record is %u", t, p->index, n,
			 p->size);
		return -EIO;
	}
	int r = snap_w_add(w, p->tag, p->index, buf, (uint64_t)n);
	if (r)
		snprintf(err, errlen, "cannot build the state file: %s", strerror(-r));
	return r;
}

int vm_state_save(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	uint8_t *buf = malloc(VM_PART_RECORD_MAX);
	if (!buf) {
		snprintf(err, errlen, "cannot build the state file: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	/* The devices first (they are quiet: the vCPUs are parked and the
	 * vmm thread is here), then the machine: the state file's order. */
	int r = 0;
	for (int machine = 0; machine < 2 && !r; machine++)
		for (unsigned i = 0; i < vm->nr_parts && !r; i++)
			if (!(vm->parts[i].flags & VM_PART_MACHINE) == !machine)
				r = save_one(&vm->parts[i], w, buf, err, errlen);
	free(buf);
	return r;
}

/* Is section s one of this VM's parts' kind (its tag) but no part's? */
static bool unclaimed(const struct vm *vm, const struct snap_section *s)
{
	bool kind = false;
	for (unsigned i = 0; i < vm->nr_parts; i++) {
		if (vm->parts[i].tag != s->tag)
			continue;
		if (vm->parts[i].index == s->index)
			return false;
		kind = true;
	}
	return kind;
}

int vm_state_load(struct vm *vm, const struct snap_reader *rd, const char *name, char *err,
		  size_t errlen)
{
	char why[VM_ERR_MAX], t[5];
	/* The list's order is the build's: the machine first. */
	for (unsigned i = 0; i < vm->nr_parts; i++) {
		const struct vm_part *p = &vm->parts[i];
		uint64_t len = 0;
		const void *rec = snap_r_find(rd, p->tag, p->index, &len);
		tag_name(p->tag, t);
		if ((!rec && !(p->flags & VM_PART_OPTIONAL)) ||
		    (rec && p->size && len != p->size)) {
			snprintf(err, errlen, "%s: section %s %u is %s", name, t, p->index,
				 rec ? "of another size (another ember version?)" : "missing");
			return -EINVAL;
		}
		why[0] = '\0';
		int r = p->restore(p, rec, (size_t)len, why, sizeof(why));
		if (r == -EINVAL) {
			/* The snapshot's fault: say which. */
			snprintf(err, errlen, "%s: %s", name, why);
			return r;
		}
		if (r) {
			snprintf(err, errlen, "%s", why);
			return vm_host_err(r);
		}
	}
	for (uint32_t i = 0; i < rd->h.nr_sections; i++)
		if (unclaimed(vm, &rd->sec[i])) {
			tag_name(rd->sec[i].tag, t);
			snprintf(err, errlen, "%s: section %s %u: this VM has no such part (%s)",
				 name, t, rd->sec[i].index,
				 rd->sec[i].tag == TAG_VDEV || rd->sec[i].tag == TAG_VDVX
				     ? "the snapshot has more virtio devices than its configuration"
				     : "the snapshot is of another machine");
			return -EINVAL;
		}
	return 0;
}

/* ---- the machine's parts ---- */

/* The VM's irqchips, PIT and kvmclock (vcpu/vmstate.c). */
static int kvm_save(const struct vm_part *p, void *buf, size_t max, char *err, size_t errlen)
{
	struct vm *vm = p->opaque;
	int r = vcpu_vm_save(vm->vm_fd, vm->has_irqchip, buf);
	if (r) {
		snprintf(err, errlen, "cannot read the VM's KVM state: %s", strerror(-r));
		return r;
	}
	return sizeof(struct vm_kvm_state);
}

static int kvm_restore(const struct vm_part *p, const void *rec, size_t len, char *err,
		       size_t errlen)
{
	struct vm *vm = p->opaque;
	const struct vm_kvm_state *ks = rec;
	/* The build made the irqchip as the snapshot says (vm_snapshot_guest). */
	if ((ks->has_irqchip != 0) != vm->has_irqchip) {
		snprintf(err, errlen, "section KVMS 0: irqchip %s, the VM was built %s",
			 ks->has_irqchip ? "on" : "off", vm->has_irqchip ? "with one" : "without");
		return -EINVAL;
	}
	int r = vcpu_vm_restore(vm->vm_fd, ks);
	if (r)
		snprintf(err, errlen, "cannot restore the VM's KVM state: %s", strerror(-r));
	return r ? vm_host_err(r) : 0;
}

int vm_parts_add_kvm(struct vm *vm)
{
	return vm_part_add(vm, &(struct vm_part){TAG_KVMS, 0, sizeof(struct vm_kvm_state),
						 VM_PART_MACHINE, vm, kvm_save, kvm_restore});
}

/* vCPU i's registers, MSRs, LAPIC... (vcpu/state.c). */
static int vcpu_save(const struct vm_part *p, void *buf, size_t max, char *err, size_t errlen)
{
	struct vm *vm = p->opaque;
	int r = vcpu_save_state(&vm->vcpus[p->index], vm->has_irqchip, buf);
	if (r) {
		snprintf(err, errlen, "vcpu%u: cannot read its state: %s", p->index, strerror(-r));
		return r;
	}
	return sizeof(struct vcpu_state);
}

static int vcpu_restore(const struct vm_part *p, const void *rec, size_t len, char *err,
			size_t errlen)
{
	struct vm *vm = p->opaque;
	int r = vcpu_restore_state(&vm->vcpus[p->index], vm->has_irqchip, rec);
	if (r)
		snprintf(err, errlen, "vcpu%u: cannot restore its state: %s", p->index,
			 strerror(-r));
	return r ? vm_host_err(r) : 0;
}

int vm_parts_add_vcpu(struct vm *vm, unsigned i)
{
	return vm_part_add(vm, &(struct vm_part){TAG_VCPU, i, sizeof(struct vcpu_state),
						 VM_PART_MACHINE, vm, vcpu_save, vcpu_restore});
}

/* COM1's registers (monitor/uart.c). */
static int uart_part_save(const struct vm_part *p, void *buf, size_t max, char *err, size_t errlen)
{
	uart_save(p->opaque, buf);
	return sizeof(struct uart_state);
}

static int uart_part_restore(const struct vm_part *p, const void *rec, size_t len, char *err,
			     size_t errlen)
{
	uart_restore(p->opaque, rec);
	return 0;
}

int vm_parts_add_uart(struct vm *vm)
{
	return vm_part_add(vm, &(struct vm_part){TAG_UART, 0, sizeof(struct uart_state), 0,
						 &vm->com1, uart_part_save, uart_part_restore});
}

/* A Solo5 hvt guest's manifest and layout.  A restore built the frontend
 * from this record already (vm_snapshot_guest): here it must match. */
static void hvt_part_record(const struct hvt_guest *g, struct hvt_record *h)
{
	memset(h, 0, sizeof(*h));
	h->mft = g->mft;
	h->mem_size = g->mem_size;
	h->kernel_end = g->kernel_end;
}

static int hvt_part_save(const struct vm_part *p, void *buf, size_t max, char *err, size_t errlen)
{
	hvt_part_record(p->opaque, buf);
	return sizeof(struct hvt_record);
}

static int hvt_part_restore(const struct vm_part *p, const void *rec, size_t len, char *err,
			    size_t errlen)
{
	/* Nothing left to overlay: the manifest is the frontend's since the
	 * build (hvt_attach then filled in its devices). */
	const struct hvt_guest *g = p->opaque;
	const struct hvt_record *h = rec;
	if (h->mem_size != g->mem_size || h->kernel_end != g->kernel_end) {
		snprintf(err, errlen, "section HVTG 0: not the layout this guest was built with");
		return -EINVAL;
	}
	return 0;
}

int vm_parts_add_hvt(struct vm *vm)
{
	return vm_part_add(vm, &(struct vm_part){TAG_HVTG, 0, sizeof(struct hvt_record), 0, vm->hvt,
						 hvt_part_save, hvt_part_restore});
}
