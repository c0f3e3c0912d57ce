/* Can this host run a guest that was given these CPUID features?  Every
 * feature bit it saw must be in KVM's supported set here, or the guest,
 * restored, would use an instruction that faults (Intel SDM vol. 2A
 * "CPUID", tables 3-8 to 3-11; AMD APM vol. 3 appendix E).  Names are
 * Linux's /proc/cpuinfo flags, which users know. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vcpu/vcpu.h"

enum reg { EAX, EBX, ECX, EDX };

struct feature_word {
	uint32_t leaf, subleaf;
	enum reg reg;
	const char *label; /* "leaf 7 ebx", for bits without a name */
	uint32_t ignore;   /* bits a VMM or KVM sets itself, host or not */
	const char *names[32];
};

static const struct feature_word words[] = {
    {1,
     0,
     ECX,
     "leaf 1 ecx",
     (1u << 27) | (1u << 31), /* OSXSAVE mirrors CR4; hypervisor: ember sets it */
     {"sse3",	"pclmulqdq", "dtes64",	"monitor", "ds_cpl",
      "vmx",	"smx",	     "est",	"tm2",	   "ssse3",
      "cid",	"sdbg",	     "fma",	"cx16",	   "xtpr",
      "pdcm",	NULL,	     "pcid",	"dca",	   "sse4_1",
      "sse4_2", "x2apic",    "movbe",	"popcnt",  "tsc_deadline_timer",
      "aes",	"xsave",     "osxsave", "avx",	   "f16c",
      "rdrand", "hypervisor"}},
    {1,
     0,
     EDX,
     "leaf 1 edx",
     1u << 28, /* HTT: ember sets it with the vCPU count */
     {"fpu",  "vme",  "de",   "pse", "tsc",  "msr", "pae",   "mce", "cx8",     "apic", NULL,
      "sep",  "mtrr", "pge",  "mca", "cmov", "pat", "pse36", "pn",  "clflush", NULL,   "ds",
      "acpi", "mmx",  "fxsr", "sse", "sse2", "ss",  "ht",    "tm",  "ia64",    "pbe"}},
    {7, 0, EBX, "leaf 7 ebx", 0, {"fsgsbase",
				  "tsc_adjust",
				  "sgx",
				  "bmi1",
				  "hle",
				  "avx2",
				  "fdp_excptn_only",
				  "smep",
				  "bmi2",
				  "erms",
				  "invpcid",
				  "rtm",
				  "cqm",
				  "zero_fcs_fds",
				  "mpx",
				  "rdt_a",
				  "avx512f",
				  "avx512dq",
				  "rdseed",
				  "adx",
				  "smap",
				  "avx512ifma",
				  NULL,
				  "clflushopt",
				  "clwb",
				  "intel_pt",
				  "avx512pf",
				  "avx512er",
				  "avx512cd",
				  "sha_ni",
				  "avx512bw",
				  "avx512vl"}},
    {7,
     0,
     ECX,
     "leaf 7 ecx",
     1u << 4, /* OSPKE mirrors CR4 */
     {"prefetchwt1",
      "avx512vbmi",
      "umip",
      "pku",
      "ospke",
      "waitpkg",
      "avx512_vbmi2",
      "shstk",
      "gfni",
      "vaes",
      "vpclmulqdq",
      "avx512_vnni",
      "avx512_bitalg",
      "tme",
      "avx512_vpopcntdq",
      NULL,
      "la57",
      NULL,
      NULL,
      NULL,
      NULL,
      NULL,
      "rdpid",
      "keylocker",
      "bus_lock_detect",
      "cldemote",
      NULL,
      "movdiri",
      "movdir64b",
      "enqcmd",
      "sgx_lc",
      "pks"}},
    {7,
     0,
     EDX,
     "leaf 7 edx",
     0,
     {NULL,
      NULL,
      "avx512_4vnniw",
      "avx512_4fmaps",
      "fsrm",
      "uintr",
      NULL,
      NULL,
      "avx512_vp2intersect",
      "srbds_ctrl",
      "md_clear",
      "rtm_always_abort",
      NULL,
      "tsx_force_abort",
      "serialize",
      "hybrid_cpu",
      "tsxldtrk",
      NULL,
      "pconfig",
      "arch_lbr",
      "ibt",
      NULL,
      "amx_bf16",
      "avx512_fp16",
      "amx_tile",
      "amx_int8",
      "spec_ctrl",
      "intel_stibp",
      "flush_l1d",
      "arch_capabilities",
      "core_capabilities",
      "spec_ctrl_ssbd"}},
    {0xd, 1, EAX, "leaf 0xd.1 eax", 0, {"xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd"}},
    {0x80000001, 0, ECX, "leaf 0x80000001 ecx", 0, {"lahf_lm",	  "cmp_legacy",	 "svm",
						    "extapic",	  "cr8_legacy",	 "abm",
						    "sse4a",	  "misalignsse", "3dnowprefetch",
						    "osvw",	  "ibs",	 "xop",
						    "skinit",	  "wdt",	 NULL,
						    "lwp",	  "fma4",	 "tce",
						    NULL,	  "nodeid_msr",	 NULL,
						    "tbm",	  "topoext",	 "perfctr_core",
						    "perfctr_nb", NULL,		 "bpext",
						    "ptsc",	  "perfctr_llc", "mwaitx"}},
    {0x80000001,
     0,
     EDX,
     "leaf 0x80000001 edx",
     0,
     {NULL,	 NULL, NULL, NULL,	 NULL,	    NULL,     NULL, NULL, NULL,	      NULL,   NULL,
      "syscall", NULL, NULL, NULL,	 NULL,	    NULL,     NULL, NULL, "mp",	      "nx",   NULL,
      "mmxext",	 NULL, NULL, "fxsr_opt", "pdpe1gb", "rdtscp", NULL, "lm", "3dnowext", "3dnow"}},
};

/* The register of leaf.subleaf, or 0 where the set has no such entry.
 * Leaves without KVM_CPUID_FLAG_SIGNIFCANT_INDEX ignore the subleaf. */
static uint32_t reg_of(const struct kvm_cpuid2 *c, uint32_t leaf, uint32_t subleaf, enum reg r)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != leaf)
			continue;
		if ((e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e->index != subleaf)
			continue;
		return r == EAX ? e->eax : r == EBX ? e->ebx : r == ECX ? e->ecx : e->edx;
	}
	return 0;
}

/* Append name to out (", " between), "..." once it no longer fits. */
static void append(char *out, size_t len, size_t *used, bool *full, const char *name)
{
	if (*full || !len)
		return;
	const char *sep = *used ? ", " : "";
	int n = snprintf(out + *used, len - *used, "%s%s", sep, name);
	if (n >= 0 && (size_t)n < len - *used) {
		*used += (size_t)n;
		return;
	}
	*full = true;
	/* Keep what fits, end it with "..." */
	out[*used] = '\0';
	if (len - *used >= 4)
		memcpy(out + *used, "...", 4);
	else if (len >= 4)
		memcpy(out + len - 4, "...", 4);
}

int vcpu_cpuid_compatible(const struct kvm_cpuid2 *guest, const struct kvm_cpuid2 *host,
			  char *missing, size_t len)
{
	size_t used = 0;
	bool full = false, any = false;
	if (len)
		missing[0] = '\0';
	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
		const struct feature_word *f = &words[w];
		uint32_t lack = reg_of(guest, f->leaf, f->subleaf, f->reg) &
				~reg_of(host, f->leaf, f->subleaf, f->reg) & ~f->ignore;
		for (unsigned b = 0; b < 32; b++) {
			if (!(lack & (1u << b)))
				continue;
			char unnamed[48];
			const char *name = f->names[b];
			if (!name) {
				snprintf(unnamed, sizeof(unnamed), "%s bit %u", f->label, b);
				name = unnamed;
			}
			append(missing, len, &used, &full, name);
			any = true;
		}
	}
	return any ? -ENOTSUP : 0;
}
