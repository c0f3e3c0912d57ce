/* Times ember's API start: api_probe EMBER SOCK KERNEL [MEM_MIB] prints
 *   exec->connect  exec->first-reply  InstanceStart-sent->first-output
 *   InstanceStart-sent->its-reply
 * in nanoseconds (CLOCK_MONOTONIC), so Python's fork stays outside the
 * windows (connect is retried every 20 us).  Before InstanceStart it
 * configures the guest as `ember run --kernel KERNEL --memory MEM_MIB`
 * would run it: PUT /boot-source, and with MEM_MIB PUT /machine-config
 * (1 vCPU, MEM_MIB MiB), each answered before the next is sent.  The
 * InstanceStart window ends at the guest's first stdout byte, whether
 * ember's 204 reply came before it or not (-1 for the reply when ember
 * closed the connection without one: the guest may end it first).  ember
 * is killed afterwards.
 * Exit 1 on any failure. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Send a request and read one reply (headers + Content-Length body). */
static int request(int fd, const char *req)
{
	char buf[4096];
	size_t got = 0;
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		return -1;
	for (;;) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
		buf[got] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		char *cl = strstr(buf, "Content-Length: ");
		size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
		if (got >= (size_t)(end + 4 - buf) + body)
			return atoi(buf + 9);
	}
}

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: api_probe EMBER SOCK KERNEL [MEM_MIB]\n");
		return 2;
	}
	int out[2];
	if (pipe(out))
		return 1;
	unlink(argv[2]);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_addclose(&fa, out[0]);
	char *args[] = {argv[1], "--api-sock", argv[2], NULL};
	pid_t pid;
	long long t0 = now();
	if (posix_spawn(&pid, argv[1], &fa, NULL, args, environ))
		return 1;
	close(out[1]);

	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[2]);
	int fd = -1, rc = 1;
	long long t_conn = 0, t_reply = 0, t_start = 0, t_out = 0, t_start_reply = 0;
	while (now() - t0 < 5000000000LL) {
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(fd);
		fd = -1;
		/* Not a busy spin: on a 2-CPU machine it would take ember's CPU. */
		nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
	}
	if (fd < 0)
		goto out;
	t_conn = now();
	if (request(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") != 200)
		goto out;
	t_reply = now();
	char req[4600];
	char body[4200];
	snprintf(body, sizeof(body), "{\"kernel_image_path\":\"%s\"}", argv[3]);
	snprintf(req, sizeof(req),
		 "PUT /boot-source HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
		 strlen(body), body);
	if (request(fd, req) != 204)
		goto out;
	if (argc == 5) {
		snprintf(body, sizeof(body), "{\"vcpu_count\":1,\"mem_size_mib\":%d}",
			 atoi(argv[4]));
		snprintf(req, sizeof(req),
			 "PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
			 strlen(body), body);
		if (request(fd, req) != 204)
			goto out;
	}
	static const char start[] = "PUT /actions HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n"
				    "{\"action_type\":\"InstanceStart\"}";
	t_start = now();
	if (write(fd, start, sizeof(start) - 1) != sizeof(start) - 1)
		goto out;
	/* The output and the reply, in whichever order they come. */
	char rep[256];
	size_t nrep = 0;
	while (!t_out || !t_start_reply) {
		struct pollfd p[2] = {{.fd = t_out ? -1 : out[0], .events = POLLIN},
				      {.fd = t_start_reply ? -1 : fd, .events = POLLIN}};
		if (poll(p, 2, 5000) <= 0)
			goto out;
		long long t = now();
		char c;
		if (p[0].revents) {
			if (read(out[0], &c, 1) != 1)
				goto out;
			t_out = t;
		}
		if (p[1].revents) {
			ssize_t n = read(fd, rep + nrep, sizeof(rep) - 1 - nrep);
			if (n <= 0 && t_out) {
				/* The guest (hello, then reset) may end ember before
				 * the reply goes out: no reply time, -1. */
				t_start_reply = t_start - 1;
				break;
			}
			if (n <= 0)
				goto out;
			nrep += (size_t)n;
			rep[nrep] = '\0';
			if (strstr(rep, "\r\n\r\n")) {
				if (atoi(rep + 9) != 204)
					goto out;
				t_start_reply = t;
			}
		}
	}
	rc = 0;
	printf("%lld %lld %lld %lld\n", t_conn - t0, t_reply - t0, t_out - t_start,
	       t_start_reply - t_start);
out:
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(argv[2]);
	return rc;
}
