/* `ember migrate`'s pure parts (ha/migrate/): the command line and its
 * refusals, sizes and durations, the request bodies, GET /migration read
 * back, the progress line in both forms, the summary, and the hand-over
 * rules of docs/migration.md, case by case. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha/migrate/migrate.h"

/* argv from a space-separated line (copies: parsing may write into it). */
static int parse(const char *line, struct mig_args *a, char *err, size_t len)
{
	static char buf[1024];
	static char *argv[64];
	int argc = 0;
	strcpy(buf, line);
	for (char *t = strtok(buf, " "); t && argc < 63; t = strtok(NULL, " "))
		argv[argc++] = t;
	return mig_parse_args(argc, argv, a, err, len);
}

static void refused(const char *line, const char *why)
{
	struct mig_args a;
	char err[600] = "";
	assert_int_equal(parse(line, &a, err, sizeof(err)), -EINVAL);
	if (!strstr(err, why))
		fail_msg("%s: %s (wanted %s)", line, err, why);
}

static void test_bytes(void **state)
{
	uint64_t b;
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {{"0", 0},	      {"1000", 1000},	    {"64K", 65536},
		  {"64k", 65536},     {"1.5M", 1572864},    {"10G", 10737418240ULL},
		  {"1T", 1ULL << 40}, {"100MB", 104857600}, {"100MiB/s", 104857600},
		  {"512B", 512},      {"2M/s", 2097152}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(mig_parse_bytes(ok[i].s, &b), 0);
		assert_int_equal(b, ok[i].v);
	}
	const char *bad[] = {"", "M", "-1", "1X", "1.3K", "1e3", "0x10", "inf", "10 M", "1MM"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_not_equal(mig_parse_bytes(bad[i], &b), 0);
	assert_int_equal(mig_parse_bytes("99999999T", &b), -ERANGE);
}

static void test_seconds(void **state)
{
	static const char *const in[] = {"90", "2.5", "500ms", "2m", "3s"};
	static const uint64_t want[] = {90000, 2500, 500, 120000, 3000};
	uint64_t ms;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		assert_int_equal(mig_parse_seconds(in[i], &ms), 0);
		assert_int_equal(ms, want[i]);
	}
	assert_int_not_equal(mig_parse_seconds("soon", &ms), 0);
	assert_int_not_equal(mig_parse_seconds("5h", &ms), 0);
	assert_int_not_equal(mig_parse_seconds("-1", &ms), 0);
}

/* A body's text (the body freed; the text the caller's). */
static char *text_of(json_t *body, size_t flags)
{
	char *t = json_dumps(body, flags);
	json_decref(body);
	return t;
}

static void test_same_host(void **state)
{
	struct mig_args a;
	char err[600];
	assert_int_equal(parse("--from a.sock --to b.sock --downtime-ms 20 --max-bandwidth=1G "
			       "--timeout 30 --converge none --use-saved-paths --drive "
			       "rootfs,path=/d.img --net eth0,tap=tap1 --vsock uds=/v.sock",
			       &a, err, sizeof(err)),
			 0);
	assert_int_equal(a.mode, MIG_SAME_HOST);
	assert_string_equal(a.from, "a.sock");
	assert_string_equal(a.to, "b.sock");
	assert_int_equal(a.downtime_ms, 20);
	assert_int_equal(a.max_bandwidth, 1ULL << 30);
	assert_int_equal(a.timeout_ms, 30000);
	assert_string_equal(a.converge, "none");
	assert_int_equal(a.nr_drives, 1);
	assert_string_equal(a.drives[0].id, "rootfs");
	assert_string_equal(a.drives[0].path, "/d.img");
	assert_string_equal(a.nets[0].path, "tap1");
	assert_string_equal(a.vsock_uds, "/v.sock");

	char *send = text_of(mig_send_body(&a), JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(send, "{\"converge\":\"none\",\"downtime_ms\":20,"
				  "\"max_bandwidth\":1073741824,\"timeout_ms\":30000}");
	free(send);
	char *recv = text_of(mig_receive_body(&a), JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(recv, "{\"drive_overrides\":[{\"drive_id\":\"rootfs\",\"path_on_host\":"
				  "\"/d.img\"}],\"network_overrides\":[{\"host_dev_name\":\"tap1\","
				  "\"iface_id\":\"eth0\"}],\"use_saved_paths\":true,"
				  "\"vsock_override\":{\"uds_path\":\"/v.sock\"}}");
	free(recv);

	/* Unset: only the timeout is sent; the VMM's defaults apply. */
	assert_int_equal(parse("--from a --to b", &a, err, sizeof(err)), 0);
	send = text_of(mig_send_body(&a), JSON_COMPACT);
	assert_string_equal(send, "{\"timeout_ms\":60000}");
	free(send);
	recv = text_of(mig_receive_body(&a), JSON_COMPACT);
	assert_string_equal(recv, "{}");
	free(recv);

	assert_int_equal(parse("--help", &a, err, sizeof(err)), 0);
	assert_true(a.help);
}

static void test_between_hosts(void **state)
{
	struct mig_args a;
	char err[600];
	assert_int_equal(
	    parse("--from a --to-host 10.0.0.2:4444 --psk-file k", &a, err, sizeof(err)), 0);
	assert_int_equal(a.mode, MIG_SEND);
	assert_string_equal(a.tls.psk_file, "k");
	assert_int_equal(parse("--listen 0.0.0.0:4444 --to b --tls-cert c --tls-key k --tls-ca ca",
			       &a, err, sizeof(err)),
			 0);
	assert_int_equal(a.mode, MIG_RECEIVE);
	assert_string_equal(a.tls.ca, "ca");
	assert_int_equal(parse("--listen [::1]:0 --to b --insecure-plain", &a, err, sizeof(err)),
			 0);
	assert_true(a.tls.insecure_plain);
	assert_int_equal(parse("--resolve resume --api-sock s", &a, err, sizeof(err)), 0);
	assert_int_equal(a.mode, MIG_RESOLVE);
}

/* --copy-storage: both sides' "copy_storage"; the receiving side needs a
 * --drive for each drive it receives. */
static void test_copy_storage(void **state)
{
	struct mig_args a;
	char err[600];
	assert_int_equal(parse("--from a --to-host h:1 --psk-file k --copy-storage d0,d1", &a, err,
			       sizeof(err)),
			 0);
	char *send = text_of(mig_send_body(&a), JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(send, "{\"copy_storage\":[\"d0\",\"d1\"],\"timeout_ms\":60000}");
	free(send);
	assert_int_equal(parse("--listen h:1 --to b --psk-file k --copy-storage all --drive "
			       "d0,path=/x.img",
			       &a, err, sizeof(err)),
			 0);
	char *recv = text_of(mig_receive_body(&a), JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(recv, "{\"copy_storage\":\"all\",\"drive_overrides\":[{\"drive_id\":"
				  "\"d0\",\"path_on_host\":\"/x.img\"}]}");
	free(recv);
	assert_int_equal(parse("--from a --to b --copy-storage d0 --drive d0,path=/x.img", &a, err,
			       sizeof(err)),
			 0);
	refused("--listen h:1 --to b --psk-file k --copy-storage d0", "needs --drive d0,path=FILE");
	refused("--listen h:1 --to b --psk-file k --copy-storage d0,d1 --drive d0,path=/x",
		"drive d1 needs --drive d1");
	refused("--from a --to b --copy-storage all", "give --drive ID,path=FILE");
	refused("--from a --to b --local --copy-storage d0 --drive d0,path=/x", "pre-copy only");
	refused("--from a --to b --mode postcopy --copy-storage d0 --drive d0,path=/x",
		"pre-copy only");
}

static void test_refusals(void **state)
{
	refused("--from a --to-host h:1", "no authentication chosen");
	refused("--from a --to-host h:1", "--insecure-plain");
	refused("--listen h:1 --to b", "--psk-file");
	refused("--from a --to-host h:1 --psk-file k --insecure-plain", "--insecure-plain goes");
	refused("--from a --to-host h:1 --psk-file k --tls-cert c --tls-key k --tls-ca ca",
		"choose one");
	refused("--from a --to-host h:1 --tls-cert c", "all three");
	refused("--from a --to b --psk-file k", "socketpair");
	refused("--from a", "give --from A.sock --to B.sock");
	refused("--to b --to-host h:1 --insecure-plain", "give --from");
	refused("--listen h:1 --to b --insecure-plain --downtime-ms 5", "sending side's");
	refused("--from a --to-host h:1 --insecure-plain --use-saved-paths", "receiving side's");
	refused("--from a --to b --converge fast", "--converge fast");
	refused("--from a --to b --timeout 0", "--timeout 0");
	refused("--from a --to b --max-bandwidth lots", "--max-bandwidth lots");
	refused("--from a --to b --downtime-ms -3", "--downtime-ms");
	refused("--from a --to b --drive rootfs", "ID,path=FILE");
	refused("--from a --to b --net eth0,path=x", "ID,tap=TAP");
	refused("--from a --to b --vsock /x", "uds=PATH");
	refused("--from a --to b --frobnicate 1", "unknown option --frobnicate");
	refused("--from a --to b extra", "unexpected argument extra");
	refused("--from", "--from needs a value");
	refused("--resolve maybe --api-sock s", "resume or stop");
	refused("--resolve stop", "--api-sock");
	refused("--resolve stop --api-sock s --from a", "only --api-sock");
	refused("--from a --to b --insecure-plain=yes", "takes no value");
}

static void test_status_and_progress(void **state)
{
	json_t *j = json_loads("{\"role\": \"source\", \"phase\": \"precopy\", \"round\": 3,"
			       " \"bytes_sent\": 268435456, \"bytes_remaining\": 268435456,"
			       " \"pages_sent\": 65000, \"dirty_rate_bps\": 1048576,"
			       " \"bandwidth_bps\": 812400000, \"expected_downtime_ms\": 1.2,"
			       " \"throttle_pct\": 20, \"total_ms\": 310, \"downtime_ms\": null,"
			       " \"error\": null}",
			       0, NULL);
	struct mig_status s;
	char line[256];
	assert_int_equal(mig_status_parse(j, &s), 0);
	json_decref(j);
	assert_int_equal(s.phase, MIG_PH_PRECOPY);
	assert_int_equal(s.round, 3);
	assert_true(s.downtime_ms < 0);
	assert_string_equal(s.error, "");
	assert_string_equal(mig_progress_line(line, sizeof(line), &s, false, 0),
			    "migrate: precopy round 3: 50%, 256.0 MiB sent, 812.4 MB/s, expected "
			    "downtime 1.2 ms, throttle 20%");
	assert_string_equal(mig_progress_line(line, sizeof(line), &s, true, 80),
			    "precopy round 3 [######-------]  50%   812.4 MB/s downtime ~1.2 ms "
			    "throttle 20%");
	assert_true(strlen(line) < 80); /* the last column free: no wrap */
	assert_non_null(strstr(mig_progress_line(line, sizeof(line), &s, true, 200),
			       "[###############---------------]"));
	/* A narrow terminal: the bar shrinks to 10 cells, no fewer. */
	assert_string_equal(mig_progress_line(line, sizeof(line), &s, true, 20),
			    "precopy round 3 [#####-----]  50%   812.4 MB/s downtime ~1.2 ms "
			    "throttle 20%");

	j = json_loads("{\"phase\": \"failed\", \"error\": \"NACK: 2 vCPUs here\", "
		       "\"downtime_ms\": 3.5}",
		       0, NULL);
	assert_int_equal(mig_status_parse(j, &s), 0);
	json_decref(j);
	assert_int_equal(s.phase, MIG_PH_FAILED);
	assert_true(s.downtime_ms == 3.5);
	assert_string_equal(mig_progress_line(line, sizeof(line), &s, false, 0),
			    "migrate: failed: NACK: 2 vCPUs here");
	j = json_loads("{\"phase\": \"stop-and-copy\", \"round\": 7}", 0, NULL);
	assert_int_equal(mig_status_parse(j, &s), 0);
	json_decref(j);
	assert_string_equal(mig_progress_line(line, sizeof(line), &s, false, 0),
			    "migrate: stop-and-copy round 7");
	j = json_loads("{\"phase\": \"warp-drive\"}", 0, NULL);
	assert_int_equal(mig_status_parse(j, &s), 0);
	json_decref(j);
	assert_int_equal(s.phase, MIG_PH_OTHER);
	j = json_loads("{\"fault_message\": \"Invalid request method and/or path\"}", 0, NULL);
	assert_int_equal(mig_status_parse(j, &s), -EINVAL);
	json_decref(j);
	for (int p = MIG_PH_NONE; p <= MIG_PH_RUNNING; p++)
		assert_int_equal(mig_phase_parse(mig_phase_name((enum mig_phase)p)), p);
}

static void test_summary(void **state)
{
	struct mig_summary s = {.result = "completed",
				.total_ms = 1234,
				.bytes_sent = 5,
				.downtime_ms = 2.5,
				.rounds = 4,
				.throttle_pct = 0,
				.handover = "gogo"};
	char *t = mig_summary_json(&s);
	assert_string_equal(t, "{\"result\":\"completed\",\"total_ms\":1234,\"bytes_sent\":5,"
			       "\"rounds\":4,\"throttle_pct\":0,\"downtime_ms\":2.5,"
			       "\"handover\":\"gogo\",\"error\":null}");
	free(t);
	s = (struct mig_summary){.result = "failed", .downtime_ms = -1, .error = "NACK"};
	t = mig_summary_json(&s);
	assert_non_null(strstr(t, "\"downtime_ms\":null"));
	assert_non_null(strstr(t, "\"error\":\"NACK\""));
	free(t);
}

#define D(src, dst, committed, settled)                                                            \
	mig_decide(MIG_PH_##src, MIG_PH_##dst, true, true, committed, settled)

/* Same host: docs/migration.md, "Exactly once", row by row. */
static void test_handover_same_host(void **state)
{
	/* still moving: wait, whatever the target says */
	assert_int_equal(D(PRECOPY, RECEIVING, false, true), MIG_WAIT);
	assert_int_equal(D(STOP_AND_COPY, FAILED, true, true), MIG_WAIT);
	assert_int_equal(D(NOANSWER, READY, false, true), MIG_WAIT); /* stuck is not gone */
	/* the normal end */
	assert_int_equal(D(COMPLETED, RUNNING, true, false), MIG_OK);
	assert_int_equal(D(GONE, RUNNING, true, false), MIG_OK);
	assert_int_equal(D(COMPLETED, READY, true, true), MIG_WAIT); /* GOGO in flight */
	/* GOGO not delivered */
	assert_int_equal(D(HANDOVER_UNKNOWN, READY, true, false), MIG_RESUME_TARGET_STOP_SOURCE);
	assert_int_equal(D(HANDOVER_UNKNOWN, RUNNING, true, false), MIG_STOP_SOURCE);
	assert_int_equal(D(HANDOVER_UNKNOWN, GONE, true, false), MIG_RESUME_SOURCE);
	assert_int_equal(D(HANDOVER_UNKNOWN, FAILED, true, false), MIG_RESUME_SOURCE);
	assert_int_equal(D(HANDOVER_UNKNOWN, NOANSWER, true, true), MIG_WAIT);
	/* the source died: the target is resumed only after a grace */
	assert_int_equal(D(GONE, READY, true, false), MIG_WAIT);
	assert_int_equal(D(GONE, READY, false, true), MIG_RESUME_TARGET);
	assert_int_equal(D(GONE, RECEIVING, false, true), MIG_WAIT);
	assert_int_equal(D(GONE, FAILED, false, false), MIG_LOST);
	assert_int_equal(D(COMPLETED, GONE, true, false), MIG_LOST);
	/* the source failed and runs on */
	assert_int_equal(D(FAILED, READY, false, false), MIG_STOP_TARGET);
	assert_int_equal(D(CANCELLED, GONE, false, false), MIG_FAILED);
	assert_int_equal(D(FAILED, RECEIVING, false, false), MIG_WAIT);
	assert_int_equal(D(FAILED, RECEIVING, false, true), MIG_FAILED);
	assert_int_equal(D(FAILED, RUNNING, false, true), MIG_UNRESOLVED);
}

static void test_handover_one_end(void **state)
{
	/* sending host: the source only */
	enum mig_phase x = MIG_PH_NOANSWER;
	assert_int_equal(mig_decide(MIG_PH_COMPLETED, x, true, false, true, false), MIG_OK);
	assert_int_equal(mig_decide(MIG_PH_FAILED, x, true, false, false, false), MIG_FAILED);
	assert_int_equal(mig_decide(MIG_PH_HANDOVER_UNKNOWN, x, true, false, true, true),
			 MIG_UNRESOLVED);
	assert_int_equal(mig_decide(MIG_PH_GONE, x, true, false, true, false), MIG_OK);
	assert_int_equal(mig_decide(MIG_PH_GONE, x, true, false, false, false), MIG_WAIT);
	assert_int_equal(mig_decide(MIG_PH_GONE, x, true, false, false, true), MIG_UNRESOLVED);
	assert_int_equal(mig_decide(MIG_PH_PRECOPY, x, true, false, false, true), MIG_WAIT);
	/* receiving host: the target only; ready waits (the deadline decides) */
	assert_int_equal(mig_decide(x, MIG_PH_RUNNING, false, true, false, false), MIG_OK);
	assert_int_equal(mig_decide(x, MIG_PH_FAILED, false, true, false, false), MIG_FAILED);
	assert_int_equal(mig_decide(x, MIG_PH_GONE, false, true, false, false), MIG_FAILED);
	assert_int_equal(mig_decide(x, MIG_PH_READY, false, true, false, true), MIG_WAIT);
	assert_int_equal(mig_decide(x, MIG_PH_RECEIVING, false, true, false, true), MIG_WAIT);
}

static void test_gogo_tail(void **state)
{
	unsigned char h[32] = "GOGO";
	memset(h + 4, 0, 28);
	h[24] = 0x5a; /* the CRC: any */
	assert_true(mig_stream_ends_with_gogo(h, 32));
	assert_false(mig_stream_ends_with_gogo(h, 31));
	h[4] = 1; /* a payload: not GOGO's header */
	assert_false(mig_stream_ends_with_gogo(h, 32));
	h[4] = 0;
	memcpy(h, "DONE", 4);
	assert_false(mig_stream_ends_with_gogo(h, 32));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bytes),
	    cmocka_unit_test(test_seconds),
	    cmocka_unit_test(test_same_host),
	    cmocka_unit_test(test_between_hosts),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_copy_storage),
	    cmocka_unit_test(test_status_and_progress),
	    cmocka_unit_test(test_summary),
	    cmocka_unit_test(test_handover_same_host),
	    cmocka_unit_test(test_handover_one_end),
	    cmocka_unit_test(test_gogo_tail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
