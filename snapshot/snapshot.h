/* Snapshot files: the state file (a header, tagged sections, a CRC
 * trailer) and the memory file (raw guest RAM, sparse).  Pure file logic,
 * no KVM: monitor/vm_snapshot.c decides what goes in.
 *
 * Every file is written to "<path>.tmp-<pid>", fsynced, renamed over path
 * and the directory fsynced: a crash at any point leaves the previous file
 * or the new one whole, and a failed write leaves neither a temp file nor
 * a changed path.  Functions returning int give 0 or -errno with the
 * reason, naming the file, in err (SNAP_ERR_MAX is enough).
 *
 * State file layout (little-endian throughout):
 *   struct snap_header                              64 bytes at offset 0
 *   nr_sections x { u32 tag, u32 index, u64 len;    16 bytes
 *                   len bytes, zero-padded to a multiple of 8 }
 *   u32 CRC-32 (IEEE) of every byte before it */
#ifndef EMBER_SNAPSHOT_H
#define EMBER_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_ERR_MAX 512
#define SNAP_MAGIC "EMBRSNAP"
/* 2: the memory file's content hash (MEMH) and its full identity (MEMF).
 * 3: CONF from a configuration of 63 drives and nets, a sector size per
 * drive and [vm] dumpcore (solo5-hvt's limits). */
#define SNAP_VERSION 3
#define SNAP_PAGE 4096ULL /* the memory file's and the dirty bitmap's unit */

enum { SNAP_ARCH_X86_64 = 1 };

/* header.flags.  DIFF: the memory file holds only the pages dirtied
 * since the previous snapshot (snap_mem_merge() it onto that one's). */
#define SNAP_F_DIFF 0x1u
#define SNAP_F_KNOWN SNAP_F_DIFF

/* A section tag: four ASCII characters, as they read in a hex dump. */
#define SNAP_TAG(a, b, c, d)                                                                       \
	((uint32_t)(uint8_t)(a) | (uint32_t)(uint8_t)(b) << 8 | (uint32_t)(uint8_t)(c) << 16 |     \
	 (uint32_t)(uint8_t)(d) << 24)

struct snap_header {
	char magic[8]; /* "EMBRSNAP", no NUL */
	uint32_t version, arch;
	uint32_t nr_vcpus, flags;
	uint64_t mem_size;   /* guest RAM bytes = the memory file's size */
	uint64_t mem_digest; /* snap_mem_digest() of the whole RAM as saved (a diff: once merged) */
	uint64_t cpuid_sig;  /* a hash of the CPUID entries given to the guest */
	uint64_t created_ns; /* CLOCK_REALTIME */
	uint32_t nr_sections, reserved;
};
_Static_assert(sizeof(struct snap_header) == 64, "snap_header is the on-disk header");

/* ---- state file: build in memory, then commit ---- */

struct snap_writer {
	struct snap_header h;
	uint8_t *buf; /* the file as it will be written, trailer excepted */
	size_t len, cap;
	int error; /* the first failed add: commit refuses */
	char why[128];
};

/* Start a state file.  h gives nr_vcpus, flags, mem_size, mem_digest and
 * cpuid_sig (and created_ns, or 0 for "now" at commit); magic, version,
 * arch and nr_sections are the writer's.  Cannot fail: allocation happens
 * in snap_w_add(). */
void snap_w_init(struct snap_writer *w, const struct snap_header *h);

/* Append section (tag, index) holding len bytes of data (copied; data may
 * be NULL when len is 0).  -EEXIST for a (tag, index) already added,
 * -ENOMEM, -EOVERFLOW.  A failure is remembered: snap_w_commit() then
 * refuses, so callers may check only the commit. */
__attribute__((warn_unused_result)) int snap_w_add(struct snap_writer *w, uint32_t tag,
						   uint32_t index, const void *data, uint64_t len);

/* Write header, sections and CRC trailer to path atomically (see the top
 * of this file); the file is mode 0600.  Refuses a writer that had a
 * failed add.  The writer stays valid (free it either way). */
__attribute__((warn_unused_result)) int snap_w_commit(struct snap_writer *w, const char *path,
						      char *err, size_t errlen);

/* The state file w holds, as snap_w_commit() would write it (header,
 * sections, CRC trailer), in *buf (malloc'd, *len bytes; free it): for
 * streams.  Refuses a writer that had a failed add. */
__attribute__((warn_unused_result)) int snap_w_bytes(struct snap_writer *w, uint8_t **buf,
						     size_t *len, char *err, size_t errlen);

/* Release the writer's memory; safe twice and after a zeroed init. */
void snap_w_free(struct snap_writer *w);

struct snap_section {
	uint32_t tag, index;
	uint64_t len;
	const uint8_t *data; /* into the reader's buffer, 8-byte aligned */
};

struct snap_reader {
	struct snap_header h; /* decoded, host order */
	uint8_t *buf;	      /* the whole file */
	size_t len;
	struct snap_section *sec; /* h.nr_sections, in file order */
};

/* Read and check the whole state file.  Refuses (-EINVAL; -errno for I/O)
 * with a message naming path and what is wrong: a short file, bad magic,
 * another format version or architecture, unknown flags, a CRC mismatch,
 * a section running past the end, a duplicate (tag, index), a section
 * count other than the header's.  On failure r needs no close. */
__attribute__((warn_unused_result)) int snap_r_open(struct snap_reader *r, const char *path,
						    char *err, size_t errlen);

/* The same checks over a state file already in memory (len bytes at buf,
 * copied; name is what messages call it): for migration streams and
 * the fuzzer. */
__attribute__((warn_unused_result)) int snap_r_open_mem(struct snap_reader *r, const void *buf,
							size_t len, const char *name, char *err,
							size_t errlen);

/* The data of section (tag, index), its length in *len (may be NULL), or
 * NULL when the file has no such section.  Valid until snap_r_close(). */
const void *snap_r_find(const struct snap_reader *r, uint32_t tag, uint32_t index, uint64_t *len);

/* Release the reader; safe twice and after a failed open. */
void snap_r_close(struct snap_reader *r);

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32()): start with crc 0 and
 * chain calls over consecutive buffers. */
uint32_t snap_crc32(uint32_t crc, const void *buf, size_t len);

/* ---- memory files ---- */

/* The content hash that ties a memory file to its state file: the sum
 * (mod 2^64) over every page i that is not all zero of
 * XXH3_64bits_withSeed(page, 4096, i).  A hash of every byte (unlike
 * snap_mem_digest's sample), independent of which zero pages are holes,
 * and additive, so a diff snapshot updates it from the dirty pages alone:
 * sum - old term + new term.  terms, when not NULL, holds each page's
 * term (0 for zero pages), len / SNAP_PAGE of them, kept by the caller
 * from one snapshot to the next.  The format is fixed: state files store
 * the sum. */
struct snap_mem_hash {
	uint64_t sum;
	uint64_t *terms;
};

/* How far a long operation has got (a snapshot, a load, a migration):
 * written by the thread doing it, read by any other (the API's GET /)
 * without a lock.  phase is a static string; done and total count bytes
 * (total 0: not known yet).  Every writer below takes one, NULL for none. */
struct snap_progress {
	_Atomic(const char *) phase;
	_Atomic uint64_t done, total;
};

/* Enter a phase: done back to 0 of total.  p NULL is ignored. */
static inline void snap_progress_phase(struct snap_progress *p, const char *phase,
				       uint64_t total)
{
	if (!p)
		return;
	atomic_store(&p->done, 0);
	atomic_store(&p->total, total);
	atomic_store(&p->phase, phase);
}

/* n more bytes done.  p NULL is ignored. */
static inline void snap_progress_add(struct snap_progress *p, uint64_t n)
{
	if (p)
		atomic_fetch_add_explicit(&p->done, n, memory_order_relaxed);
}

/* One page's term (0 for an all-zero page). */
uint64_t snap_mem_page_term(const uint8_t *page, uint64_t index);

/* The hash of len bytes of RAM in memory: h->sum, and h->terms filled
 * when it is not NULL. */
void snap_mem_hash_ram(const uint8_t *ram, uint64_t len, struct snap_mem_hash *h);

/* The hash of a memory file of len bytes read through fd (its data
 * ranges only, with pread: holes cost nothing and a tmpfs file is not
 * filled in): h->sum, and h->terms when not NULL.  0, or -errno with the
 * reason in err (name names the file). */
__attribute__((warn_unused_result)) int snap_mem_hash_fd(int fd, uint64_t len, const char *name,
							 struct snap_mem_hash *h, char *err,
							 size_t errlen);

/* Write len bytes of guest RAM (a multiple of SNAP_PAGE) to path: the file
 * is len bytes, all-zero pages stay holes, runs of non-zero pages go out
 * in one write each.  h (may be NULL) receives the content hash, and its
 * terms when h->terms is not NULL, computed on the way (every page is
 * read for the zero check anyway).  prog counts the bytes of RAM gone
 * through (of len). */
__attribute__((warn_unused_result)) int snap_mem_write_full(const char *path, const uint8_t *ram,
							    uint64_t len, struct snap_mem_hash *h,
							    struct snap_progress *prog, char *err,
							    size_t errlen);

/* Write a diff: exactly the pages whose bit is set in dirty (bit i of
 * dirty[i / 64] = page i, KVM_GET_DIRTY_LOG's order), all-zero ones too,
 * as data; every other page is a hole.  Refuses (-EOPNOTSUPP) a file
 * system whose SEEK_DATA map would not say exactly those pages, since
 * snap_mem_merge() reads the diff through it.  h (may be NULL; else
 * h->terms must hold the previous snapshot's terms) is updated to the
 * hash of the whole RAM as it is now, from the dirty pages alone.  prog
 * counts the bytes written. */
__attribute__((warn_unused_result)) int snap_mem_write_diff(const char *path, const uint8_t *ram,
							    uint64_t len, const uint64_t *dirty,
							    struct snap_mem_hash *h,
							    struct snap_progress *prog, char *err,
							    size_t errlen);

/* The bytes of the pages whose bit is set in pages (a bitmap as above)
 * of len bytes of RAM. */
uint64_t snap_pages_bytes(const uint64_t *pages, uint64_t len);

/* Fold diff into base: every data range of diff is copied onto base at
 * the same offset; both must have the same size.  Crash-safe: the result
 * is built in a copy of base's data ranges (copy_file_range, which
 * reflinks where the file system can) at a temp name, then renamed over
 * base.  diff is left as it was. */
__attribute__((warn_unused_result)) int snap_mem_merge(const char *base, const char *diff,
						       char *err, size_t errlen);

/* A cheap tie between a state file and its memory file, not an integrity
 * check: a 64-bit hash of len, the first 64 KiB, the last 4 KiB and 60
 * evenly spaced 4 KiB pages between them (all of ram when it is smaller
 * than those).  The format is fixed: it is stored in state files. */
uint64_t snap_mem_digest(const uint8_t *ram, uint64_t len);

/* Map a memory file for a restore into *ram: refuses (-ERANGE) a size
 * other than expect_len, (-EINVAL) what is not a regular file.  copy
 * false: MAP_PRIVATE, pages load lazily and the guest's writes stay in
 * this process (the file must outlive the mapping and not change);
 * copy true: anonymous memory filled from the file's data ranges, so the
 * file may go away.  Either way MAP_NORESERVE; undo with
 * snap_mem_unmap(). */
__attribute__((warn_unused_result)) int snap_mem_map(const char *path, uint64_t expect_len,
						     bool copy, uint8_t **ram, char *err,
						     size_t errlen);

/* Unmap what snap_mem_map() mapped; ram NULL is ignored. */
void snap_mem_unmap(uint8_t *ram, uint64_t len);

/* ---- streams: a whole snapshot in one byte stream (stream.c) ----
 *
 * For pipes and sockets: `ember snapshot create --to -`, `ember run
 * --restore -`, and migration.  Written and read strictly in order, never
 * seeked; a writer handles short writes, EINTR and a non-blocking fd.
 * Little-endian throughout:
 *
 *   header   "EMBRSTRM", u32 version, u32 flags (0)                16 bytes
 *   state    u64 length, then that many bytes: a state file exactly as
 *            snap_w_commit() writes it (its own header and CRC)
 *   records  { u32 type, u32 zero, u64 a, u64 b }, each 24 bytes, then:
 *     DATA   a = first page, b = page count; b * SNAP_PAGE bytes of RAM
 *     ZERO   a = first page, b = page count: these pages are all zero
 *     ENDR   a = RAM's page count, b = RAM's content hash (struct
 *            snap_mem_hash) once every record is applied; nothing after
 *
 * Runs (DATA and ZERO) are not empty, lie inside RAM, and go in ascending
 * page order without overlapping: a reader refuses anything else.  A full
 * stream holds the non-zero pages only (its reader starts from zeroed
 * RAM); a stream of a dirty set (migration's later rounds) holds each
 * dirty page, as a zero marker where it is all zero.  A reader recomputes
 * the hash as it goes and refuses a stream whose ENDR says otherwise.
 *
 * A refusal names the byte offset and the part being read:
 *   "stream: byte 123456: truncated in memory run at page 0x1f00 (...)"
 *   "stream: byte 24: state file: CRC mismatch (...)" */
#define SNAP_STREAM_MAGIC "EMBRSTRM"
#define SNAP_STREAM_VERSION 1
#define SNAP_STREAM_HDR 16u	       /* the header's bytes */
#define SNAP_STREAM_REC 24u	       /* a record header's bytes */
#define SNAP_STREAM_STATE_MAX (64u << 20) /* the longest state a reader takes */
#define SNAP_REC_DATA SNAP_TAG('D', 'A', 'T', 'A')
#define SNAP_REC_ZERO SNAP_TAG('Z', 'E', 'R', 'O')
#define SNAP_REC_END SNAP_TAG('E', 'N', 'D', 'R')

/* One end of a stream: the fd (blocking or not; not owned), the bytes
 * moved through it so far, which messages name, and (may be NULL) the
 * progress that counts them too. */
struct snap_stream {
	int fd;
	uint64_t off;
	struct snap_progress *prog;
};

/* Write the stream's header and the state file w holds (snap_w_bytes()).
 * 0 or -errno ("stream: byte N: write: Broken pipe ..." in err). */
__attribute__((warn_unused_result)) int snap_stream_put_state(struct snap_stream *s,
							      struct snap_writer *w, char *err,
							      size_t errlen);

/* Hash len bytes of RAM and note which pages are not all zero, in one
 * pass: h->sum (h->terms filled when not NULL) and bit i of nonzero (i /
 * 64 words, KVM_GET_DIRTY_LOG's order; len / SNAP_PAGE bits, the rest of
 * the last word left clear) for each page i that is not zero.  A full
 * stream's state records the hash before its memory is written. */
void snap_mem_scan(const uint8_t *ram, uint64_t len, struct snap_mem_hash *h, uint64_t *nonzero);

/* Write the memory records: the pages whose bit is set in pages (a
 * bitmap as above), non-zero ones as DATA runs and all-zero ones as ZERO
 * markers; then ENDR with len / SNAP_PAGE and hash (the hash of RAM as
 * the reader will have it).  0 or -errno with the reason in err. */
__attribute__((warn_unused_result)) int snap_stream_put_mem(struct snap_stream *s,
							    const uint8_t *ram, uint64_t len,
							    const uint64_t *pages, uint64_t hash,
							    char *err, size_t errlen);

/* The bytes snap_stream_put_mem() writes for pages (a bitmap as above)
 * of len bytes of RAM when every page in it is not zero (a full stream:
 * exact), its records and ENDR included; for a dirty set, an upper bound
 * (zero pages go as markers). */
uint64_t snap_stream_mem_bytes(const uint64_t *pages, uint64_t len);

/* Read the stream's header and its state file into r, checked as
 * snap_r_open_mem() checks one (named "stream: byte N: state file" in
 * messages, N where it starts).  -EINVAL for a stream that is truncated
 * or not one this ember reads, -errno for I/O; r needs no close then. */
__attribute__((warn_unused_result)) int snap_stream_get_state(struct snap_stream *s,
							      struct snap_reader *r, char *err,
							      size_t errlen);

/* Read memory records up to ENDR and apply them to len bytes of RAM at
 * ram: DATA pages read straight into it, ZERO runs cleared.  zeroed:
 * ram is all zero (fresh anonymous memory), so nothing is read before it
 * is written and h's input is ignored; else h->sum is the hash of ram as
 * it is and h->terms (may be NULL: then computed from ram) each page's
 * term.  On success h->sum is ENDR's hash, which the pages were found to
 * have (h->terms updated when not NULL).  -EINVAL for a truncated or bad
 * stream (a run outside RAM, out of order or overlapping, an unknown
 * record, another RAM size, a hash mismatch), -errno for I/O; ram then
 * holds part of the stream. */
__attribute__((warn_unused_result)) int snap_stream_get_mem(struct snap_stream *s, uint8_t *ram,
							    uint64_t len, bool zeroed,
							    struct snap_mem_hash *h, char *err,
							    size_t errlen);

/* ---- the live migration stream (migstream.c; docs/migration.md) ----
 *
 * One bidirectional byte stream of typed records, each a 32-byte header
 *   { u32 type, u32 len, u64 a, u64 b, u32 crc, u32 0 }
 * and len bytes of payload; crc is the CRC-32 (snap_crc32) of the header
 * with crc as 0, then of the payload.  What each type carries (a, b,
 * payload) is in SNAP_MIG_* below; a reader refuses an unknown type, a
 * reserved word that is not 0, a length the type cannot have, and a CRC
 * mismatch, naming the byte offset and the record:
 *   "stream: byte 4128: record DATA (page 0x20, 0x10 pages): CRC mismatch ..."
 * Pure record code: what records follow which is monitor/migrate/'s. */
#define SNAP_MIG_MAGIC "EMBRMIGR"
#define SNAP_MIG_VERSION 1
#define SNAP_MIG_HDR 32u
#define SNAP_MIG_RUN_MAX 256u /* pages in one DATA record (1 MiB) */
#define SNAP_MIG_NACK_MAX 1024u
/* source -> target */
#define SNAP_MIG_MIGR SNAP_TAG('M', 'I', 'G', 'R') /* a = version, b = flags (0); payload: the magic */
#define SNAP_MIG_SETU SNAP_TAG('S', 'E', 'T', 'U') /* payload: a state file (CONF, CPID, MIGS) */
#define SNAP_MIG_DATA SNAP_TAG('D', 'A', 'T', 'A') /* a = first page, b = pages; payload: them */
#define SNAP_MIG_ZERO SNAP_TAG('Z', 'E', 'R', 'O') /* a = first page, b = pages, all zero */
#define SNAP_MIG_ROUN SNAP_TAG('R', 'O', 'U', 'N') /* a = round, b = pages in it */
#define SNAP_MIG_STAT SNAP_TAG('S', 'T', 'A', 'T') /* payload: a whole state file */
#define SNAP_MIG_DONE SNAP_TAG('D', 'O', 'N', 'E') /* a = RAM's pages, b = its content hash */
#define SNAP_MIG_GOGO SNAP_TAG('G', 'O', 'G', 'O') /* the target may run; a = us since the pause */
/* Same-host, memory by fd (docs/migration.md, "Same-host upgrade"): MIGR's
 * flag; MEMF's header goes with the guest RAM's memfd (SCM_RIGHTS) */
#define SNAP_MIG_F_MEMFD 1u
#define SNAP_MIG_MEMF SNAP_TAG('M', 'E', 'M', 'F') /* a = RAM's pages; the memfd with it */
/* Post-copy (docs/migration.md, "Post-copy"): after STAT, the pages the
 * target lacks, one bit a page (payload: the bitmap, a = how many) */
#define SNAP_MIG_PCPY SNAP_TAG('P', 'C', 'P', 'Y')
#define SNAP_MIG_FLAG_POSTCOPY 2u /* MIGR's b: the source may switch to post-copy */
#define SNAP_MIG_BITMAP_MAX (4u << 20) /* PCPY's payload: 128 GiB of RAM */
/* Disks copied with the VM (docs/storage-migration.md, "Between hosts"):
 * after OKAY, before and between the memory rounds, and last at the
 * stop-and-copy before STAT.  Disk n (0..SNAP_MIG_DISKS_MAX-1) is named
 * once by DSKB; DSKD and DSKZ carry n in a's top byte and a byte offset
 * (a multiple of 512) below it; a run is b bytes, a multiple of 512. */
#define SNAP_MIG_DISKS_MAX 8u
#define SNAP_MIG_DISK_RUN_MAX (1u << 20) /* bytes in one DSKD */
#define SNAP_MIG_DISK_ID_MAX 64u	 /* DSKB's payload: the drive's id */
#define SNAP_MIG_DISK_SHIFT 56
#define SNAP_MIG_DISK_AT(n, off) ((uint64_t)(n) << SNAP_MIG_DISK_SHIFT | (off))
#define SNAP_MIG_DISK_N(a) ((unsigned)((a) >> SNAP_MIG_DISK_SHIFT))
#define SNAP_MIG_DISK_OFF(a) ((a) & ((1ULL << SNAP_MIG_DISK_SHIFT) - 1))
#define SNAP_MIG_DSKB SNAP_TAG('D', 'S', 'K', 'B') /* a = n, b = size; payload: the drive id */
#define SNAP_MIG_DSKD SNAP_TAG('D', 'S', 'K', 'D') /* a = n|offset, b = bytes; payload: them */
#define SNAP_MIG_DSKZ SNAP_TAG('D', 'S', 'K', 'Z') /* a = n|offset, b = bytes, all zero */
#define SNAP_MIG_DSKE SNAP_TAG('D', 'S', 'K', 'E') /* a = n, b = data bytes sent: complete */
/* target -> source */
#define SNAP_MIG_OKAY SNAP_TAG('O', 'K', 'A', 'Y') /* setup accepted */
#define SNAP_MIG_NACK SNAP_TAG('N', 'A', 'C', 'K') /* payload: the reason, UTF-8 */
#define SNAP_MIG_REDY SNAP_TAG('R', 'E', 'D', 'Y') /* loaded and checked, waiting for GOGO */
#define SNAP_MIG_PREQ SNAP_TAG('P', 'R', 'E', 'Q') /* post-copy: a = the page a fault waits for */
#define SNAP_MIG_PFIN SNAP_TAG('P', 'F', 'I', 'N') /* post-copy: every page is in */
/* disks copied: a = the round whose ROUN came; its disks' data is synced */
#define SNAP_MIG_DSKS SNAP_TAG('D', 'S', 'K', 'S')

/* A record as read: its header decoded, the raw header kept for the
 * payload's CRC, and where in the stream it began. */
struct snap_mig_rec {
	uint32_t type, len;
	uint64_t a, b;
	uint32_t crc;
	uint64_t off;
	uint8_t raw[SNAP_MIG_HDR];
};

/* The header of a record (type, a, b, and the len bytes of payload, which
 * the CRC covers; payload may be NULL when len is 0) into hdr.  Pure. */
void snap_mig_encode(uint8_t hdr[SNAP_MIG_HDR], uint32_t type, uint64_t a, uint64_t b,
		     const void *payload, uint32_t len);

/* Decode and check hdr (read at byte off of the stream) into r: a known
 * type, the reserved word 0, a length the type may have.  0 or -EINVAL
 * with "stream: byte N: ..." in err.  Pure. */
__attribute__((warn_unused_result)) int snap_mig_decode(const uint8_t hdr[SNAP_MIG_HDR],
							uint64_t off, struct snap_mig_rec *r,
							char *err, size_t errlen);

/* Check r's CRC over its header and payload (r->len bytes).  0 or
 * -EINVAL naming the offset, the record and both CRCs.  Pure. */
__attribute__((warn_unused_result)) int snap_mig_crc_check(const struct snap_mig_rec *r,
							   const void *payload, char *err,
							   size_t errlen);

/* The record type as it reads ("DATA"), or its hex for unknown ones;
 * buf holds at least 12 bytes. */
const char *snap_mig_name(uint32_t type, char buf[12]);

/* Write one record (header, then len bytes of payload).  0 or -errno,
 * "stream: byte N: writing record DATA: Broken pipe ..." in err. */
__attribute__((warn_unused_result)) int snap_mig_put(struct snap_stream *s, uint32_t type,
						     uint64_t a, uint64_t b, const void *payload,
						     uint32_t len, char *err, size_t errlen);

/* Read and check one record's header (snap_mig_decode) into r.  EOF
 * before its first byte: -EPIPE ("the peer closed the stream"); within
 * it, -EINVAL ("truncated in a record header"). */
__attribute__((warn_unused_result)) int snap_mig_get_hdr(struct snap_stream *s,
							 struct snap_mig_rec *r, char *err,
							 size_t errlen);

/* A header-only record (snap_mig_put with no payload) whose first byte
 * carries fd (SCM_RIGHTS, stream sockets only; fd stays the caller's).
 * 0 or -errno as snap_mig_put. */
__attribute__((warn_unused_result)) int snap_mig_put_fd(struct snap_stream *s, uint32_t type,
							uint64_t a, uint64_t b, int fd, char *err,
							size_t errlen);

/* Read a header-only record as snap_mig_get_hdr does, CRC checked, and
 * the one fd that came with it (close-on-exec) into *fd, or -1 when none
 * did (the caller refuses that); more fds than one are closed and
 * refused.  0 or -errno as snap_mig_get_hdr; *fd is -1 on failure. */
__attribute__((warn_unused_result)) int snap_mig_get_hdr_fd(struct snap_stream *s,
							    struct snap_mig_rec *r, int *fd,
							    char *err, size_t errlen);

/* Read r's payload (r->len bytes) into buf and check the record's CRC.
 * 0, -EINVAL (truncated, CRC mismatch), or -errno. */
__attribute__((warn_unused_result)) int snap_mig_get_body(struct snap_stream *s,
							  const struct snap_mig_rec *r, void *buf,
							  char *err, size_t errlen);

/* ---- shared by format.c and memfile.c (the atomic-file steps) ---- */

/* Create "<path>.tmp-<pid>" (its name into tmp, tmplen bytes) for
 * writing, mode 0600, truncated.  The fd, or -errno with err set. */
__attribute__((warn_unused_result)) int snap_tmp_open(const char *path, char *tmp, size_t tmplen,
						      char *err, size_t errlen);

/* Finish a temp file: fsync and close fd, rename tmp over path, fsync
 * path's directory.  On failure before the rename the temp file is
 * removed and path untouched.  fd is closed either way. */
__attribute__((warn_unused_result)) int snap_tmp_commit(int fd, const char *tmp, const char *path,
							char *err, size_t errlen);

/* fsync the directory holding path, so that a rename in it is durable.
 * 0 or -errno. */
__attribute__((warn_unused_result)) int snap_sync_dir(const char *path);

/* Drop a temp file that will not be committed: close fd, unlink tmp. */
void snap_tmp_abort(int fd, const char *tmp);

#endif
