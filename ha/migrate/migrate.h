/* ha/migrate/: `ember migrate`, the controller of a live migration
 * (docs/migration.md is the contract with the VMMs, docs/migrate-cli.md
 * the command).  Private to this folder: the pure parts (arguments,
 * progress, hand-over decisions) apart from the parts that talk to
 * processes and networks, so that tests/unit/test_ha_*.c reach them. */
#ifndef EMBER_HA_MIGRATE_H
#define EMBER_HA_MIGRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ha/tls_relay.h"

#define MIG_EXIT_OK 0
#define MIG_EXIT_FAILED 1  /* not moved: the VM runs on at the source */
#define MIG_EXIT_UNKNOWN 2 /* the outcome needs a look (see the message) */
#define MIG_EXIT_USAGE 121 /* bad arguments, as ember's EXIT_CONFIG */

#define MIG_OVERRIDES_MAX 16

enum mig_mode {
	MIG_SAME_HOST, /* --from A --to B */
	MIG_SEND,      /* --from A --to-host ADDR:PORT */
	MIG_RECEIVE,   /* --listen ADDR:PORT --to B */
	MIG_RESOLVE,   /* --resolve resume|stop --api-sock S */
};

struct mig_override {
	const char *id, *path; /* drive id and file, or interface id and tap */
};

struct mig_args {
	enum mig_mode mode;
	bool help;
	const char *from, *to, *to_host, *listen;
	const char *api_sock, *resolve; /* MIG_RESOLVE */
	/* PUT /migration/send */
	uint64_t downtime_ms, max_bandwidth, timeout_ms;
	const char *converge;
	const char *verify; /* "all" or "dirty"; NULL: the VMM's default */
	const char *cmode;  /* "precopy", "postcopy", "postcopy-now"; NULL: default */
	/* PUT /migration/receive */
	bool use_saved_paths;
	bool local; /* same host: RAM handed over as its memfd ("mode": "local") */
	struct mig_override drives[MIG_OVERRIDES_MAX], nets[MIG_OVERRIDES_MAX];
	unsigned nr_drives, nr_nets;
	const char *vsock_uds;
	/* "all" or ID[,ID...]: disks copied with the VM (both sides) */
	const char *copy_storage;
	struct ha_tls_opts tls;
};

/* argv (without the program's name) into *a, defaults filled in
 * (downtime 300 ms, no bandwidth cap, timeout 60 s... see usage).  0,
 * or -EINVAL with the reason in err (naming the option).  a->help: the
 * caller prints mig_usage.  Pure: checks no file. */
__attribute__((warn_unused_result)) int
mig_parse_args(int argc, char *const *argv, struct mig_args *a, char *err, size_t errlen);

/* BYTES with an optional binary suffix: "1000", "64K", "1.5M", "10G",
 * "1T" (K = 1024; a trailing "B", "iB" or "/s" is allowed).  0 or
 * -EINVAL / -ERANGE. */
__attribute__((warn_unused_result)) int mig_parse_bytes(const char *s, uint64_t *bytes);

/* Seconds, "2.5" or "90"; "500ms" and "2m" too.  0 or -EINVAL / -ERANGE. */
__attribute__((warn_unused_result)) int mig_parse_seconds(const char *s, uint64_t *ms);

/* The bodies of PUT /migration/send and PUT /migration/receive; new
 * references (NULL: out of memory). */
json_t *mig_send_body(const struct mig_args *a);
/* --copy-storage's spec as the API's "copy_storage": "all" or an array
 * of the ids (a new reference; NULL: out of memory). */
json_t *mig_copy_storage_json(const char *spec);
json_t *mig_receive_body(const struct mig_args *a);

extern const char mig_usage[];

/* Phases of GET /migration (docs/migration.md), and two of our own. */
enum mig_phase {
	MIG_PH_NOANSWER, /* no reply (yet): a timeout, or not asked */
	MIG_PH_GONE,	 /* its API socket refuses connections: the process is gone */
	MIG_PH_OTHER,	 /* a phase this controller does not know */
	MIG_PH_NONE,
	MIG_PH_SETUP,
	MIG_PH_PRECOPY,
	MIG_PH_STOP_AND_COPY,
	MIG_PH_HANDOVER,
	MIG_PH_COMPLETED,
	MIG_PH_CANCELLED,
	MIG_PH_FAILED,
	MIG_PH_HANDOVER_UNKNOWN,
	MIG_PH_RECEIVING,
	MIG_PH_READY,
	MIG_PH_RUNNING,
	MIG_PH_POSTCOPY, /* after GOGO, pages still flowing: the VM runs on the target */
};

enum mig_phase mig_phase_parse(const char *s);
const char *mig_phase_name(enum mig_phase p);

/* One GET /migration reply. */
struct mig_status {
	enum mig_phase phase;
	char phase_text[24];
	unsigned round, throttle_pct;
	uint64_t bytes_sent, bytes_remaining, bandwidth_bps, total_ms;
	double expected_downtime_ms, downtime_ms; /* downtime_ms < 0: null */
	char error[256];			  /* "" when null */
};

/* j (a GET /migration body) into *s; absent fields are 0 / null.  0, or
 * -EINVAL if j is not an object with a "phase" string. */
__attribute__((warn_unused_result)) int mig_status_parse(const json_t *j, struct mig_status *s);

/* The progress line for s, without a newline.  tty: the redrawn form,
 * "precopy round 3 [#####-----] 51% 812.4 MB/s downtime ~1.2 ms",
 * at most width columns (>= 40); else the logged form, one line per
 * phase or round: "migrate: precopy round 3: 51%, 256.0 MiB sent,
 * 812.4 MB/s, expected downtime 1.2 ms".  Returns buf. */
const char *mig_progress_line(char *buf, size_t len, const struct mig_status *s, bool tty,
			      unsigned width);

/* The summary printed last on stdout: one line of JSON with result,
 * total_ms, downtime_ms, bytes_sent, rounds, throttle_pct, error. */
struct mig_summary {
	const char *result; /* "completed", "failed", "cancelled", "unknown" */
	uint64_t total_ms, bytes_sent;
	double downtime_ms; /* < 0: null */
	unsigned rounds, throttle_pct;
	const char *error;    /* NULL: none */
	const char *handover; /* how the hand-over ended (NULL: not reached) */
};

/* The summary's JSON text (malloc'd; NULL: out of memory). */
char *mig_summary_json(const struct mig_summary *s);

/* What the controller does next, from what each end says now. */
enum mig_action {
	MIG_WAIT,
	MIG_OK,			       /* moved: the target runs it */
	MIG_FAILED,		       /* not moved: the source runs it */
	MIG_RESUME_TARGET_STOP_SOURCE, /* handover-unknown, target ready */
	MIG_STOP_SOURCE,	       /* handover-unknown, target runs */
	MIG_RESUME_SOURCE,	       /* handover-unknown, target gone */
	MIG_RESUME_TARGET,	       /* source gone, target ready */
	MIG_STOP_TARGET,	       /* source failed and runs on, target ready */
	MIG_LOST,		       /* neither end runs it: see the message */
	MIG_UNRESOLVED,		       /* this side cannot tell: for the operator */
};

/* The hand-over rules of docs/migration.md ("Exactly once").  src and
 * dst: each end's phase now (MIG_PH_NOANSWER for an end not watched:
 * watch_src / watch_dst false); src_committed: the source was seen at
 * stop-and-copy or later, or its stream ended with GOGO
 * (mig_stream_ends_with_gogo); settled: these phases have
 * held for a grace period (a source that exits after GOGO leaves a target
 * in ready for a moment; only a lasting one is resumed).  Pure. */
enum mig_action mig_decide(enum mig_phase src, enum mig_phase dst, bool watch_src, bool watch_dst,
			   bool src_committed, bool settled);

/* The sending host's proof that its source handed over: the stream
 * the source wrote, all of it relayed, ended with a GOGO record (the
 * last HA_RELAY_TAIL bytes: its 32-byte header, no payload).  The
 * source writes GOGO only after the target's REDY, and exits right
 * after, often before a GET /migration could see "completed".  Pure. */
bool mig_stream_ends_with_gogo(const unsigned char *tail, size_t len);

/* Words for an action's outcome ("the target resumed it..."). */
const char *mig_action_text(enum mig_action a);

/* The controller's modes (ha/migrate/run.c): each returns an exit code. */
int mig_run_same_host(const struct mig_args *a);
int mig_run_send(const struct mig_args *a);
int mig_run_receive(const struct mig_args *a);
int mig_run_resolve(const struct mig_args *a);

#endif
