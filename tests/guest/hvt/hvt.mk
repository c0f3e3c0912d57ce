# ember's Solo5 hvt test guests (tests/guest/hvt/README.md), included by
# tests/guest/Makefile: builds $(BUILD)/hvt/NAME.hvt with that Makefile's
# GUEST_CC and GUEST_CFLAGS (integer-only, freestanding) and our own
# linker script (Solo5's hvt layout: one PT_LOAD per permission, one
# PT_NOTE per Solo5 note).
HVT_DIR := hvt
HVT_OUT := $(BUILD)/hvt
HVT_LDFLAGS := -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-z,noexecstack \
	-Wl,-z,max-page-size=0x1000
HVT_LDS := $(HVT_DIR)/hvt.ld
HVT_GUESTS := hello walltime poll blk net halt badptr devices protect many
# hello laid out as a real Solo5 binary (PT_INTERP, OpenBSD note).
HVT_GUESTS_OTHER := solo5_layout
# Variants the monitor must refuse: other ABI notes, no manifest.
HVT_REFUSED := abi_v1 wrong_target no_mft
# The runtime, and the C library the PVH guests use too (KLIB: ../Makefile).
HVT_RUNTIME := $(HVT_OUT)/obj/start.o $(HVT_OUT)/obj/runtime.o $(KLIB)
HVT_ABI_V2 := $(HVT_OUT)/obj/note_abi_v2.o
# Reached only through the pattern rule: keep them (not intermediate).
.SECONDARY: $(HVT_RUNTIME)

all: $(HVT_GUESTS:%=$(HVT_OUT)/%.hvt) $(HVT_GUESTS_OTHER:%=$(HVT_OUT)/%.hvt) \
	$(HVT_REFUSED:%=$(HVT_OUT)/%.hvt)

$(HVT_OUT)/obj/%.o: $(HVT_DIR)/%.c
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(HVT_OUT)/obj/%.o: $(HVT_DIR)/%.S
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(HVT_OUT)/obj/note_abi_v2.o: $(HVT_DIR)/note_abi.c
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@
$(HVT_OUT)/obj/note_abi_v1.o: $(HVT_DIR)/note_abi.c
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -DHVT_NOTE_VERSION=1 -c $< -o $@
$(HVT_OUT)/obj/note_abi_spt.o: $(HVT_DIR)/note_abi.c
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -DHVT_NOTE_TARGET=HVT_ABI_TARGET_SPT -c $< -o $@
$(HVT_OUT)/obj/hello_nomft.o: $(HVT_DIR)/hello.c
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -DHVT_OMIT_MANIFEST -c $< -o $@

$(HVT_GUESTS:%=$(HVT_OUT)/%.hvt): $(HVT_OUT)/%.hvt: $(HVT_OUT)/obj/%.o $(HVT_ABI_V2)
# net.hvt also speaks ring I/O (ring.c).
$(HVT_OUT)/net.hvt: $(HVT_OUT)/obj/ring.o
$(HVT_OUT)/abi_v1.hvt: $(HVT_OUT)/obj/hello.o $(HVT_OUT)/obj/note_abi_v1.o
$(HVT_OUT)/wrong_target.hvt: $(HVT_OUT)/obj/hello.o $(HVT_OUT)/obj/note_abi_spt.o
$(HVT_OUT)/no_mft.hvt: $(HVT_OUT)/obj/hello_nomft.o $(HVT_ABI_V2)
$(HVT_OUT)/solo5_layout.hvt: HVT_LDS := $(HVT_DIR)/hvt_solo5.ld
$(HVT_OUT)/solo5_layout.hvt: $(HVT_OUT)/obj/hello.o $(HVT_ABI_V2) $(HVT_OUT)/obj/solo5_extras.o \
	$(HVT_DIR)/hvt_solo5.ld
$(HVT_OUT)/%.hvt: $(HVT_RUNTIME) $(HVT_DIR)/hvt.ld
	$(GUEST_CC) $(HVT_LDFLAGS) -Wl,-T,$(HVT_LDS) -o $@ $(filter %.o,$^)

-include $(wildcard $(HVT_OUT)/obj/*.d)
