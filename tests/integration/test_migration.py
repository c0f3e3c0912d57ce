"""Live migration (docs/migration.md): two embers on this machine joined by
a socketpair the test makes, each end passed with SCM_RIGHTS on the API
socket; or, to stop, corrupt, cut or kill at a chosen record, a relay in
the test between two socketpairs that parses the records:
{u32 type, u32 len, u64 a, u64 b, u32 crc, u32 0} + len bytes.

No timing is asserted anywhere: waits are bounded (tens of seconds) and
what is checked is where each end ends up."""
import json
import os
import re
import signal
import socket
import struct
import threading
import time
import zlib

import pytest

from conftest import guest, needs_kvm
from test_api import Ember
from test_snapshot_stream import raw

pytestmark = needs_kvm

COUNT = 400
SPIN = 20000000
HDR = 32


def counter(tmp_path, name="src", count=COUNT, spin=SPIN, extra=()):
    return Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline",
                                     f"count={count} spin={spin}", "--timeout", "120"]
                 + list(extra), name=name)


def mig(e):
    st, js = raw(e.sock, "GET", "/migration")
    assert st == 200, js
    return js


def state(e):
    if e.p.poll() is not None:
        return "exited"
    try:
        st, js = raw(e.sock, "GET", "/")
    except OSError:
        return "exited" if e.p.poll() is not None else "unreachable"
    return js["state"]


def wait_for(pred, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def phase_in(e, phases):
    def f():
        if e.p.poll() is not None:
            return None
        try:
            js = mig(e)
        except OSError:
            return None
        return js if js["phase"] in phases else None
    return f


def start(src, dst, send_body=None, recv_body=None, relay=None):
    """Hand each end of a socketpair (or of the relay's two) to the two
    embers: receive first, then send.  Returns nothing; the fds are
    closed here (the embers hold their copies)."""
    if relay:
        a, b = relay.src_end, relay.dst_end
    else:
        a, b = socket.socketpair()
    try:
        st, js = raw(dst.sock, "PUT", "/migration/receive",
                     recv_body if recv_body is not None else {"use_saved_paths": True},
                     fds=[b.fileno()])
        assert st == 204, js
        st, js = raw(src.sock, "PUT", "/migration/send",
                     send_body if send_body is not None else {}, fds=[a.fileno()])
        assert st == 204, js
    finally:
        a.close()
        b.close()


def counts(text):
    return [int(n) for n in re.findall(r"count (\d+)\n", text)]


def counts_on(before, after, count=COUNT):
    nums = counts(before + after)
    bad = [(i + 1, n) for i, n in enumerate(nums) if n != i + 1]
    assert not bad, f"first out of order (want, got): {bad[:3]}"
    assert nums[-1:] == [count], (before[-100:], after[-100:])


def test_counter_moves(tmp_path):
    src = counter(tmp_path)
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 20\n", timeout=30)
        start(src, dst)
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
        assert js["phase"] == "running", (js, dst.stderr())
        assert src.wait(timeout=30) == 0, src.stderr()
        assert "migration completed" in src.stderr()
        dst.wait(timeout=120)
        counts_on(src.stdout(), dst.stdout())
    finally:
        src.kill()
        dst.kill()


# ---- a relay that parses the records and can stop, corrupt, cut or kill ----

def name(t):
    return struct.pack("<I", t).decode("latin1")


class Relay:
    """Bytes between two socketpairs, record by record.  action(dir, n,
    hdr, payload) is called before record n (counted per direction: "s"
    source->target, "t" target->source) is passed on; it returns the
    record's bytes to send (possibly changed), or None to cut the
    connection there (both ways).  Records seen: self.seen."""

    def __init__(self, action=None):
        self.src_end, s_in = socket.socketpair()
        self.dst_end, d_in = socket.socketpair()
        self.action = action or (lambda *a: a[2] + a[3])
        self.seen = []
        self.lock = threading.Lock()
        self.socks = (s_in, d_in)
        self.cut = False
        self.threads = [threading.Thread(target=self.pump, args=("s", s_in, d_in), daemon=True),
                        threading.Thread(target=self.pump, args=("t", d_in, s_in), daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def read(sock, n):
        buf = b""
        while len(buf) < n:
            c = sock.recv(n - len(buf))
            if not c:
                return None
            buf += c
        return buf

    def close(self):
        with self.lock:
            self.cut = True
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def pump(self, d, a, b):
        n = 0
        try:
            while True:
                hdr = self.read(a, HDR)
                if hdr is None:
                    break
                t, ln = struct.unpack_from("<II", hdr)
                payload = self.read(a, ln) if ln else b""
                if payload is None:
                    break
                with self.lock:
                    self.seen.append((d, name(t)))
                out = self.action(d, n, hdr, payload)
                n += 1
                if out is None:
                    break
                b.sendall(out)
        except OSError:
            pass
        self.close()


def record(t, a=0, b=0, payload=b""):
    h = struct.pack("<4sIQQII", t.encode(), len(payload), a, b, 0, 0)
    crc = zlib.crc32(payload, zlib.crc32(h)) & 0xFFFFFFFF
    return h[:24] + struct.pack("<I", crc) + h[28:] + payload


def at(dirn, rec, then, nth=0):
    """An action: at the nth record of type rec going dirn, do then(hdr,
    payload) -> bytes or None; pass everything else."""
    count = {"n": 0}

    def act(d, n, hdr, payload):
        if d == dirn and name(struct.unpack_from("<I", hdr)[0]) == rec:
            count["n"] += 1
            if count["n"] == nth + 1:
                return then(hdr, payload)
        return hdr + payload
    return act


def ends_state(src, dst):
    """Both ends as the test sees them: (source, target) each one of
    Running, Paused, exited..."""
    return state(src), state(dst)


def at_most_one_runs(src, dst):
    s, t = ends_state(src, dst)
    assert not (s == "Running" and t == "Running"), (s, t)
    return s, t


def source_runs_on(src, dst, err_part=None):
    """The migration failed before the hand-over: the source is back to
    running (phase failed or cancelled), the target gone (non-zero)."""
    js = wait_for(phase_in(src, {"failed", "cancelled"}), "the source to fail")
    if err_part:
        assert err_part in (js["error"] or ""), js
    assert dst.wait(timeout=30) != 0, dst.stderr()
    assert state(src) == "Running", js
    return js


def test_cancel_mid_precopy(tmp_path):
    src = counter(tmp_path)
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 5\n", timeout=30)
        start(src, dst, send_body={"max_bandwidth": 100000})
        wait_for(phase_in(src, {"precopy"}), "precopy")
        assert "a migration is in progress" in src.fault("PATCH", "/vm", {"state": "Paused"})
        src.ok("PUT", "/migration/cancel", {})
        js = source_runs_on(src, dst, "cancelled")
        assert js["phase"] == "cancelled"
        n = len(counts(src.stdout()))
        wait_for(lambda: len(counts(src.stdout())) > n + 2, "the source to count on")
        assert "migration failed" in dst.stderr()
    finally:
        src.kill()
        dst.kill()


def test_wrong_version_refused(tmp_path):
    def v2(hdr, payload):
        return record("MIGR", 2, 0, payload)
    src, dst = counter(tmp_path), Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 2\n", timeout=30)
        start(src, dst, relay=Relay(at("s", "MIGR", v2)))
        js = source_runs_on(src, dst, "version 2, this ember speaks version 1")
        assert "the target refused" in js["error"]
        assert "version 2, this ember speaks version 1" in dst.stderr()
    finally:
        src.kill()
        dst.kill()


def test_corrupt_record_refused(tmp_path):
    def flip(hdr, payload):
        p = bytearray(payload)
        p[100] ^= 0x40
        return hdr + bytes(p)
    src, dst = counter(tmp_path), Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 2\n", timeout=30)
        start(src, dst, relay=Relay(at("s", "DATA", flip, nth=1)))
        source_runs_on(src, dst)
        err = dst.stderr()
        assert re.search(r"stream: byte \d+: record DATA \(a 0x[0-9a-f]+, b 0x[0-9a-f]+, "
                         r"\d+ bytes\): CRC mismatch", err), err
    finally:
        src.kill()
        dst.kill()


def test_truncated_stream_refused(tmp_path):
    src, dst = counter(tmp_path), Ember(tmp_path, name="dst")
    relay = None

    def half(hdr, payload):
        relay.dst_send_half = True
        return None  # cut: the target saw the record's header only...

    def act(d, n, hdr, payload):
        if d == "s" and name(struct.unpack_from("<I", hdr)[0]) == "DATA" and n > 3:
            # half a record, then the end
            relay.socks[1].sendall((hdr + payload)[:HDR + len(payload) // 2])
            return None
        return hdr + payload
    try:
        src.wait_output("count 2\n", timeout=30)
        relay = Relay(act)
        start(src, dst, relay=relay)
        source_runs_on(src, dst)
        err = dst.stderr()
        assert re.search(r"stream: byte \d+: truncated in record DATA begun at byte \d+", err), err
    finally:
        src.kill()
        dst.kill()


def test_setup_nack(tmp_path):
    """A receive whose overrides do not fit the VM: the target's setup
    check refuses before any memory moves (NACK), the source runs on."""
    src, dst = counter(tmp_path), Ember(tmp_path, name="dst")
    relay = Relay()
    try:
        src.wait_output("count 2\n", timeout=30)
        start(src, dst, recv_body={"drive_overrides": [{"drive_id": "nope",
                                                        "path_on_host": "/tmp/x"}]},
              relay=relay)
        js = source_runs_on(src, dst, "the target refused")
        assert 'the snapshot has no drive "nope"' in js["error"], js
        assert ("s", "DATA") not in relay.seen
    finally:
        src.kill()
        dst.kill()
