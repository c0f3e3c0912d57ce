/* virtio/vsock: the pure parts (wire format, header checks, the host's
 * CONNECT line, credit arithmetic with wrap-around), then the device
 * itself without KVM: rings in a fake guest memory, the vmm loop pumped
 * by hand, host sockets real; its counters; save/restore and the
 * TRANSPORT_RESET event a restore owes the driver. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/unit/virtio_fixture.h"
#include "virtio/vsock.h"

/* ---- wire format ---- */

static void test_hdr_layout(void **state)
{
	struct vsock_hdr h = {.src_cid = 0x0102030405060708ULL,
			      .dst_cid = 2,
			      .src_port = 0x11223344,
			      .dst_port = 0x55667788,
			      .len = 0x99aabbcc,
			      .type = 1,
			      .op = 5,
			      .flags = 3,
			      .buf_alloc = 0x40000,
			      .fwd_cnt = 0xfffffffe};
	uint8_t raw[VSOCK_HDR_LEN];
	vsock_hdr_encode(&h, raw);
	/* §5.10.6: little-endian, packed, in this order */
	assert_int_equal(raw[0], 0x08);
	assert_int_equal(raw[7], 0x01);
	assert_int_equal(raw[8], 2);
	assert_int_equal(raw[16], 0x44);
	assert_int_equal(raw[20], 0x88);
	assert_int_equal(raw[24], 0xcc);
	assert_int_equal(raw[28], 1);
	assert_int_equal(raw[30], 5);
	assert_int_equal(raw[32], 3);
	assert_int_equal(raw[38], 0x04);
	assert_int_equal(raw[40], 0xfe);
	assert_int_equal(raw[43], 0xff);
	struct vsock_hdr back;
	vsock_hdr_decode(raw, &back);
	assert_true(back.src_cid == h.src_cid && back.dst_cid == h.dst_cid);
	assert_true(back.src_port == h.src_port && back.dst_port == h.dst_port);
	assert_true(back.len == h.len && back.type == h.type && back.op == h.op);
	assert_true(back.flags == h.flags && back.buf_alloc == h.buf_alloc &&
		    back.fwd_cnt == h.fwd_cnt);
}

static void test_hdr_check(void **state)
{
	struct vsock_hdr ok = {.src_cid = 3, .dst_cid = 2, .type = 1, .op = VSOCK_OP_RW, .len = 10};
	assert_null(vsock_hdr_check(&ok, 3, 10));
	assert_null(vsock_hdr_check(&ok, 3, 4096)); /* a longer chain is fine */

	struct vsock_hdr h = ok;
	h.src_cid = 4;
	assert_string_equal(vsock_hdr_check(&h, 3, 10), "source CID is not the guest's");
	h = ok;
	h.dst_cid = 1;
	assert_non_null(vsock_hdr_check(&h, 3, 10));
	h = ok;
	h.type = VSOCK_TYPE_SEQPACKET;
	assert_non_null(vsock_hdr_check(&h, 3, 10));
	h = ok;
	h.op = 0;
	assert_string_equal(vsock_hdr_check(&h, 3, 10), "unknown op");
	h.op = 8;
	assert_string_equal(vsock_hdr_check(&h, 3, 10), "unknown op");
	h = ok;
	h.len = 11; /* past the chain */
	assert_string_equal(vsock_hdr_check(&h, 3, 10), "len runs past the buffer");
	h.len = UINT32_MAX;
	assert_non_null(vsock_hdr_check(&h, 3, UINT32_MAX - 44));
	h.len = VSOCK_MAX_PAYLOAD + 1;
	assert_non_null(vsock_hdr_check(&h, 3, 1 << 20));
	h = ok;
	h.op = VSOCK_OP_REQUEST; /* control packets carry no payload */
	assert_string_equal(vsock_hdr_check(&h, 3, 10), "payload on a control packet");
	h.len = 0;
	assert_null(vsock_hdr_check(&h, 3, 0));
}

/* ---- CONNECT line ---- */

static int parse(const char *s, uint32_t *port)
{
	return vsock_parse_connect(s, strlen(s), port);
}

static void test_connect_line(void **state)
{
	uint32_t port = 0;
	assert_int_equal(parse("CONNECT 52\n", &port), 1);
	assert_int_equal(port, 52);
	assert_int_equal(parse("CONNECT 4294967295\n", &port), 1);
	assert_int_equal(port, UINT32_MAX);
	assert_int_equal(parse("CONNECT 0\r\n", &port), 1);
	assert_int_equal(port, 0);
	assert_int_equal(parse("CONNECT   7\n", &port), 1);
	assert_int_equal(port, 7);

	/* every prefix of a good line asks for more */
	const char *good = "CONNECT 5000\r\n";
	for (size_t n = 0; n < strlen(good); n++)
		assert_int_equal(vsock_parse_connect(good, n, &port), 0);

	static const char *const bad[] = {
	    "connect 5\n",
	    "CONNECTX 5\n",
	    "CONNECT\n",
	    "CONNECT \n",
	    "CONNECT -1\n",
	    "CONNECT +1\n",
	    "CONNECT 4294967296\n",
	    "CONNECT 12345678901\n",
	    "CONNECT 5x\n",
	    "CONNECT 5 \n",
	    "CONNECT 5\r\r\n",
	    "CONNECT 5\n\n",
	    "\n",
	    "OK 5\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], &port);
		if (r != -EINVAL)
			fail_msg("\"%s\": %d", bad[i], r);
	}
	/* a line that never ends is refused at 32 bytes */
	assert_int_equal(parse("CONNECT 000000000000000000000000", &port), -EINVAL);
	assert_int_equal(parse("CONNECT                         ", &port), -EINVAL);
}

/* ---- credit (§5.10.6.3) ---- */

static void test_credit(void **state)
{
	assert_int_equal(vsock_peer_credit(65536, 0, 0), 65536);
	assert_int_equal(vsock_peer_credit(65536, 0, 1000), 64536);
	assert_int_equal(vsock_peer_credit(65536, 1000, 1000), 65536);
	assert_int_equal(vsock_peer_credit(65536, 0, 65536), 0);
	/* counters wrap at 2^32 */
	assert_int_equal(vsock_peer_credit(65536, 0xfffffff0u, 0x10), 65536 - 0x20);
	assert_int_equal(vsock_peer_credit(65536, 0xffff0000u, 0), 0);
	/* the peer shrank its buffer below what is in flight */
	assert_int_equal(vsock_peer_credit(100, 0, 200), 0);
	/* a fwd_cnt ahead of what we sent is a lie: no credit */
	assert_int_equal(vsock_peer_credit(65536, 10, 5), 0);
	assert_int_equal(vsock_peer_credit(0, 0, 0), 0);
}

/* ---- the device, no KVM ---- */

#define QNUM 16
#define BUF_GPA 0x200000ULL
#define BUF_SIZE (44 + 4096)

static struct gmem mem;
static struct evloop ev;
static struct virtio_dev dev;
static char dir[64], uds[80];
static uint16_t avail_idx[3], used_seen[3];

/* The device's counter `name`, as the metrics report it. */
static uint64_t counter(const char *name)
{
	return vf_counter(&dev, name);
}

static uint64_t qbase(unsigned q)
{
	return 0x10000ULL * (q + 1);
}

static uint8_t *at(uint64_t gpa)
{
	return gmem_ptr(&mem, gpa, 1);
}

/* Offer one buffer (one descriptor) on queue q. */
static void offer(unsigned q, uint64_t gpa, uint32_t len, bool writable)
{
	uint16_t head = avail_idx[q] % QNUM;
	uint8_t *d = at(qbase(q) + 16ULL * head);
	memcpy(d, &gpa, 8);
	memcpy(d + 8, &len, 4);
	uint16_t flags = writable ? 2 : 0, next = 0;
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
	uint8_t *avail = at(qbase(q) + 0x1000);
	memcpy(avail + 4 + 2 * head, &head, 2);
	avail_idx[q]++;
	memcpy(avail + 2, &avail_idx[q], 2);
}

static uint64_t rx_buf(unsigned slot)
{
	return BUF_GPA + (uint64_t)slot * 0x2000;
}

static void post_rx(unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		offer(0, rx_buf(avail_idx[0] % QNUM), BUF_SIZE, true);
	dev.ops->notify(&dev, 0);
}

/* Send one packet from the guest (header, then payload). */
static void guest_send(uint16_t op, uint32_t src_port, uint32_t dst_port, uint32_t flags,
		       const void *data, uint32_t len)
{
	static unsigned n;
	uint64_t gpa = 0x1000000ULL + (uint64_t)(n++ % QNUM) * 0x2000;
	struct vsock_hdr h = {.src_cid = 3,
			      .dst_cid = 2,
			      .src_port = src_port,
			      .dst_port = dst_port,
			      .len = len,
			      .type = 1,
			      .op = op,
			      .flags = flags,
			      .buf_alloc = 65536};
	vsock_hdr_encode(&h, at(gpa));
	if (len)
		memcpy(at(gpa + 44), data, len);
	offer(1, gpa, 44 + len, false);
	dev.ops->notify(&dev, 1);
}

/* The next packet the device put on the rx queue; false if none. */
static bool guest_recv(struct vsock_hdr *h, char *data, size_t size)
{
	const uint8_t *used = at(qbase(0) + 0x2000);
	uint16_t idx;
	memcpy(&idx, used + 2, 2);
	if (idx == used_seen[0])
		return false;
	uint32_t id, len;
	memcpy(&id, used + 4 + 8 * (used_seen[0] % QNUM), 4);
	memcpy(&len, used + 8 + 8 * (used_seen[0] % QNUM), 4);
	used_seen[0]++;
	uint64_t gpa;
	memcpy(&gpa, at(qbase(0) + 16ULL * id), 8);
	vsock_hdr_decode(at(gpa), h);
	assert_int_equal(len, 44 + h->len);
	if (data) {
		assert_true(h->len < size);
		memcpy(data, at(gpa + 44), h->len);
		data[h->len] = 0;
	}
	return true;
}

/* Run the vmm loop's callbacks for what is ready within ms. */
static void pump(int ms)
{
	struct epoll_event e[16];
	int n = epoll_wait(ev.epfd, e, 16, ms);
	for (int i = 0; i < n; i++) {
		struct ev_source *src = e[i].data.ptr;
		src->fn(src, e[i].events);
	}
}

static int dev_setup(void **state)
{
	char err[160];
	snprintf(dir, sizeof(dir), "/tmp/ember-vsock-XXXXXX");
	if (!mkdtemp(dir) || gmem_init(&mem, 64ULL << 20) || ev_init(&ev))
		return -1;
	snprintf(uds, sizeof(uds), "%s/v.sock", dir);
	struct virtio_impl m;
	if (vsock_create(&(struct vsock_params){3, uds}, &m, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	if (virtio_dev_init(&dev, m.ops, m.priv, m.name, m.features, 0xd0000000ULL, 5, -1, &mem,
			    &ev, err, sizeof(err)))
		return -1;
	for (unsigned q = 0; q < 3; q++) {
		dev.vq[q].s = (struct vq_state){.desc = qbase(q),
						.avail = qbase(q) + 0x1000,
						.used = qbase(q) + 0x2000,
						.num = QNUM};
		if (vq_enable(&dev.vq[q], &mem, err, sizeof(err)))
			return -1;
		dev.vq[q].s.ready = 1;
	}
	memset(avail_idx, 0, sizeof(avail_idx));
	memset(used_seen, 0, sizeof(used_seen));
	dev.st.status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	return dev.ops->activate(&dev);
}

static int dev_teardown(void **state)
{
	virtio_dev_fini(&dev);
	dev.ops->destroy(&dev);
	ev_fini(&ev);
	gmem_free(&mem);
	rmdir(dir);
	return 0;
}

static void test_config_space(void **state)
{
	uint8_t b[8] = {0};
	dev.ops->config_read(&dev, 0, b, 8);
	assert_int_equal(b[0], 3);
	dev.ops->config_read(&dev, 8, b, 4); /* past the config: untouched */
}

static void test_refused_and_strays(void **state)
{
	struct vsock_hdr h;
	post_rx(4);
	guest_send(VSOCK_OP_REQUEST, 50000, 4321, 0, NULL, 0); /* nobody on <uds>_4321 */
	assert_true(guest_recv(&h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RST);
	assert_int_equal(h.src_cid, 2);
	assert_int_equal(h.dst_cid, 3);
	assert_int_equal(h.src_port, 4321);
	assert_int_equal(h.dst_port, 50000);
	/* data on no connection: RST; an RST on none: nothing */
	guest_send(VSOCK_OP_RW, 50001, 1, 0, "x", 1);
	assert_true(guest_recv(&h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RST);
	guest_send(VSOCK_OP_RST, 50001, 1, 0, NULL, 0);
	assert_false(guest_recv(&h, NULL, 0));
	assert_false(dev.broken);

	assert_int_equal(counter("conns_refused"), 1);
	assert_int_equal(counter("conns_added"), 0);
	assert_int_equal(counter("tx_packets_count"), 3);
	assert_int_equal(counter("rx_packets_count"), 2);
	assert_int_equal(counter("tx_queue_event_count"), 3);
}

static void test_guest_connects(void **state)
{
	char path[96], buf[64];
	struct vsock_hdr h;
	snprintf(path, sizeof(path), "%s_1234", uds);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);

	/* No rx buffers yet: the RESPONSE waits for them. */
	guest_send(VSOCK_OP_REQUEST, 50000, 1234, 0, NULL, 0);
	assert_false(guest_recv(&h, NULL, 0));
	post_rx(8);
	assert_true(guest_recv(&h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RESPONSE);
	assert_int_equal(h.buf_alloc, VSOCK_BUF_ALLOC);
	int c = accept(l, NULL, NULL);
	assert_true(c >= 0);

	guest_send(VSOCK_OP_RW, 50000, 1234, 0, "ping", 4);
	assert_int_equal(read(c, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "ping", 4);

	assert_int_equal(write(c, "pong", 4), 4);
	pump(1000);
	assert_true(guest_recv(&h, buf, sizeof(buf)));
	assert_int_equal(h.op, VSOCK_OP_RW);
	assert_string_equal(buf, "pong");

	/* More than the credit we advertised: the connection is reset. */
	static char big[VSOCK_MAX_PAYLOAD];
	bool rst = false;
	for (unsigned i = 0; i < 40 && !rst; i++) {
		guest_send(VSOCK_OP_RW, 50000, 1234, 0, big, sizeof(big));
		post_rx(1);
		while (guest_recv(&h, NULL, 0))
			rst |= h.op == VSOCK_OP_RST;
	}
	assert_true(rst);
	assert_false(dev.broken);

	/* The counters saw it: one connection made and reset by us, the
	 * bytes both ways, the overrun. */
	assert_int_equal(counter("conns_added"), 1);
	assert_int_equal(counter("conns_removed"), 1);
	assert_int_equal(counter("guest_errors"), 1);
	assert_true(counter("tx_bytes_count") >= 4 + sizeof(big));
	assert_int_equal(counter("rx_bytes_count"), 4);
	assert_true(counter("rx_packets_count") >= 3); /* RESPONSE, "pong", RST */
	close(c);
	close(l);
	unlink(path);
}

static void test_host_connects(void **state)
{
	char buf[64];
	struct vsock_hdr h;
	post_rx(8);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", uds);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(s, "CONNECT 5000\n", 13), 13);
	for (int i = 0; i < 4 && !guest_recv(&h, NULL, 0); i++)
		pump(200);
	assert_int_equal(h.op, VSOCK_OP_REQUEST);
	assert_int_equal(h.dst_port, 5000);
	assert_true(h.src_port >= VSOCK_LOCAL_PORT_BASE);
	guest_send(VSOCK_OP_RESPONSE, 5000, h.src_port, 0, NULL, 0);
	ssize_t n = read(s, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	char want[32];
	snprintf(want, sizeof(want), "OK %u\n", h.src_port);
	assert_string_equal(buf, want);
	uint32_t local = h.src_port;

	/* The guest closes: the host sees EOF, the guest gets RST. */
	guest_send(VSOCK_OP_SHUTDOWN, 5000, local, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, NULL,
		   0);
	assert_int_equal(read(s, buf, sizeof(buf)), 0);
	assert_true(guest_recv(&h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RST);
	close(s);

	/* A bad line: closed without an answer. */
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(s, "HELLO\n", 6), 6);
	pump(200);
	pump(0);
	n = read(s, buf, sizeof(buf));
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	close(s);
}

static void test_broken_header(void **state)
{
	/* A tx buffer shorter than a header breaks the queue. */
	offer(1, 0x1000000ULL, 20, false);
	dev.ops->notify(&dev, 1);
	assert_true(dev.broken);
	dev.ops->reset(&dev);
}

/* ---- snapshots ---- */

#define EV_GPA 0x3000000ULL

/* How many buffers the device has used on the event queue. */
static uint16_t ev_used(void)
{
	uint16_t idx;
	memcpy(&idx, at(qbase(2) + 0x2000 + 2), 2);
	return idx;
}

static void offer_event_buf(uint32_t len)
{
	memset(at(EV_GPA), 0xff, 8);
	offer(2, EV_GPA, len, true);
}

/* The TRANSPORT_RESET event was the last used buffer: id 0, 4 bytes. */
static void assert_reset_event(void)
{
	const uint8_t *used = at(qbase(2) + 0x2000);
	uint32_t len, id;
	memcpy(&len, used + 8 + 8 * ((ev_used() - 1) % QNUM), 4);
	assert_int_equal(len, VSOCK_EVENT_LEN);
	memcpy(&id, at(EV_GPA), 4);
	assert_int_equal(id, VSOCK_EVENT_TRANSPORT_RESET);
	assert_int_equal(at(EV_GPA)[4], 0xff); /* nothing past the event */
}

static void test_save_restore(void **state)
{
	uint8_t rec[64], again[64];
	int n = dev.ops->save(&dev, rec, sizeof(rec));
	assert_int_equal(n, sizeof(struct vsock_state));
	const struct vsock_state want = {.guest_cid = 3};
	assert_memory_equal(rec, &want, sizeof(want));
	assert_int_equal(dev.ops->save(&dev, rec, 4), -ENOSPC);

	/* Not this device's record: refused, nothing sent. */
	struct vsock_state other = {.guest_cid = 4};
	assert_int_equal(dev.ops->restore(&dev, &other, sizeof(other)), -EINVAL);
	assert_int_equal(dev.ops->restore(&dev, rec, (size_t)n - 1), -EINVAL);
	offer_event_buf(VSOCK_EVENT_LEN);
	dev.ops->notify(&dev, 2);
	assert_int_equal(ev_used(), 0);

	/* A buffer is there: the event goes at once, once. */
	assert_int_equal(dev.ops->restore(&dev, rec, (size_t)n), 0);
	assert_int_equal(ev_used(), 1);
	assert_reset_event();
	assert_int_equal(counter("transport_resets"), 1);
	offer_event_buf(VSOCK_EVENT_LEN);
	dev.ops->notify(&dev, 2);
	assert_int_equal(ev_used(), 1);

	/* save -> restore -> save: the same bytes. */
	assert_int_equal(dev.ops->save(&dev, again, sizeof(again)), n);
	assert_memory_equal(rec, again, (size_t)n);
	assert_false(dev.broken);
}

static void test_restore_event_waits(void **state)
{
	uint8_t rec[sizeof(struct vsock_state)];
	assert_int_equal(dev.ops->save(&dev, rec, sizeof(rec)), sizeof(rec));

	/* No event buffer yet: owed until the driver posts one. */
	assert_int_equal(dev.ops->restore(&dev, rec, sizeof(rec)), 0);
	assert_int_equal(ev_used(), 0);
	offer_event_buf(64);
	dev.ops->notify(&dev, 2);
	assert_int_equal(ev_used(), 1);
	assert_reset_event();

	/* A driver reset owes nothing more. */
	assert_int_equal(dev.ops->restore(&dev, rec, sizeof(rec)), 0);
	dev.ops->reset(&dev);
	offer_event_buf(VSOCK_EVENT_LEN);
	dev.ops->notify(&dev, 2);
	assert_int_equal(ev_used(), 1);
	assert_int_equal(counter("transport_resets"), 1);
	assert_false(dev.broken);
}

static void test_restore_bad_event_buffer(void **state)
{
	uint8_t rec[sizeof(struct vsock_state)];
	assert_int_equal(dev.ops->save(&dev, rec, sizeof(rec)), sizeof(rec));
	offer(2, EV_GPA, 2, true); /* too short for a le32 */
	assert_int_equal(dev.ops->restore(&dev, rec, sizeof(rec)), 0);
	assert_true(dev.broken);
	assert_int_equal(counter("ev_queue_event_fails"), 1);
	assert_int_equal(counter("transport_resets"), 0);
	dev.ops->reset(&dev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hdr_layout),
	    cmocka_unit_test(test_hdr_check),
	    cmocka_unit_test(test_connect_line),
	    cmocka_unit_test(test_credit),
	    cmocka_unit_test_setup_teardown(test_config_space, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_refused_and_strays, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_guest_connects, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_host_connects, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_broken_header, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_save_restore, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_restore_event_waits, dev_setup, dev_teardown),
	    cmocka_unit_test_setup_teardown(test_restore_bad_event_buffer, dev_setup, dev_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
