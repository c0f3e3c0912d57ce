/* What real Solo5 (>= 0.6) binaries carry besides the ABI and manifest
 * notes, for solo5_layout.hvt: a PT_INTERP naming a path that cannot exist
 * (so a host kernel refuses to exec the unikernel) and, in the first
 * PT_NOTE, an OpenBSD identification note (so OpenBSD honours that
 * PT_INTERP).  A monitor must load such a file and skip both. */
#include "hvt_guest.h"

__attribute__((used, section(".interp"), aligned(8))) static const char interp[24] =
    "/nonexistent/solo5/";

__attribute__((used, section(".note.solo5.not_openbsd"), aligned(4))) static const struct {
	u32 namesz, descsz, type;
	char name[8];
	u32 data;
} openbsd_note = {8, 4, 1, "OpenBSD", 0};
