/* solo5-hvt's --dumpcore: at an abort (HALT status 255), the guest's core
 * as an ELF core file gdb reads (gdb KERNEL core.solo5-hvt.PID).  The
 * layout is Solo5's (tenders/hvt/hvt_module_dumpcore.c): ELF header,
 * a PT_NOTE with one NT_PRSTATUS (the vCPU's registers, or the trap frame
 * the guest's HALT cookie points at), one PT_LOAD of all guest RAM from
 * address 0.  Written on the vmm thread after the run, inside the
 * sandbox: one openat of a new file, pwrite of the pages that are not
 * zero (the file is sparse), ftruncate for its length. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/procfs.h>
#include <sys/user.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "monitor/hvt/hvt.h"

/* What Solo5's trap handler leaves at the HALT cookie (bindings,
 * struct x86_trap_regs): the frame of the trap that aborted. */
struct trap_regs {
	uint64_t cr2, ec, rip, cs, rflags, rsp, ss;
};

static void regs_of(const struct hvt_guest *g, int vcpu_fd, prstatus_t *ps)
{
	struct user_regs_struct *u = (struct user_regs_struct *)&ps->pr_reg;
	struct kvm_regs r;
	struct kvm_sregs s;
	memset(ps, 0, sizeof(*ps));
	if (ioctl(vcpu_fd, KVM_GET_REGS, &r) == 0) {
		*u = (struct user_regs_struct){
		    .r15 = r.r15, .r14 = r.r14, .r13 = r.r13, .r12 = r.r12, .rbp = r.rbp,
		    .rbx = r.rbx, .r11 = r.r11, .r10 = r.r10, .r9 = r.r9,   .r8 = r.r8,
		    .rax = r.rax, .rcx = r.rcx, .rdx = r.rdx, .rsi = r.rsi, .rdi = r.rdi,
		    .rip = r.rip, .eflags = r.rflags, .rsp = r.rsp};
	}
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &s) == 0) {
		u->cs = s.cs.selector, u->ss = s.ss.selector, u->ds = s.ds.selector;
		u->es = s.es.selector, u->fs = s.fs.selector, u->gs = s.gs.selector;
		u->fs_base = s.fs.base, u->gs_base = s.gs.base;
	}
	const struct trap_regs *t =
	    g->halt_cookie ? gmem_ptr(g->mem, g->halt_cookie, sizeof(*t)) : NULL;
	if (t) {
		u->rip = t->rip, u->cs = t->cs, u->eflags = t->rflags;
		u->rsp = t->rsp, u->ss = t->ss;
	}
}

static bool zero_page(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	for (unsigned i = 0; i < 4096 / 8; i++)
		if (w[i])
			return false;
	return true;
}

static int write_all(int fd, const void *buf, size_t len, off_t at)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, at + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

int hvt_dumpcore(const struct hvt_guest *g, int vcpu_fd)
{
	if (!g->halted || g->halt_status != 255 || !g->dumpcore[0])
		return 0;
	char path[sizeof(g->dumpcore) + 40];
	snprintf(path, sizeof(path), "%s/core.solo5-hvt.%d", g->dumpcore, (int)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		int e = errno;
		fprintf(stderr, "ember: dumpcore: open(%s): %s\n", path, strerror(e));
		return -e;
	}
	fprintf(stderr, "ember: dumpcore: dumping guest core to: %s\n", path);

	static const char name[8] = "CORE"; /* namesz 5, padded to 8 */
	prstatus_t ps;
	regs_of(g, vcpu_fd, &ps);
	size_t note_size = sizeof(Elf64_Nhdr) + sizeof(name) + sizeof(ps);
	size_t head = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr) + note_size;
	off_t mem_at = (off_t)((head + 4095) & ~4095ULL); /* page-aligned: a sparse file */
	struct {
		Elf64_Ehdr eh;
		Elf64_Phdr note, load;
		Elf64_Nhdr nh;
		char name[8];
		prstatus_t ps;
	} __attribute__((packed)) h = {
	    .eh = {.e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB,
			       EV_CURRENT, ELFOSABI_STANDALONE},
		   .e_type = ET_CORE,
		   .e_machine = EM_X86_64,
		   .e_version = EV_CURRENT,
		   .e_phoff = sizeof(Elf64_Ehdr),
		   .e_ehsize = sizeof(Elf64_Ehdr),
		   .e_phentsize = sizeof(Elf64_Phdr),
		   .e_phnum = 2},
	    .note = {.p_type = PT_NOTE,
		     .p_offset = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr),
		     .p_filesz = note_size,
		     .p_memsz = note_size},
	    .load = {.p_type = PT_LOAD,
		     .p_flags = PF_R | PF_W | PF_X,
		     .p_offset = (uint64_t)mem_at,
		     .p_filesz = g->mem_size,
		     .p_memsz = g->mem_size,
		     .p_align = 4096},
	    .nh = {.n_namesz = 5, .n_descsz = sizeof(ps), .n_type = NT_PRSTATUS},
	};
	_Static_assert(sizeof(h) == sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr) +
					sizeof(Elf64_Nhdr) + 8 + sizeof(prstatus_t),
		       "core header layout");
	memcpy(h.name, name, sizeof(name));
	h.ps = ps;
	int r = write_all(fd, &h, sizeof(h), 0);
	uint64_t pages = g->mem_size / 4096, dumped = 0;
	for (uint64_t pg = 0; pg < pages && !r; pg++) {
		const uint8_t *p = gmem_ptr(g->mem, pg * 4096, 4096);
		if (!p || zero_page(p))
			continue;
		r = write_all(fd, p, 4096, mem_at + (off_t)(pg * 4096));
		dumped++;
	}
	if (!r && ftruncate(fd, mem_at + (off_t)g->mem_size))
		r = -errno;
	close(fd);
	if (r)
		fprintf(stderr, "ember: dumpcore: error(s) dumping core, file may be incomplete: %s\n",
			strerror(-r));
	else
		fprintf(stderr, "ember: dumpcore: dumped %llu pages of total %llu pages\n",
			(unsigned long long)dumped, (unsigned long long)pages);
	return r;
}
