/* spawn: time one command from exec to its first stdout byte and to its
 * exit, without the caller's (Python's) fork cost in the window.
 *
 *   spawn [-n RUNS] [-x EXPECT] [-p] -- COMMAND [ARG...]
 *
 * For each run it prints one line on stdout:
 *   first_ns exit_ns status maxrss_kib out_bytes expect_found
 * first_ns: CLOCK_MONOTONIC from just before posix_spawn() to the first byte
 * read from the child's stdout (-1 if it wrote none); exit_ns: to wait4()
 * returning, after stdout reached EOF; status: the exit code, or -SIGNAL;
 * maxrss_kib: ru_maxrss from wait4(); expect_found: 1 if EXPECT (default
 * "hello") occurs in the first 4 KiB of output, else 0.  The child's stdin
 * is /dev/null; its stderr is ours.  glibc's posix_spawn() uses
 * clone(CLONE_VM|CLONE_VFORK), so the window opens before the exec and the
 * exec's own cost is inside it, as it is for any caller of a monitor.
 * With -p it first prints "pid PID" as soon as the child is spawned, so the
 * caller can sample /proc/PID while it runs.
 *
 * bench.py links it static: Linux folds the pre-exec mm's peak RSS (with
 * vfork, ours) into the child's ru_maxrss, so a small parent keeps that
 * number the child's own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long ns_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)(t.tv_sec - t0->tv_sec) * 1000000000LL + (t.tv_nsec - t0->tv_nsec);
}

static int run_once(char **argv, const char *expect, int print_pid)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("spawn: pipe2");
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);

	char buf[65536], head[4097];
	size_t nhead = 0;
	long long total = 0, first = -1;
	struct timespec t0;
	pid_t pid;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r != 0) {
		fprintf(stderr, "spawn: %s: %s\n", argv[0], strerror(r));
		close(p[0]);
		return -1;
	}
	if (print_pid) {
		printf("pid %d\n", (int)pid);
		fflush(stdout);
	}
	for (;;) {
		ssize_t n = read(p[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (first < 0)
			first = ns_since(&t0);
		size_t take =
		    (size_t)n < sizeof(head) - 1 - nhead ? (size_t)n : sizeof(head) - 1 - nhead;
		memcpy(head + nhead, buf, take);
		nhead += take;
		total += n;
	}
	close(p[0]);
	int status;
	struct rusage ru;
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			perror("spawn: wait4");
			return -1;
		}
	}
	long long done = ns_since(&t0);
	head[nhead] = '\0';
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
	printf("%lld %lld %d %ld %lld %d\n", first, done, code, ru.ru_maxrss, total,
	       strstr(head, expect) != NULL);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	int runs = 1, print_pid = 0, opt;
	const char *expect = "hello";
	while ((opt = getopt(argc, argv, "+n:x:p")) != -1) {
		switch (opt) {
		case 'n':
			runs = atoi(optarg);
			break;
		case 'x':
			expect = optarg;
			break;
		case 'p':
			print_pid = 1;
			break;
		default:
			fprintf(stderr,
				"usage: spawn [-n RUNS] [-x EXPECT] [-p] -- COMMAND [ARG...]\n");
			return 2;
		}
	}
	if (optind >= argc || runs < 1) {
		fprintf(stderr, "usage: spawn [-n RUNS] [-x EXPECT] [-p] -- COMMAND [ARG...]\n");
		return 2;
	}
	for (int i = 0; i < runs; i++)
		if (run_once(argv + optind, expect, print_pid) < 0)
			return 1;
	return 0;
}
