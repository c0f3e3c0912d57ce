"""Hostile API clients (docs/api.md, "Limits"): slowloris connections
that trickle a request byte by byte, a full connection table, a client
that never reads its replies, and reads while the vmm thread writes a
large snapshot.  Whatever they do, a well-behaved client is answered and
ember keeps running.

The assertions are about outcomes, not speed: every wait has a generous
bound (these machines are shared), and the deadlines ember enforces are
set short (--api-request-timeout) only so that the tests end soon."""
import os
import select
import socket
import threading
import time


from conftest import guest, needs_kvm
from test_api import Ember

SLOW = 300  # more than the 256 connections ember keeps
BUSY_SNAPSHOT = "a snapshot is being written"


def connect(path):
    """A blocking connect: it waits for room in the listen backlog (256)
    when the test connects faster than ember accepts."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(30)
    return s


class Slow:
    """A client that starts a request and never finishes it: half a
    header block, the headers and half of the body they announce, or
    nothing at all."""

    def __init__(self, path, i):
        self.s = connect(path)
        self.kind = i % 3
        self.body = i % 3 == 1
        self.said = b""  # what ember sent before closing
        if i % 3 == 0:
            self.s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        elif self.body:
            self.s.sendall(b"PUT /machine-config HTTP/1.1\r\nHost: x\r\n"
                           b'Content-Length: 4000\r\n\r\n{"vcpu_count": 1, ')

    def trickle(self):
        """One more byte: each would have reset an idle-only timer."""
        if self.kind == 2:
            return  # the silent kind stays silent
        try:
            self.s.send(b" " if self.body else b"a", socket.MSG_DONTWAIT)
        except OSError:
            pass  # cut already, or its buffer is full

    def closed(self, timeout):
        """Whether ember closed it within timeout (what it said first is
        kept in self.said)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if not select.select([self.s], [], [], max(left, 0))[0]:
                    return False
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.said += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        self.s.close()


def open_slow(path, n, start=0):
    return [Slow(path, i) for i in range(start, start + n)]


def get(path, url="/", timeout=30):
    """One GET on a fresh connection: (status, body bytes)."""
    s = connect(path)
    s.settimeout(timeout)
    try:
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data
    return int(head.split()[1]), body


class Trickler:
    """A thread that sends one more byte on every slow connection each
    period."""

    def __init__(self, slow, period=0.3):
        self.slow, self.period = slow, period
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.wait(self.period):
            for c in self.slow:
                c.trickle()

    def close(self):
        self.stop.set()
        self.t.join(10)


def test_full_table_gives_the_slowest_slot_to_a_new_client(tmp_path):
    """256 requests that never finish hold every slot (their deadline is
    far): a new client still gets its answer, and the slot it takes is the
    one whose request has been on its way longest, which is told why."""
    api = Ember(tmp_path, "--api-request-timeout", "120", "--api-idle-timeout", "120")
    socks = []
    try:
        socks = open_slow(api.sock, 256)
        st, body = get(api.sock, "/")
        assert st == 200 and b'"Not started"' in body
        assert socks[0].closed(30)
        assert socks[0].said.startswith(b"HTTP/1.1 503"), socks[0].said
        assert b"gave its place to a new client" in socks[0].said
        # the others keep their slots (nothing said, nothing closed)
        assert not any(c.closed(0) for c in socks[1:])
        # full again: the next oldest goes
        socks += open_slow(api.sock, 1, start=256)
        st, _ = get(api.sock, "/machine-config")
        assert st == 200
        assert socks[1].closed(30) and socks[1].said.startswith(b"HTTP/1.1 503")
        assert not any(c.closed(0) for c in socks[2:])
        assert api.p.poll() is None
    finally:
        for c in socks:
            c.close()
        api.kill()


def test_slowloris_cut_at_the_request_deadline(tmp_path):
    """300 clients trickle their requests a byte at a time (headers, half
    a body, or nothing at all): a well-behaved client is answered all the
    while, and each slow one is cut (408, or 503 when a newer client took
    its slot) once its request deadline has passed."""
    api = Ember(tmp_path, "--api-request-timeout", "2")
    socks = []
    trickle = None
    try:
        socks = open_slow(api.sock, SLOW)
        trickle = Trickler(socks)
        for _ in range(5):
            st, body = get(api.sock, "/")
            assert st == 200 and b'"Not started"' in body
        still_open = [c for c in socks if not c.closed(60)]
        assert not still_open, f"{len(still_open)} slow clients never cut"
        for c in socks:
            assert c.said == b"" or c.said.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")), \
                c.said
        assert sum(c.said.startswith(b"HTTP/1.1 408") for c in socks) > 0
        assert b"did not arrive in full within 2000 ms" in b"".join(c.said for c in socks)
        st, _ = get(api.sock, "/")
        assert st == 200 and api.p.poll() is None
    finally:
        if trickle:
            trickle.close()
        for c in socks:
            c.close()
        api.kill()


def test_client_that_never_reads_does_not_block_others(tmp_path):
    """A client pipelines thousands of requests and reads none of the
    megabytes of replies: ember queues one reply at a time, serves
    everyone else meanwhile, and closes it when its reply is not taken
    within the deadline."""
    api = Ember(tmp_path, "--api-request-timeout", "2")
    hog = connect(api.sock)
    try:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        n = 3000
        req = b"GET /vm/config HTTP/1.1\r\nHost: x\r\n\r\n"
        hog.sendall(req * n)  # ember reads it all in time: one reply at a time
        for _ in range(5):
            st, body = get(api.sock, "/vm/config")
            assert st == 200 and b'"machine-config"' in body
        api.ok("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64})
        # cut: ember closed its end (seen without reading a byte)
        p = select.poll()
        p.register(hog, select.POLLRDHUP)
        assert p.poll(60_000), "the client that does not read was never cut"
        got = b""
        hog.settimeout(30)
        try:
            while chunk := hog.recv(1 << 20):
                got += chunk
        except ConnectionResetError:
            pass
        assert 0 < got.count(b"HTTP/1.1 200") < n
        assert api.curl("GET", "/machine-config")[1]["vcpu_count"] == 2
        assert api.p.poll() is None
    finally:
        hog.close()
        api.kill()


def read_reply(s, timeout):
    """One reply (headers and Content-Length bytes) from s."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    return int(head.split()[1]), body


@needs_kvm
def test_reads_answered_while_a_snapshot_is_written(tmp_path):
    """PUT /snapshot/create of a guest with 512 MiB of written memory
    keeps the vmm thread busy for a while: GET /, /machine-config and
    /ember/status are answered before the PUT's reply, with the right
    state; a change meanwhile gets an immediate "busy" 400; slowloris
    clients filling the table then do not cut the PUT's connection."""
    fill = 512
    api = Ember(tmp_path)
    socks = []
    try:
        api.ok("PUT", "/boot-source", {"kernel_image_path": guest("counter"),
                                       "boot_args": f"console=ttyS0 fill={fill}"})
        api.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": fill + 256})
        api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
        api.wait_output("count 1", timeout=120)
        api.ok("PATCH", "/vm", {"state": "Paused"})

        seen = False
        for attempt in range(3):  # a machine fast enough to finish first: again
            state = tmp_path / f"vm{attempt}.state"
            mem = tmp_path / f"vm{attempt}.mem"
            body = (f'{{"snapshot_path": "{state}", "mem_file_path": "{mem}"}}').encode()
            put = connect(api.sock)
            put.sendall(b"PUT /snapshot/create HTTP/1.1\r\nHost: x\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
            # the job has begun once GET /ember/status names it
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                st, js = api.curl("GET", "/ember/status")
                assert st == 200
                if js.get("job") == "snapshot create":
                    break
                if select.select([put], [], [], 0)[0]:
                    break  # done already
            if js.get("job") != "snapshot create":
                assert read_reply(put, 120)[0] == 204
                put.close()
                continue
            st, info = api.curl("GET", "/")
            st2, mc = api.curl("GET", "/machine-config")
            busy = api.fault("PATCH", "/vm", {"state": "Paused"})
            busy2 = api.fault("PUT", "/snapshot/create",
                              {"snapshot_path": str(tmp_path / "x"),
                               "mem_file_path": str(tmp_path / "y")})
            if select.select([put], [], [], 0)[0]:
                assert read_reply(put, 120)[0] == 204
                put.close()
                continue  # the PUT finished during the reads: inconclusive
            seen = True
            assert (st, info["state"]) == (200, "Paused")
            assert (st2, mc["mem_size_mib"], mc["vcpu_count"]) == (200, fill + 256, 1)
            assert BUSY_SNAPSHOT in busy and BUSY_SNAPSHOT in busy2
            # a full table while the reply is pending: not the PUT's slot
            socks = open_slow(api.sock, 257)
            st, body = get(api.sock, "/")
            assert st == 200 and b'"Paused"' in body
            status, reply = read_reply(put, 300)
            assert status == 204, reply
            put.close()
            break
        assert seen, "every snapshot finished before the reads; make fill larger"
        assert os.path.getsize(mem) > 0 and os.path.getsize(state) > 0
        assert not os.path.exists(tmp_path / "x")
        st, js = api.curl("GET", "/ember/status")
        assert "job" not in js and js["state"] == "Paused"
        api.ok("PATCH", "/vm", {"state": "Resumed"})
        assert api.curl("GET", "/")[1]["state"] == "Running"
        assert api.p.poll() is None
    finally:
        for c in socks:
            c.close()
        api.kill()


def test_named_pipe_as_a_file_cannot_hold_the_vmm_thread(tmp_path):
    """A FIFO given as a kernel or drive has no writer: opening it to check
    it must not wait for one (the vmm thread, and the API behind it, would
    hang); it is refused as not a regular file."""
    api = Ember(tmp_path)
    try:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        assert "is a FIFO, not a regular file" in api.fault(
            "PUT", "/boot-source", {"kernel_image_path": str(fifo)})
        assert "is a FIFO, not a regular file" in api.fault(
            "PUT", "/drives/d", {"drive_id": "d", "path_on_host": str(fifo),
                                 "is_root_device": False, "is_read_only": True})
        assert api.curl("GET", "/")[1]["state"] == "Not started"
    finally:
        api.kill()
