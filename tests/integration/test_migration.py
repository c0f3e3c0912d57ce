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
