/* ha/emberd/: moving a VM live between emberd hosts, and maintenance
 * mode (docs/ha.md "Moving a VM", "Maintenance mode").  Private to the
 * move files (move.c: the mover thread, requests and maintenance;
 * move_out.c: the source side; move_in.c: the listener and the target
 * side; move_vm.c: what runs on the loop) and to cluster.c's hooks.
 *
 * The exactly-once rule: the target's VMM never gets GOGO (move_in.c
 * withholds that record) until owner/<vm> names the target under a new
 * token, which only the source's one transaction writes, and only once
 * the source's stream ended with its GOGO (the source VMM stopped for
 * good).  Before that transaction the target half is killed and removed;
 * after it the target resumes even when the source has vanished. */
#ifndef EMBER_HA_EMBERD_MOVE_H
#define EMBER_HA_EMBERD_MOVE_H

#include "ha/emberd/cluster_priv.h"
#include "ha/emberd/local.h"

#define MV_MAX_ACTIVE 2 /* moves this host sends at once */

/* EMBERD_TEST_CRASH=PHASE: abort() at that named step (tests only: the
 * kill -9 tests of docs/ha.md "Moving a VM").  Phases: src-hello,
 * src-sending, src-handover, src-txn, dst-receiving, dst-ready, dst-owned. */
void mv_crash_point(const char *phase);

/* Run fn(arg) on the loop and wait for it: 0, or -ECANCELED when the
 * cluster stops first (fn may then still run: arg must outlive us). */
__attribute__((warn_unused_result)) int mv_on_loop(struct ed_cluster *c, void (*fn)(void *),
						   void *arg);

/* The mover (move.c): start with the cluster (the listener too when
 * opts name one), stop before its threads are joined.  0 or -errno with
 * err. */
__attribute__((warn_unused_result)) int ed_mover_start(struct ed_cluster *c,
						      const struct ed_cluster_opts *o, char *err,
						      size_t errlen);
void ed_mover_stop(struct ed_cluster *c);
/* A move worker is done with vm (either side): the mover may start
 * another.  From any thread. */
void mv_worker_done(struct ed_cluster *c, const char *vm);
/* Readable once the cluster stops (a relay's stop_fd). */
int mv_stop_fd(struct ed_cluster *c);

/* One move this host sends, as the mover found it in moves/<vm>. */
struct mv_req {
	struct ed_cluster *c;
	char vm[ED_NAME_MAX];
	char to[ED_NAME_MAX];
	char addr[128];	    /* the target's migrate listener */
	char reason[32];    /* "user", "maintenance", "balance" */
	int64_t token;	    /* our owner key's mod_revision: our fencing token */
	int64_t move_rev;   /* moves/<vm>'s create_revision: this request */
};

/* The source side (move_out.c): the whole move, on its own thread; req
 * is the thread's (freed). */
void *mv_out_main(void *req);
/* The target side (move_in.c): serve one connection fd (taken over). */
void *mv_in_main(void *conn);
struct mv_conn {
	struct ed_cluster *c;
	int fd;
	char peer[300];
	char key[ED_NAME_MAX]; /* its worker's, for mv_worker_done */
};

/* The hello's framing: 8 hex digits of length, then a JSON object.
 * mv_send_json takes j.  0 or -errno with err. */
__attribute__((warn_unused_result)) int mv_send_json(struct ha_conn *k, json_t *j, char *err,
						     size_t errlen);
__attribute__((warn_unused_result)) int mv_recv_json(struct ha_conn *k, json_t **j,
						     int timeout_ms, char *err, size_t errlen);
/* Post a move's progress (GET /vms/NAME "move") to the loop. */
void mv_progress(struct ed_cluster *c, const char *vm, const char *phase, uint64_t bytes);

/* Delete moves/<vm> if it is still request move_rev: the request ends
 * (done or failed).  With the client e. */
void mv_delete_request(struct ha_etcd *e, const char *vm, int64_t move_rev);

/* ---- shared by the move files (move.c) ---- */

/* hosts/, owner/, moves/, maint/ read at one revision. */
struct mv_view {
	struct ha_etcd_txn_result res; /* ranges[0..4): hosts, owner, moves, maint */
};
__attribute__((warn_unused_result)) int mv_read_view(struct ha_etcd *e, struct mv_view *v,
						     char *err, size_t errlen);

/* A VM's rules and state, copied on the loop (mv_rules_get). */
struct mv_rules {
	struct ed_cluster *c;
	const char *vm;
	struct cl_spec s; /* must/avoid malloc'd: mv_rules_free */
	bool found;
	enum ed_state state;
};
__attribute__((warn_unused_result)) int mv_rules_get(struct ed_cluster *c, const char *vm,
						     struct mv_rules *r);
void mv_rules_free(struct mv_rules *r);
/* Why s may not run on host (a must rule: hosts, avoid_hosts) into why,
 * or NULL. */
const char *mv_rule_refuses(const struct cl_spec *s, const char *host, char *why, size_t len);
/* Why host cannot take a move now (not alive, in maintenance, no
 * listener) into why, or NULL with its listener in addr. */
const char *mv_target_refuses(const struct ha_etcd_range *hosts,
			      const struct ha_etcd_range *maint, const char *host, char *addr,
			      size_t addrlen, char *why, size_t len);
/* moves/<vm> = {to, reason, by, token} by a txn: owner/<vm>'s
 * mod_revision is still token and no move is pending.  0, -EEXIST (with
 * err), or -errno. */
__attribute__((warn_unused_result)) int mv_put_request(struct ha_etcd *e, const char *by,
						       const char *vm, const char *to,
						       const char *reason, int64_t token,
						       char *err, size_t errlen);
/* True the first time vm is named since this host entered maintenance
 * (a VM that stays is said once). */
bool mv_tell_once(struct ed_cluster *c, const char *vm);
/* Maintenance (move_maint.c): one round of this host's evacuation, read
 * from etcd at one revision and placed by ha_bal_place over the
 * balancer's model: requests for up to `room` of its VMs; those no host
 * may take stay, with their reason (event, STATUS, maint/<h> "stays"). */
void mv_maintenance_round(struct ed_cluster *c, struct ha_etcd *e, int64_t lease, size_t room);
/* Maintenance is over here: clear the STATUS reasons the rounds set. */
void mv_maintenance_over(struct ed_cluster *c);

/* ---- on the loop (move_vm.c) ---- */

/* Source: vm enters a move to `to` (it must run here): 0 with its API
 * socket path in sock, or -errno with why. */
__attribute__((warn_unused_result)) int ed_vm_move_out_begin(struct ed_vm *vm, const char *to,
							     char *sock, size_t socklen, char *why,
							     size_t whylen);
/* Source: the move ended.  left: the VM handed over and lives on `to`
 * (its ember exits or has exited: not restarted); else it runs on here,
 * or, if its ember exited meanwhile, starts again by policy (cause). */
void ed_vm_move_out_end(struct ed_vm *vm, bool left, const char *cause);
/* Target: launch a receiving ember for vm (staged as a start is): 0 with
 * its pid, or -errno with why. */
__attribute__((warn_unused_result)) int ed_vm_move_in_begin(struct ed_vm *vm, const char *from,
							    pid_t *pid, char *why, size_t whylen);
/* Target: ok: the VM runs here now (RUNNING); else its ember is killed
 * and its jail removed (the VM stays the source's). */
void ed_vm_move_in_end(struct ed_vm *vm, bool ok);
/* Progress for GET /vms/NAME's "move". */
void ed_vm_move_progress(struct ed_vm *vm, const char *phase, uint64_t bytes);

/* ---- requests (move.c), on the loop with c->lc ---- */

/* PUT /vms/NAME/migrate {"to": H} and PUT /hosts/H/maintenance
 * {"enter": B}: *status and *reply (new reference, or NULL for 204), or
 * a fault in fault.  Returns false when url is not one of these. */
bool ed_move_ctl(struct ed_cluster *c, const char *method, const char *url, const char *body,
		 size_t len, int *status, json_t **reply, char *fault, size_t faultlen);

#endif
