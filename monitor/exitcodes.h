/* ember's process exit codes (documented in README.md, "Exit codes").
 * A guest's own status (exit port, later hvt halt) is passed through
 * unchanged, so these sit in a range small guests rarely use. */
#ifndef EMBER_EXITCODES_H
#define EMBER_EXITCODES_H

#include <errno.h>

#define EXIT_GUEST_RESET 0    /* guest reset through i8042 (0xFE to port 0x64) */
#define EXIT_GUEST_FAULT 120  /* guest broke its ABI: a hypercall with a bad pointer */
#define EXIT_CONFIG 121	      /* bad command line, INI, or kernel/initrd file */
#define EXIT_HOST 122	      /* host/KVM failure: /dev/kvm, ioctls, memory */
#define EXIT_TRIPLE_FAULT 123 /* guest triple fault / shutdown */
#define EXIT_TIMEOUT 124      /* --timeout expired (as timeout(1)) */
#define EXIT_KVM_ERROR 125    /* KVM internal error / failed entry; registers on stderr */
#define EXIT_GUEST_HALTED 126 /* HLT with no interrupt source: the guest can never resume */

/* Functions return 0 or -errno; main turns a failed vm_build() (or any
 * such step) into an exit code: -EINVAL says the input was bad (the
 * configuration, a kernel, a snapshot), anything else is the host's. */
static inline int exit_code_of(int neg_errno)
{
	return neg_errno == -EINVAL ? EXIT_CONFIG : EXIT_HOST;
}

#endif
