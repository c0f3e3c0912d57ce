/* ha/'s network side without a network: PSK files (ha_psk_parse, and
 * ha_psk_load's refusal of a file others can read), the choice of
 * authentication, ADDR:PORT, and the relay over socketpairs in plain
 * mode (both directions, half-close, more than its buffers hold). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ha/tls_relay.h"

#define KEY32 "00112233445566778899aabbccddeeff"

static void psk_ok(const char *text, const char *id, size_t len, unsigned char first)
{
	struct ha_psk p;
	char err[300] = "";
	if (ha_psk_parse(text, strlen(text), &p, err, sizeof(err)))
		fail_msg("%s: %s", text, err);
	assert_string_equal(p.identity, id);
	assert_int_equal(p.key_len, len);
	assert_int_equal(p.key[0], first);
}

static void psk_bad(const char *text, const char *why)
{
	struct ha_psk p;
	char err[300] = "";
	assert_int_equal(ha_psk_parse(text, strlen(text), &p, err, sizeof(err)), -EINVAL);
	if (!strstr(err, why))
		fail_msg("%s: %s (wanted %s)", text, err, why);
}

static void test_psk_parse(void **state)
{
	psk_ok(KEY32, HA_PSK_DEFAULT_ID, 16, 0x00);
	psk_ok(KEY32 "\n", HA_PSK_DEFAULT_ID, 16, 0x00);
	psk_ok("# made by openssl rand -hex 32\n\n  hostA:" KEY32 KEY32 "  \r\n", "hostA", 32, 0);
	psk_ok("id:FFEEDDCCBBAA99887766554433221100", "id", 16, 0xff);
	psk_ok("x:" KEY32 KEY32 KEY32, "x", 48, 0);
	psk_bad("", "no key line");
	psk_bad("# only a comment\n", "no key line");
	psk_bad("0011", "32 to 96 hex digits");
	psk_bad(KEY32 KEY32 KEY32 "00", "32 to 96 hex digits");
	psk_bad(KEY32 "0", "32 to 96 hex digits");
	psk_bad("00112233445566778899aabbccddeefg", "not a hex digit");
	psk_bad(":" KEY32, "1 to 128 characters");
	psk_bad("a b:" KEY32, "space");
	psk_bad(KEY32 "\n" KEY32 "\n", "more than one key line");
	char id[200];
	memset(id, 'i', 129);
	snprintf(id + 129, sizeof(id) - 129, ":%s", KEY32);
	psk_bad(id, "1 to 128 characters");
}

static void test_psk_load(void **state)
{
	char path[] = "/tmp/test_ha_psk_XXXXXX", err[600];
	struct ha_psk p;
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, KEY32 "\n", 33), 33);
	close(fd);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(ha_psk_load(path, &p, err, sizeof(err)), 0);
	assert_int_equal(p.key_len, 16);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(ha_psk_load(path, &p, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "chmod 600"));
	unlink(path);
	assert_int_equal(ha_psk_load(path, &p, err, sizeof(err)), -ENOENT);
}

static void test_opts(void **state)
{
	struct ha_tls_opts none = {0}, plain = {.insecure_plain = true}, psk = {.psk_file = "k"},
			   certs = {.cert = "c", .key = "k", .ca = "ca"};
	assert_non_null(strstr(ha_tls_opts_refusal(&none), "--insecure-plain"));
	assert_null(ha_tls_opts_refusal(&plain));
	assert_null(ha_tls_opts_refusal(&psk));
	assert_null(ha_tls_opts_refusal(&certs));
	certs.ca = NULL;
	assert_non_null(strstr(ha_tls_opts_refusal(&certs), "all three"));
	psk.peer_name = "h";
	assert_non_null(ha_tls_opts_refusal(&psk));
}

static void test_hostport(void **state)
{
	char h[64], p[8];
	assert_int_equal(ha_split_hostport("10.0.0.1:4444", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "10.0.0.1");
	assert_string_equal(p, "4444");
	assert_int_equal(ha_split_hostport("[fd00::1]:0", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "fd00::1");
	assert_string_equal(p, "0");
	assert_int_equal(ha_split_hostport("host.example:80", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "host.example");
	const char *bad[] = {"10.0.0.1",    "10.0.0.1:", ":80",	 "fd00::1:80",
			     "[fd00::1]80", "h:65536",	 "h:8x", "h:123456"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ha_split_hostport(bad[i], h, sizeof(h), p, sizeof(p)), -EINVAL);
}

/* ---- the relay, plain, between two socketpairs ---- */

struct side {
	int fd;
	size_t n;      /* bytes to write, then SHUT_WR */
	unsigned seed; /* of the pattern */
	size_t got;    /* bytes read until EOF, checked against the peer's pattern */
	unsigned peer_seed;
	bool bad;
};

static unsigned char pat(unsigned seed, size_t i)
{
	return (unsigned char)((i * 2654435761u) >> 13 ^ seed);
}

static void *writer(void *arg)
{
	struct side *s = arg;
	unsigned char buf[4096];
	for (size_t off = 0; off < s->n;) {
		size_t k = s->n - off < sizeof(buf) ? s->n - off : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = pat(s->seed, off + i);
		ssize_t w = write(s->fd, buf, k);
		if (w <= 0)
			return NULL;
		off += (size_t)w;
	}
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

static void *reader(void *arg)
{
	struct side *s = arg;
	unsigned char buf[3000];
	ssize_t r;
	while ((r = read(s->fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < r; i++, s->got++)
			s->bad |= buf[i] != pat(s->peer_seed, s->got);
	return NULL;
}

/* vmm <-> [local | relay | net] <-> peer: the two socketpairs, and a
 * plain connection on net[0]. */
static struct ha_conn *plain_pairs(int vmm[2], int net[2])
{
	char err[HA_ERR_MAX];
	struct ha_tls *t;
	struct ha_conn *c;
	struct ha_tls_opts plain = {.insecure_plain = true};
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, vmm), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, net), 0);
	assert_int_equal(ha_tls_new(&t, &plain, true, err, sizeof(err)), 0);
	assert_int_equal(ha_conn_handshake(t, net[0], NULL, 1000, &c, err, sizeof(err)), 0);
	ha_tls_free(t);
	return c;
}

static void test_relay_plain(void **state)
{
	int vmm[2], net[2];
	char err[HA_ERR_MAX];
	struct ha_conn *c = plain_pairs(vmm, net);
	/* 3 MiB one way, 100 KiB the other: both ways at once, each ending
	 * on its own (the short one first). */
	struct side v = {.fd = vmm[1], .n = 3u << 20, .seed = 1, .peer_seed = 2},
		    p = {.fd = net[1], .n = 100 << 10, .seed = 2, .peer_seed = 1};
	pthread_t th[4];
	pthread_create(&th[0], NULL, writer, &v);
	pthread_create(&th[1], NULL, reader, &v);
	pthread_create(&th[2], NULL, writer, &p);
	pthread_create(&th[3], NULL, reader, &p);
	struct ha_relay_stats st = {0};
	assert_int_equal(ha_relay(c, vmm[0], -1, &st, err, sizeof(err)), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(p.got, 3u << 20);
	assert_int_equal(v.got, 100 << 10);
	assert_false(p.bad || v.bad);
	assert_int_equal(st.to_net, 3u << 20);
	assert_int_equal(st.to_local, 100 << 10);
	assert_true(st.local_eof && st.net_eof);
	/* the stream's last bytes, as a controller reads its last record */
	assert_true(atomic_load(&st.to_net_done));
	assert_int_equal(st.tail_len, HA_RELAY_TAIL);
	for (size_t i = 0; i < HA_RELAY_TAIL; i++)
		assert_int_equal(st.tail[i], pat(1, (3u << 20) - HA_RELAY_TAIL + i));
	ha_conn_free(c);
	close(vmm[0]);
	close(vmm[1]);
	close(net[1]);
}

/* ember writes its last words (a NACK) and exits while the peer still
 * sends: the words go out, what the peer sends is dropped, the relay
 * ends cleanly. */
static void test_relay_vmm_exits(void **state)
{
	int vmm[2], net[2];
	char err[HA_ERR_MAX], got[64] = "";
	struct ha_conn *c = plain_pairs(vmm, net);
	struct side p = {.fd = net[1], .n = 100 << 10, .seed = 2};
	pthread_t th;
	assert_int_equal(write(vmm[1], "NACK: no", 8), 8);
	close(vmm[1]);
	pthread_create(&th, NULL, writer, &p);
	assert_int_equal(ha_relay(c, vmm[0], -1, NULL, err, sizeof(err)), 0);
	pthread_join(th, NULL);
	assert_int_equal(read(net[1], got, sizeof(got)), 8);
	assert_memory_equal(got, "NACK: no", 8);
	assert_int_equal(read(net[1], got, sizeof(got)), 0);
	ha_conn_free(c);
	close(vmm[0]);
	close(net[1]);
}

static void test_relay_stop(void **state)
{
	int vmm[2], net[2], stop[2];
	char err[HA_ERR_MAX];
	struct ha_conn *c = plain_pairs(vmm, net);
	assert_int_equal(pipe(stop), 0);
	assert_int_equal(write(stop[1], "x", 1), 1);
	assert_int_equal(ha_relay(c, vmm[0], stop[0], NULL, err, sizeof(err)), -ECANCELED);
	ha_conn_free(c);
	for (int i = 0; i < 2; i++)
		close(stop[i]), close(vmm[i]);
	close(net[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_psk_parse),	cmocka_unit_test(test_psk_load),
	    cmocka_unit_test(test_opts),	cmocka_unit_test(test_hostport),
	    cmocka_unit_test(test_relay_plain), cmocka_unit_test(test_relay_vmm_exits),
	    cmocka_unit_test(test_relay_stop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
