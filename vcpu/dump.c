/* Post-mortem register dump, for KVM internal errors and triple faults. */
#include <inttypes.h>
#include <sys/ioctl.h>

#include "vcpu/vcpu.h"

static void seg(FILE *out, const char *name, const struct kvm_segment *s)
{
	fprintf(out,
		"  %-3s sel=0x%04x base=0x%016" PRIx64 " limit=0x%08x type=%u p=%u dpl=%u "
		"db=%u s=%u l=%u g=%u\n",
		name, s->selector, (uint64_t)s->base, s->limit, s->type, s->present, s->dpl, s->db,
		s->s, s->l, s->g);
}

void vcpu_dump(struct vcpu *v, FILE *out)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	fprintf(out, "vcpu%u: exit_reason=%u", v->index, v->run ? v->run->exit_reason : 0);
	if (v->run && v->run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		fprintf(out, " suberror=%u%s", v->run->internal.suberror,
			v->run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
			    ? " (instruction emulation failed)"
			    : "");
	if (v->run && v->run->exit_reason == KVM_EXIT_FAIL_ENTRY)
		fprintf(out, " hardware_entry_failure_reason=0x%llx",
			(unsigned long long)v->run->fail_entry.hardware_entry_failure_reason);
	fputc('\n', out);
	if (ioctl(v->fd, KVM_GET_REGS, &r) == 0) {
		fprintf(out,
			"  rip=0x%016llx rsp=0x%016llx rflags=0x%08llx\n"
			"  rax=0x%016llx rbx=0x%016llx rcx=0x%016llx rdx=0x%016llx\n"
			"  rsi=0x%016llx rdi=0x%016llx rbp=0x%016llx\n"
			"  r8 =0x%016llx r9 =0x%016llx r10=0x%016llx r11=0x%016llx\n"
			"  r12=0x%016llx r13=0x%016llx r14=0x%016llx r15=0x%016llx\n",
			r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp,
			r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
	}
	if (ioctl(v->fd, KVM_GET_SREGS, &s) == 0) {
		seg(out, "cs", &s.cs);
		seg(out, "ds", &s.ds);
		seg(out, "ss", &s.ss);
		seg(out, "tr", &s.tr);
		fprintf(out,
			"  cr0=0x%llx cr2=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx\n"
			"  gdt=0x%llx/%u idt=0x%llx/%u\n",
			s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.gdt.base, s.gdt.limit, s.idt.base,
			s.idt.limit);
	}
}
