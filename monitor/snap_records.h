/* The state file's records as ember writes them (monitor/vm_snapshot.c,
 * the parts' in vm_parts.c and vdevs.c) and their up-front check
 * (monitor/snap_check.c).  Private to monitor/vm*.c, vdevs.c and the
 * state-file fuzzer (tests/fuzz/fuzz_snapstate.c). */
#ifndef EMBER_MONITOR_SNAP_RECORDS_H
#define EMBER_MONITOR_SNAP_RECORDS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "monitor/hvt/hvt.h"
#include "snapshot/snapshot.h"

struct kvm_cpuid2;

#define TAG_CONF SNAP_TAG('C', 'O', 'N', 'F')
#define TAG_CPID SNAP_TAG('C', 'P', 'I', 'D')
#define TAG_KVMS SNAP_TAG('K', 'V', 'M', 'S')
#define TAG_VCPU SNAP_TAG('V', 'C', 'P', 'U')
#define TAG_UART SNAP_TAG('U', 'A', 'R', 'T')
#define TAG_VDEV SNAP_TAG('V', 'D', 'E', 'V')
#define TAG_VDVX SNAP_TAG('V', 'D', 'V', 'X')
#define TAG_HVTG SNAP_TAG('H', 'V', 'T', 'G')
#define TAG_MEMF SNAP_TAG('M', 'E', 'M', 'F')
#define TAG_MEMH SNAP_TAG('M', 'E', 'M', 'H')

/* The largest VDVX record (a device's own state) ember writes. */
#define SNAP_DEV_RECORD_MAX 4096

/* Which file the snapshot's memory was written to: after a crash between
 * the state file's commit and the memory file's rename, "<mem>.next" is
 * recognised by this, exactly; and that file is taken without reading it
 * all.  Any other file (a copy, a merge, another snapshot's) must have
 * the content hash MEMH records.  mtime tells a file from a later one
 * that reuses a freed inode number. */
struct memfile_id {
	uint64_t dev, ino, size, mtime_ns;
};
_Static_assert(sizeof(struct memfile_id) == 32, "a snapshot record");

/* What a restore of a Solo5 hvt guest needs besides its memory. */
struct hvt_record {
	struct hvt_manifest mft;
	uint64_t mem_size, kernel_end;
};

/* CONF holds struct vm_config with its zero runs squeezed out: pairs of
 * {u32 literal bytes, u32 zero bytes}, each followed by the literal
 * bytes.  squeeze() writes at most 2 * len + 8 bytes to out. */
size_t snap_conf_squeeze(const uint8_t *in, size_t len, uint8_t *out);
/* 0, or -EINVAL when in is not a squeezed blob of exactly len bytes. */
__attribute__((warn_unused_result)) int snap_conf_unsqueeze(const uint8_t *in, size_t inlen,
							    uint8_t *out, size_t len);

/* FNV-1a over the CPUID entries: the header's cpuid_sig. */
uint64_t snap_cpuid_sig(const struct kvm_cpuid2 *c);

/* The bytes of a struct kvm_cpuid2 with its entries: the CPID record. */
size_t snap_cpuid_bytes(const struct kvm_cpuid2 *c);

/* The error convention of the snapshot code (vm_snapshot.c, vm_restore.c,
 * vm_stream.c): the reason formatted into err, r returned. */
int snap_err(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Check every record of an opened state file (its header, CRC and
 * section bounds already checked by snap_r_open) before anything is
 * built from it: the configuration rebuilt through cfg_import() into cfg
 * and matching the header; each section ember writes present once with
 * its exact size (VCPU 0..n-1, VDEV and VDVX for the configuration's
 * devices and no more), the CPUID entries matching their signature, the
 * hvt manifest through hvt_parse_manifest() and its layout the one
 * hvt_setup() makes; no section of another kind.  What only a device can
 * judge (its VDVX record, its transport state) its restore op checks.
 * 0, or -EINVAL with "NAME: section TAG i: why" in err. */
__attribute__((warn_unused_result)) int snap_check_records(const struct snap_reader *rd,
							   const char *name, struct vm_config *cfg,
							   char *err, size_t errlen);

/* The HVTG record's manifest through hvt_parse_manifest() into out, and
 * its layout checked against mem_size as configured.  0 or -EINVAL with
 * the reason in err. */
__attribute__((warn_unused_result)) int snap_check_hvt(const struct hvt_record *h,
						       uint64_t cfg_mem_size,
						       struct hvt_manifest *out, char *err,
						       size_t errlen);

/* ---- shared by monitor/vm*.c ---- */

struct vm;

/* A snapshot opened for a restore (vm.h): its state, every record
 * checked, and where its memory is. */
struct vm_snapshot {
	struct snap_reader rd;
	char name[PATH_MAX]; /* the state file's path, or VM_STREAM_NAME: messages */
	struct snap_stream *stream; /* the memory follows here; NULL: a memory file */
	/* A post-copy migration's RAM (premade): pages still on the source,
	 * so no digest to check here (docs/migration.md, "Post-copy") */
	bool mem_partial;
};

/* Start w with the header of a snapshot of vm (paused: vm_pause) and add
 * every record but memory's (MEMF, MEMH): the parts' (vm_state_save),
 * then what a restore builds from (CPID, CONF).  0 or -errno with the
 * reason in err; w needs snap_w_free() either way. */
__attribute__((warn_unused_result)) int vm_snapshot_records(struct vm *vm, struct snap_writer *w,
							    bool diff, char *err, size_t errlen);

/* Start w with a header (vCPUs, memory size, CPUID signature) and only
 * what a restore builds from (CPID, CONF): a migration's setup check,
 * made while the VM runs.  0 or -errno with the reason in err; w needs
 * snap_w_free() either way. */
__attribute__((warn_unused_result)) int vm_setup_records(struct vm *vm, struct snap_writer *w,
							 char *err, size_t errlen);

/* A migration's SETU (vm_setup_records' state file, named name) checked
 * before any memory moves: its header, the configuration rebuilt through
 * cfg_import() into cfg (vCPUs and memory matching the header), the
 * CPUID section whole.  0 or -EINVAL with the reason in err. */
__attribute__((warn_unused_result)) int snap_check_setup(const struct snap_reader *rd,
							 const char *name, struct vm_config *cfg,
							 char *err, size_t errlen);

/* The guest s holds, in place of a boot's kernel, for vm_build(): RAM
 * from its memory (the file at mem_path, mapped or with copy read in; or
 * the stream; or, already in vm->mem, a migration's, checked), vm->has_irqchip as saved, the CPUID the guest was given
 * (vm->guest_cpuid: the vCPUs get it if this host has all of it), and a
 * Solo5 guest's manifest and layout (vm->hvt, vm->boot.proto).  A memory
 * file is taken only when it is the snapshot's (MEMF, or every page
 * hashing to MEMH).  0; -EINVAL (the reason naming the snapshot in err)
 * when s and vm->cfg or the memory disagree; another -errno for host
 * trouble. */
__attribute__((warn_unused_result)) int vm_snapshot_guest(struct vm_snapshot *s, struct vm *vm,
							  const char *mem_path, bool copy,
							  char *err, size_t errlen);

/* vm_snapshot_guest()'s memory from a stream (s->stream): fresh
 * anonymous RAM filled from the stream's memory records, which must hash
 * to the state's MEMH.  0, -EINVAL or -errno, the reason in err. */
__attribute__((warn_unused_result)) int vm_stream_memory(struct vm_snapshot *s, struct vm *vm,
							 char *err, size_t errlen);

/* The machine's parts (vm_parts.c), each registered as it is built:
 * the KVM VM state (KVMS 0), vCPU i (VCPU i), the UART (UART 0), the hvt
 * frontend (HVTG 0).  0 or vm_part_add()'s -errno. */
__attribute__((warn_unused_result)) int vm_parts_add_kvm(struct vm *vm);
__attribute__((warn_unused_result)) int vm_parts_add_vcpu(struct vm *vm, unsigned i);
__attribute__((warn_unused_result)) int vm_parts_add_uart(struct vm *vm);
__attribute__((warn_unused_result)) int vm_parts_add_hvt(struct vm *vm);

#endif
