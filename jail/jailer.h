/* ember-jailer's insides: private to jail/jailer*.c and tests/unit/
 * test_jailer.c.  The pure parts (jailer_args.c, jailer_paths.c:
 * arguments, ids, limits, cgroup specs and paths, /proc parsing, the ELF
 * check) take text and give text, so the unit test drives them without
 * root.  jail/jailer.c does the steps, in Firecracker's order
 * (docs/jail.md), with struct jailer, the undo list (jailer_undo.c), the
 * symlink-free walks (jailer_fs.c), the chroot (jailer_chroot.c) and the
 * cgroup steps (jailer_cgroup.c). */
#ifndef EMBER_JAILER_H
#define EMBER_JAILER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#define JAILER_ID_MAX 64
#define JAILER_MAX_CGROUPS 16
#define JAILER_MAX_RLIMITS 8
#define JAILER_DEFAULT_BASE "/srv/jailer"
#define JAILER_DEFAULT_NOFILE 2048 /* as Firecracker's jailer, when no limit is given */
#define JAILER_ERR_MAX 512

/* Exit codes of ember-jailer itself (the jailed program's own once it
 * runs).  As ember's: 121 the arguments are refused and nothing was
 * created; 122 a step failed on the host and what it made is removed. */
#define JAILER_EXIT_USAGE 121
#define JAILER_EXIT_HOST 122

/* The controllers --cgroup may name. */
#define JAILER_CONTROLLERS "cpu memory pids cpuset"

struct jailer_cgroup {
	char controller[16]; /* "cpu", from "cpu.shares" */
	char file[64];	     /* "cpu.shares" */
	const char *value;   /* written as is */
};

struct jailer_rlimit {
	int resource; /* RLIMIT_NOFILE, RLIMIT_FSIZE */
	const char *name;
	rlim_t value;
};

struct jailer_args {
	const char *id;
	const char *exec_file;
	const char *uid, *gid; /* as given: a number or a name */
	const char *chroot_base;
	const char *netns;
	const char *parent_cgroup; /* NULL: the exec file's name */
	int cgroup_version;	   /* 1 or 2 */
	bool daemonize, new_pid_ns;
	bool die_with_parent; /* PR_SET_PDEATHSIG SIGKILL just before exec */
	struct jailer_cgroup cgroups[JAILER_MAX_CGROUPS];
	unsigned nr_cgroups;
	struct jailer_rlimit rlimits[JAILER_MAX_RLIMITS];
	unsigned nr_rlimits;
	char **exec_argv; /* after "--": the jailed program's own arguments */
	int exec_argc;
};

/* Parse the jailer's command line (argv[0] excluded).  Checks every value
 * that needs no system lookup: id, uid/gid syntax (and not 0), cgroup and
 * limit specs, parent cgroup path, cgroup version, that each option is
 * given once (--cgroup and --resource-limit once per file or resource),
 * and that --id, --exec-file, --uid, --gid are there.  Returns 0, 1 for --help (nothing else parsed), or
 * -EINVAL with a message naming the option in err. */
__attribute__((warn_unused_result)) int
jailer_parse_args(int argc, char **argv, struct jailer_args *a, char *err, size_t errlen);

/* The --help text. */
const char *jailer_usage(void);

/* A VM id: 1..64 characters of [A-Za-z0-9-].  0 or -EINVAL. */
__attribute__((warn_unused_result)) int jailer_check_id(const char *id);

/* "no-file=N" or "fsize=N" (N decimal, fits rlim_t and is not
 * RLIM_INFINITY) -> *out.  0 or -EINVAL. */
__attribute__((warn_unused_result)) int jailer_parse_rlimit(const char *spec,
							    struct jailer_rlimit *out);

/* "FILE=VALUE": FILE is CONTROLLER.NAME with CONTROLLER one of
 * JAILER_CONTROLLERS and NAME of [A-Za-z0-9_.-]; VALUE is not empty and
 * holds no newline.  0 or -EINVAL. */
__attribute__((warn_unused_result)) int jailer_parse_cgroup(const char *spec,
							    struct jailer_cgroup *out);

/* A uid or gid given as a decimal number below 2^32 - 1 -> *out: 0.
 * -ENOENT when s is a name to look up (a letter or '_', then letters,
 * digits, '_', '.', '-', maybe a final '$'), -EINVAL for anything else. */
__attribute__((warn_unused_result)) int jailer_parse_id_number(const char *s, uint32_t *out);

/* A relative cgroup path of [A-Za-z0-9_.-] components: no leading '/',
 * no "." or ".." component, no empty component.  0 or -EINVAL. */
__attribute__((warn_unused_result)) int jailer_check_cgroup_path(const char *path);

/* The last path component of exec_file ("ember" for "/usr/bin/ember"),
 * a pointer into exec_file; "" when it ends with '/'. */
const char *jailer_exec_name(const char *exec_file);

/* Find a cgroup mount in the text of /proc/mounts: version 1, the
 * "cgroup" mount whose options list `controller`; version 2, the first
 * "cgroup2" mount (controller unused).  Octal escapes (\040) in the mount
 * point are decoded.  0, -ENOENT (none), or -ENAMETOOLONG. */
__attribute__((warn_unused_result)) int jailer_cgroup_mount(const char *mounts, int version,
							    const char *controller, char *out,
							    size_t outlen);

/* This process's cgroup in one hierarchy, from the text of
 * /proc/self/cgroup: version 1, the line whose controller list names
 * `controller`; version 2, the "0::" line.  The path is relative to the
 * hierarchy's root, without the leading '/' ("" for the root).  0,
 * -ENOENT, or -ENAMETOOLONG. */
__attribute__((warn_unused_result)) int
jailer_self_cgroup(const char *text, int version, const char *controller, char *out, size_t outlen);

/* Whether word is one of the words of list (separated by spaces, tabs,
 * newlines or commas), e.g. a controller in cgroup.controllers. */
bool jailer_has_word(const char *list, const char *word);

/* out = "<a>/<b>[/<c>]" (c may be NULL).  0 or -ENAMETOOLONG. */
__attribute__((warn_unused_result)) int jailer_path_join(char *out, size_t outlen, const char *a,
							 const char *b, const char *c);

/* The cgroup v2 controllers the request needs, each once, as the line
 * cgroup.subtree_control takes ("+cpu +memory").  0 or -ENAMETOOLONG. */
__attribute__((warn_unused_result)) int jailer_subtree_line(const struct jailer_args *a, char *out,
							    size_t outlen);

/* Check an executable image (its first len bytes, at least the ELF and
 * program headers) can run alone in an empty chroot: a 64-bit x86-64 ELF
 * executable with no PT_INTERP (static).  0, or -ENOEXEC with why. */
__attribute__((warn_unused_result)) int jailer_check_static_elf(const uint8_t *img, size_t len,
								char *why, size_t whylen);

/* The jailer's state while it works (jail/jailer.c, jail/jailer_cgroup.c). */
#define JAILER_MAX_UNDO 48

enum undo_kind {
	UNDO_FILE,   /* unlink */
	UNDO_DIR,    /* rmdir */
	UNDO_CGROUP, /* move ourselves back to our first cgroup, then rmdir */
};

/* One thing a step made: its parent directory (an fd, so it can still be
 * found after pivot_root) and its name. */
struct undo {
	int dirfd;
	int procs_fd; /* UNDO_CGROUP: cgroup.procs of the cgroup we started in */
	enum undo_kind kind;
	char name[256];
};

struct jailer {
	struct jailer_args a;
	uid_t uid;
	gid_t gid;
	const char *exec_name;
	char id_dir[4096];   /* <base>/<exec name>/<id> */
	char root_dir[4104]; /* <id_dir>/root: for messages; never looked up */
	int exec_fd;	     /* the exec file, opened once: what was checked is copied */
	int netns_fd;	     /* --netns, opened and checked before anything is made */
	int null_fd;	     /* --daemonize: /dev/null, opened before the jail hides it */
	int lock_fd;	     /* <id_dir>/jail.lock, flock'ed; inherited by the program */
	int id_fd, root_fd;
	/* per --cgroup: its hierarchy's mount point and our cgroup there */
	char cg_mount[JAILER_MAX_CGROUPS][256];
	char cg_self[JAILER_MAX_CGROUPS][256];
	int procs_fd[JAILER_MAX_CGROUPS]; /* cgroup.procs where we started, per hierarchy */
	unsigned nr_procs;
	struct undo undo[JAILER_MAX_UNDO];
	unsigned nr_undo;
	char err[JAILER_ERR_MAX];
};

/* Record why the jailer stops in j->err; returns code (an exit code). */
int jailer_fail(struct jailer *j, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Put one made thing on the undo list (dirfd is duplicated).  0 or an
 * exit code. */
__attribute__((warn_unused_result)) int
jailer_undo_push(struct jailer *j, int dirfd, const char *name, enum undo_kind kind, int procs_fd);

/* Remove everything on the undo list, newest first (a cgroup after
 * moving this process back to where it started). */
void jailer_undo_all(struct jailer *j);

/* Keep everything made (the jail is handed over); close the list's fds. */
void jailer_undo_forget(struct jailer *j);

/* How jailer_walk and jailer_open_file look paths up. */
#define JAILER_WALK_CREATE 1u	   /* make what is missing (0755, on the undo list) */
#define JAILER_WALK_FOLLOW 2u	   /* follow symlinks: only for the operator's own paths */
#define JAILER_OPEN_MISSING_OK 4u  /* a missing file is no error: *out_fd = -1 */
#define JAILER_OPEN_HOST_ERRORS 8u /* errors other than the file's kind are JAILER_EXIT_HOST */

/* The kind of a file, for messages: "a FIFO", "a symbolic link"... */
__attribute__((warn_unused_result)) const char *jailer_kind(mode_t mode);

/* openat2(dirfd, name, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): no
 * symlink anywhere, nothing above dirfd.  Where the kernel has no
 * openat2, name must be one component and gets O_NOFOLLOW.  An fd, or
 * -errno (-ELOOP for a symlink). */
__attribute__((warn_unused_result)) int jailer_open_beneath(int dirfd, const char *name, int flags,
							    mode_t mode);

/* mkdir -p of path below dirfd (or absolute), one component at a time
 * from the fd of its parent.  Unless `how` has JAILER_WALK_FOLLOW, no
 * symlink is followed: a symlink, FIFO or file where a directory must be
 * is refused (JAILER_EXIT_USAGE) naming it as shown/path.  With
 * JAILER_WALK_CREATE each directory made goes on the undo list as `kind`;
 * without, *out_fd is -1 where one is missing.  *out_fd: an O_PATH fd of
 * the last.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_walk(struct jailer *j, int dirfd, const char *shown,
						    const char *path, unsigned how,
						    enum undo_kind kind, int *out_fd);

/* One directory, name in dirfd, 0755, never through a symlink; on the
 * undo list as `kind` (with procs_fd) if made here, *made_it (may be
 * NULL) says so.  *out_fd: its O_PATH fd.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_mkdir_at(struct jailer *j, int dirfd,
							const char *name, enum undo_kind kind,
							int procs_fd, int *out_fd, bool *made_it);

/* Remove name in dirfd whatever it is (a symlink itself, never what it
 * points to), so the jailer can put a file of its own there; a directory
 * is refused (JAILER_EXIT_USAGE), naming shown/name.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_unlink_leaf(struct jailer *j, int dirfd,
							   const char *shown, const char *name);

/* jailer_unlink_leaf, then a new file there (O_CREAT | O_EXCL, mode, no
 * symlink), on the undo list.  *out_fd: open for writing.  0 or an exit
 * code. */
__attribute__((warn_unused_result)) int jailer_replace_file(struct jailer *j, int dirfd,
							    const char *shown, const char *name,
							    mode_t mode, int *out_fd);

/* Open path (below dirfd without symlinks, or followed with
 * JAILER_WALK_FOLLOW) with flags, once an O_PATH look has found a regular
 * file: a FIFO is never opened (it would block), nor a device.  Anything
 * else is refused: "<label>: is a FIFO, not <want>" (JAILER_EXIT_USAGE).
 * 0 or an exit code; *out_fd is -1 for a missing file with
 * JAILER_OPEN_MISSING_OK. */
__attribute__((warn_unused_result)) int jailer_open_file(struct jailer *j, int dirfd,
							 const char *path, const char *label,
							 unsigned how, int flags, const char *want,
							 int *out_fd);

/* The chroot's steps (jail/jailer_chroot.c). */

/* Before anything is made: a jail whose lock is held is live, and
 * refused; a dead one's leftovers are checked: every directory the steps
 * will walk into must be one (no symlink, FIFO or file), and no file the
 * steps replace may be a directory.  The lock of a dead jail stays open
 * (and locked) in j->lock_fd.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_check_jail(struct jailer *j);

/* <base>/<exec name>/<id>/root, the lock, the copy of the exec file and
 * of ember's CPUID cache; all on the undo list.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_make_chroot(struct jailer *j);

/* Inside the jail (after pivot_root): /dev/kvm, /dev/net/tun,
 * /dev/urandom owned by uid:gid, and the root given to uid:gid.  0 or an
 * exit code. */
__attribute__((warn_unused_result)) int jailer_make_devices(struct jailer *j);

/* Write "<pid>\n" over what fd holds.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_write_pid(struct jailer *j, int fd, pid_t pid);

/* Find each --cgroup's hierarchy and our place in it; for v2, that its
 * controller is available.  Changes nothing.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_check_cgroups(struct jailer *j);

/* Create <hierarchy>/<parent>/<id> in each hierarchy the --cgroup values
 * name (v2: enabling the controllers on the way down), write the values,
 * and move this process in.  0 or an exit code. */
__attribute__((warn_unused_result)) int jailer_make_cgroups(struct jailer *j);

/* Move this process back to the cgroups it started in (the jail's keep
 * whoever else is in them).  Best effort. */
void jailer_leave_cgroups(struct jailer *j);

#endif
