/* host_open(): what each kind of path gives, and that none of them waits.
 * Every test runs under alarm(10): a host_open() that blocks (a FIFO's
 * open waiting for its other end) ends the program instead of hanging it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/hostfile.h"

struct fx {
	char dir[128];
	char path[192]; /* the last path() */
	char err[512];
};

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	if (f)
		snprintf(f->dir, sizeof(f->dir), "%s/ember-test-hostfile-XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
	if (!f || !mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	*state = f;
	alarm(10);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	alarm(0);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int r = system(cmd);
	free(f);
	return r == 0 ? 0 : -1;
}

static const char *path(struct fx *f, const char *name)
{
	snprintf(f->path, sizeof(f->path), "%s/%s", f->dir, name);
	return f->path;
}

static const char *make_fifo(struct fx *f, const char *name)
{
	const char *p = path(f, name);
	assert_int_equal(mkfifo(p, 0600), 0);
	return p;
}

static const char *make_file(struct fx *f, const char *name)
{
	const char *p = path(f, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "data", 4), 4);
	close(fd);
	return p;
}

/* The refusal names the path and says what it is and what was wanted. */
static void assert_refused(struct fx *f, const char *p, int flags, unsigned kinds, int err,
			   const char *why)
{
	f->err[0] = '\0';
	assert_int_equal(host_open(p, flags, kinds, f->err, sizeof(f->err)), -err);
	assert_contains(f->err, p);
	assert_contains(f->err, why);
}

static void test_regular_file(void **state)
{
	struct fx *f = *state;
	const char *p = make_file(f, "kernel");
	int fd = host_open(p, O_RDONLY, HOST_REG, f->err, sizeof(f->err));
	assert_true(fd >= 0);
	/* O_NONBLOCK was for the open only; O_CLOEXEC stays */
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	char buf[8];
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	close(fd);
	/* a caller that asks for O_NONBLOCK keeps it */
	fd = host_open(p, O_RDWR | O_NONBLOCK, HOST_REG | HOST_BLK, f->err, sizeof(f->err));
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	close(fd);
}

static void test_fifo_refused(void **state)
{
	struct fx *f = *state;
	const char *p = make_fifo(f, "fifo");
	/* A plain open of either end would wait for the other. */
	assert_refused(f, p, O_RDONLY, HOST_REG, EINVAL, ": is a FIFO, not a regular file");
	assert_refused(f, p, O_RDWR, HOST_REG | HOST_BLK, EINVAL,
		       ": is a FIFO, not a regular file or a block device");
	assert_refused(f, p, O_WRONLY | O_CREAT | O_TRUNC, HOST_REG | HOST_BLK | HOST_CHR, EINVAL,
		       ": is a FIFO, not a regular file, a block device or a character device");
}

static void test_fifo_taken_when_asked(void **state)
{
	struct fx *f = *state;
	const char *p = make_fifo(f, "fifo");
	/* A writer with no reader: refused at once, not waited on. */
	assert_refused(f, p, O_WRONLY, HOST_REG | HOST_FIFO, ENXIO, ": is a FIFO with no reader");
	int rd = open(p, O_RDONLY | O_NONBLOCK);
	assert_true(rd >= 0);
	int fd = host_open(p, O_WRONLY, HOST_REG | HOST_FIFO, f->err, sizeof(f->err));
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	assert_int_equal(write(fd, "x", 1), 1);
	char c;
	assert_int_equal(read(rd, &c, 1), 1);
	close(fd);
	close(rd);
	/* A reader does not wait for a writer either. */
	fd = host_open(p, O_RDONLY, HOST_FIFO, f->err, sizeof(f->err));
	assert_true(fd >= 0);
	close(fd);
}

static void test_symlink_to_fifo(void **state)
{
	struct fx *f = *state;
	char fifo[192];
	snprintf(fifo, sizeof(fifo), "%s", make_fifo(f, "fifo"));
	const char *p = path(f, "link");
	assert_int_equal(symlink(fifo, p), 0);
	assert_refused(f, p, O_RDONLY, HOST_REG, EINVAL, ": is a FIFO, not a regular file");
	assert_refused(f, p, O_RDONLY | O_NOFOLLOW, HOST_REG, EINVAL,
		       ": is a symbolic link, not a regular file");
	/* a link to a regular file is that file */
	char file[192];
	snprintf(file, sizeof(file), "%s", make_file(f, "file"));
	p = path(f, "link2");
	assert_int_equal(symlink(file, p), 0);
	int fd = host_open(p, O_RDONLY, HOST_REG, f->err, sizeof(f->err));
	assert_true(fd >= 0);
	close(fd);
}

static void test_directory_refused(void **state)
{
	struct fx *f = *state;
	assert_refused(f, f->dir, O_RDONLY, HOST_REG, EINVAL,
		       ": is a directory, not a regular file");
	/* refused as what it is, not with open's EISDIR */
	assert_refused(f, f->dir, O_RDWR, HOST_REG | HOST_BLK, EINVAL,
		       ": is a directory, not a regular file or a block device");
}

static void test_char_device(void **state)
{
	struct fx *f = *state;
	assert_refused(f, "/dev/null", O_RDONLY, HOST_REG, EINVAL,
		       "/dev/null: is a character device, not a regular file");
	int fd = host_open("/dev/null", O_WRONLY | O_CREAT | O_TRUNC, HOST_REG | HOST_CHR, f->err,
			   sizeof(f->err));
	assert_true(fd >= 0);
	close(fd);
}

static void test_socket_refused(void **state)
{
	struct fx *f = *state;
	const char *p = path(f, "sock");
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(s >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(p) >= sizeof(sa.sun_path))
		skip(); /* a long TMPDIR */
	memcpy(sa.sun_path, p, strlen(p));
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_refused(f, p, O_RDONLY, HOST_REG, EINVAL, ": is a socket, not a regular file");
	close(s);
}

static void test_missing(void **state)
{
	struct fx *f = *state;
	const char *p = path(f, "nope");
	assert_refused(f, p, O_RDONLY, HOST_REG, ENOENT, ": No such file or directory");
	assert_string_equal(strchr(f->err, ':'), ": No such file or directory");
	/* O_CREAT makes it: a regular file, 0644 less the umask */
	mode_t old = umask(022);
	int fd = host_open(p, O_WRONLY | O_CREAT | O_TRUNC, HOST_REG, f->err, sizeof(f->err));
	umask(old);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0644);
	close(fd);
	/* a missing folder on the way */
	assert_refused(f, path(f, "no/such"), O_WRONLY | O_CREAT, HOST_REG, ENOENT,
		       "No such file or directory");
}

static void test_open_errors_kept(void **state)
{
	struct fx *f = *state;
	const char *p = make_file(f, "file");
	assert_refused(f, p, O_RDONLY | O_CREAT | O_EXCL, HOST_REG, EEXIST, ": File exists");
	assert_refused(f, path(f, "file/below"), O_RDONLY, HOST_REG, ENOTDIR, ": Not a directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_regular_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fifo_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fifo_taken_when_asked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_symlink_to_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_directory_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_char_device, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_socket_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors_kept, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
