/* ha/ctl/: emberctl, emberd's control CLI (docs/ha.md, "emberctl").  Its
 * pure parts, for main.c and the unit tests (tests/unit/test_ha_ctl_cli.c):
 * the command line (args.c) and the human tables (table.c). */
#ifndef EMBER_HA_CTL_CTL_H
#define EMBER_HA_CTL_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses (docs/ha.md, "emberctl"). */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_REFUSED = 1,	 /* emberd refused or failed the request */
	CTL_EXIT_USAGE = 2,	 /* a bad command line */
	CTL_EXIT_UNREACHABLE = 3 /* no emberd answers on the socket */
};

#define CTL_SOCK_DEFAULT "/run/emberd.sock"

enum ctl_cmd {
	CTL_HELP,
	CTL_LIST,
	CTL_STATUS,
	CTL_START,
	CTL_STOP,
	CTL_RESTART,
	CTL_SNAPSHOT,
	CTL_LOGS,
	CTL_EVENTS,
	CTL_HOSTS,
	CTL_RELOAD,
	CTL_MIGRATE, /* migrate VM HOST [--wait] */
	CTL_MAINT,   /* host maintenance enter|exit|status HOST [--wait] */
};

struct ctl_args {
	const char *sock; /* --sock, else $EMBERD_SOCK, else CTL_SOCK_DEFAULT */
	bool json;
	enum ctl_cmd cmd;
	const char *vm;	 /* status (optional), start, stop, restart, snapshot, logs */
	const char *how; /* start: "boot", "resume", or NULL (the VM's policy) */
	bool has_grace;	 /* stop, restart: --grace given */
	uint64_t grace_ms;
	uint64_t tail;	/* logs --tail (default 65536 bytes) */
	bool follow;	/* logs, events */
	bool has_since; /* events --since */
	uint64_t since;
	const char *host;  /* migrate: the target; host maintenance: the host */
	const char *maint; /* host maintenance: "enter", "exit" or "status" */
	bool wait;	   /* migrate, host maintenance: until done */
};

extern const char ctl_usage[];

/* emberctl rule (rule.c): add NAME KIND --vms a,b [--hosts x,y] | rm NAME
 * | list. */
enum ctl_rule_op { CTL_RULE_ADD, CTL_RULE_RM, CTL_RULE_LIST };
struct ctl_rule_args {
	const char *sock;
	bool json;
	enum ctl_rule_op op;
	const char *name, *kind; /* add: both; rm: name */
	const char *vms, *hosts; /* add: "a,b" (hosts may be NULL) */
};
/* Is argv (without the program's name) a rule command? */
bool ctl_is_rule(int argc, char *const *argv);
/* argv (without the program's name, "rule" among it) into *a.  Pure.  0,
 * or -EINVAL with the reason in err. */
__attribute__((warn_unused_result)) int ctl_rule_parse(int argc, char *const *argv,
						       const char *env_sock,
						       struct ctl_rule_args *a, char *err,
						       size_t errlen);
/* "a,b" -> ["a", "b"] (new reference; empty for NULL). */
json_t *ctl_name_list(const char *s);
/* Run the rule command: emberctl's exit status. */
int ctl_rule_main(int argc, char *const *argv, const char *env_sock);

/* argv (without the program's name) into *a.  env_sock: $EMBERD_SOCK
 * (NULL: unset).  Pure.  0, or -EINVAL with the reason in err (naming the
 * option, the command or the value). */
__attribute__((warn_unused_result)) int ctl_parse_args(int argc, char *const *argv,
						       const char *env_sock, struct ctl_args *a,
						       char *err, size_t errlen);

/* A table of text cells, printed with its columns aligned (two spaces
 * between; the last column not padded). */
struct ctl_table {
	size_t ncols, nrows;
	char **cells; /* nrows x ncols, row 0 the headers; owned */
};

/* 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int ctl_table_init(struct ctl_table *t,
						       const char *const *headers, size_t ncols);
/* A row of t->ncols cells (copied; NULL prints "-").  0 or -ENOMEM. */
__attribute__((warn_unused_result)) int ctl_table_add(struct ctl_table *t,
						      const char *const *cells);
void ctl_table_print(const struct ctl_table *t, FILE *f);
void ctl_table_free(struct ctl_table *t);

/* Human forms of the API's numbers: a duration of ms ("45s", "3m12s",
 * "2h05m", "3d04h") and a size of bytes ("512M", "1.5G"), into buf. */
void ctl_fmt_duration(uint64_t ms, char *buf, size_t len);
void ctl_fmt_bytes(uint64_t bytes, char *buf, size_t len);

/* The table `emberctl list` prints for GET /vms's array of STATUS
 * objects (docs/ha.md); now_ms: CLOCK_MONOTONIC, as the API's at_ms (a
 * snapshot's age).  0 or
 * -ENOMEM. */
__attribute__((warn_unused_result)) int ctl_vms_table(const json_t *vms, uint64_t now_ms,
						      struct ctl_table *t);

/* One EVENT (docs/ha.md) as the human line `emberctl events` prints:
 * "TIME  VM  KIND  DETAIL", with a newline. */
void ctl_print_event(const json_t *ev, FILE *f);

#endif
