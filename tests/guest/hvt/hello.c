/* hello.hvt: the smallest hvt guest.  Prints a greeting, its command line,
 * the boot info and the entry state, then halts 0.  Built three more
 * times: abi_v1.hvt (ABI note version 1), wrong_target.hvt (ABI target
 * 2 = spt) and no_mft.hvt (no manifest note), all of which the monitor
 * must refuse before the guest runs. */
#include "hvt_guest.h"

HVT_MANIFEST();

int main(const struct hvt_boot_info *bi)
{
	kprintf("Hello from hvt guest\n");
	kprintf("cmdline: %s\n", cmdline());
	kprintf("boot: mem_size=%lu kernel_end=0x%lx cpu_cycle_freq=%lu cmdline=0x%lx mft=0x%lx\n",
		bi->mem_size, bi->kernel_end, bi->cpu_cycle_freq, bi->cmdline, bi->mft);
	kprintf("entry: rdi=0x%lx rsp=0x%lx if=%u\n", hvt_entry_rdi, hvt_entry_rsp,
		(unsigned)(hvt_entry_rflags >> 9) & 1);
	const struct hvt_mft *m = hvt_mft();
	if (m)
		kprintf("mft: version=%u entries=%u e0.type=0x%x\n", m->version, m->entries,
			m->entries ? m->e[0].type : 0);
	return 0;
}
