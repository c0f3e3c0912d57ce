/* The Solo5 "ABI1" note, linked into each guest.  The defaults make an hvt
 * ABI-version-2 guest; the Makefile builds variants the monitor must
 * refuse (-DHVT_NOTE_VERSION=1: abi_v1.hvt; -DHVT_NOTE_TARGET=2, an spt
 * guest: wrong_target.hvt). */
#include "hvt_guest.h"

#ifndef HVT_NOTE_TARGET
#define HVT_NOTE_TARGET HVT_ABI_TARGET_HVT
#endif
#ifndef HVT_NOTE_VERSION
#define HVT_NOTE_VERSION HVT_ABI_VERSION
#endif

__attribute__((used, section(".note.solo5.abi"),
	       aligned(4))) static const struct hvt_abi1_note hvt_abi_note = {
    .h = {.namesz = sizeof(HVT_NOTE_NAME),
	  .descsz = sizeof(struct hvt_abi1_note) - sizeof(struct hvt_nhdr),
	  .type = HVT_NOTE_ABI1,
	  .name = HVT_NOTE_NAME},
    .target = HVT_NOTE_TARGET,
    .version = HVT_NOTE_VERSION,
};
