/* badptr.hvt: one hypercall with a bad guest address, chosen by the
 * command line (one word, see main below).  The monitor must stop the
 * guest with a message naming the call and the address, and come to no
 * harm itself.  Prints "about to CASE" first; if the call returns, prints
 * "badptr: CASE returned" and halts 3, which a test reports as a failure.
 *
 * Addresses: "outside" is 0xd0000000 (above RAM for guests under 3 GiB,
 * below 4 GiB so it fits the 32-bit OUT); "straddling" ranges start inside
 * RAM and end past boot_info.mem_size, which the test keeps equal to the
 * RAM size (--mem=64).  One block device "storage" (for blkread /
 * blkwrite), so every run needs --block:storage=IMG. */
#include "hvt_guest.h"

HVT_MANIFEST(HVT_BLOCK("storage"));

#define OUTSIDE 0xd0000000ULL

static char msg[] = "badptr: this must not be printed\n";

static void puts_raw(u64 data, u64 len)
{
	struct hvt_hc_puts a = {.data = data, .len = len};
	hvt_hypercall(HVT_PUTS, &a);
}

static int block_raw(unsigned nr, u64 data, u64 len)
{
	const struct hvt_mft_entry *e;
	int h = hvt_mft_find("storage", HVT_MFT_BLOCK_BASIC, &e);
	struct hvt_hc_block a = {
	    .handle = (u64)h, .offset = 0, .data = data, .len = len, .ret = HVT_RET_UNSET};

	hvt_hypercall(nr, &a);
	return a.ret;
}

static void halt_raw(u64 cookie_gpa)
{
	struct hvt_hc_halt a = {.cookie = cookie_gpa, .exit_status = 0};
	hvt_hypercall(HVT_HALT, &a);
}

int main(const struct hvt_boot_info *bi)
{
	u64 end = bi->mem_size, m = (u64)(uintptr_t)msg;
	const char *c = cmdline();

	kprintf("about to %s\n", c);
	if (!strcmp(c, "puts")) /* string outside RAM */
		puts_raw(OUTSIDE, 16);
	else if (!strcmp(c, "puts_end")) /* string straddling the end of RAM */
		puts_raw(end - 8, 16);
	else if (!strcmp(c, "puts_len")) /* valid start, huge length */
		puts_raw(m, end);
	else if (!strcmp(c, "puts_wrap")) /* start + length wraps 2^64 */
		puts_raw(m, ~0ULL - 7);
	else if (!strcmp(c, "blkread")) /* read into a buffer running past RAM */
		kprintf("ret %d\n", block_raw(HVT_BLOCK_READ, end - 256, 512));
	else if (!strcmp(c, "blkwrite")) /* write from outside RAM */
		kprintf("ret %d\n", block_raw(HVT_BLOCK_WRITE, OUTSIDE, 512));
	else if (!strcmp(c, "arg")) /* the argument struct itself outside RAM */
		hvt_hypercall_raw(HVT_PUTS, (u32)OUTSIDE);
	else if (!strcmp(c, "arg_end")) /* argument struct straddling the end */
		hvt_hypercall_raw(HVT_PUTS, (u32)(end - 8));
	else if (!strcmp(c, "arg_top")) /* 4 GiB - 8: + 16 wraps in 32 bits */
		hvt_hypercall_raw(HVT_PUTS, 0xfffffff8u);
	else if (!strcmp(c, "halt_cookie")) /* HALT (status 0), cookie outside RAM */
		halt_raw(OUTSIDE);
	else if (!strcmp(c, "halt_cookie_end")) /* cookie's 512 bytes straddle the end */
		halt_raw(end - 256);
	else if (!strcmp(c, "short_out")) /* a hypercall port written with outb */
		__asm__ volatile("outb %b0, %w1"
				 :
				 : "a"((u8)0x10), "Nd"((u16)(HVT_PIO_BASE + HVT_PUTS)));
	else if (!strcmp(c, "low")) { /* below 0x10000 is unmapped: #PF, no IDT: triple fault */
		u64 low = 0x1000;
		__asm__("" : "+r"(low)); /* opaque: no compile-time NULL-ish trap */
		kprintf("read %lx\n", *(volatile u64 *)(uintptr_t)low);
	} else {
		kprintf("badptr: unknown case '%s'\n", c);
		return 2;
	}
	kprintf("badptr: %s returned\n", c);
	return 3;
}
