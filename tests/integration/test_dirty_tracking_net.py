"""Diff snapshots carry what virtio-net's rx path writes into guest RAM:
the frame in an rx buffer and the used ring entry that names it (ember
writes both; KVM's dirty log sees neither).

The virtio test guest's `netloop` sends frame r each round and waits for
its echo (tests/tools/tap_echo.py), first printing the payloads of the rx
buffers that the used entries of the last two echoes name, read from guest
RAM: frames r-1 and r-2 (a snapshot taken while echo r is awaited gets r
live after the restore, r-1 only from the snapshot).  The rx buffers fill
pages the guest never writes.
Base snapshot, more rounds, diff snapshot, merge, load with the same tap
and the echo still running: the restored guest must find the last echo
where the device put it.  Without ember's own dirty bitmap the buffer
comes back holding what it held at the base.
"""
import re
import subprocess
import sys
import time

import pytest

from conftest import ETHERTYPE, TAP_ECHO, guest, needs_kvm, run
from test_api import Ember

pytestmark = needs_kvm


@pytest.fixture
def long_echo(tap):
    """conftest's echo, but lasting as long as any wait below can."""
    p = subprocess.Popen([sys.executable, TAP_ECHO, tap, "--ethertype", hex(ETHERTYPE),
                          "--timeout", "900"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            pytest.skip(f"tap_echo.py did not start: {line}{p.stdout.read()}")
        yield tap
    finally:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(e, text, timeout=120):
    deadline = time.monotonic() + timeout
    while text not in e.stdout():
        assert e.p.poll() is None, e.stderr()
        assert time.monotonic() < deadline, f"no {text!r}: {e.stdout()[-300:]}"
        time.sleep(0.01)


LINE = re.compile(r"netloop: round (\d+) last ([^\n]*) before ([^\n]*)\n")


def rounds(text):
    """[(round, last echo's payload, the one before)] of the whole lines
    in text."""
    return [(int(r), last, prev) for r, last, prev in LINE.findall(text)]


def echo_of(seq):
    return f"ember-net-test {seq}" if seq >= 1 else "none"


def check_rounds(lines):
    for r, last, prev in lines:
        assert (last, prev) == (echo_of(r - 1), echo_of(r - 2)), \
            f"round {r}: the rx buffers of the last two echoes hold {last!r}, {prev!r}"


def test_diff_snapshot_keeps_net_rx_writes(tmp_path, long_echo):
    files = {n: tmp_path / n for n in ("base.state", "base.mem", "diff.state", "diff.mem")}
    e = Ember(tmp_path, run_args=["--kernel", guest("virtio"), "--cmdline",
                                  "test=netloop spin=200000", "--net",
                                  f"eth0,tap={long_echo}", "--track-dirty", "--timeout", "300"],
              name="src")
    try:
        wait_for(e, "round 4 ")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(files["base.state"]),
                                         "mem_file_path": str(files["base.mem"])})
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        # far enough that every rx buffer and the used ring changed
        wait_for(e, "round 20 ")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(files["diff.state"]),
                                         "mem_file_path": str(files["diff.mem"]),
                                         "snapshot_type": "Diff"})
        before = e.stdout()
    finally:
        e.kill()
    check_rounds(rounds(before))
    last_before = rounds(before)[-1][0]
    r = run(["snapshot", "merge", str(files["base.mem"]), str(files["diff.mem"])])
    assert r.returncode == 0, r.stderr
    # The saved --net names the same tap, where the echo still answers.
    d = Ember(tmp_path, run_args=["--restore", str(files["diff.state"]), "--memory-file",
                                  str(files["base.mem"]), "--use-saved-paths", "--timeout",
                                  "300"], name="dst")
    try:
        wait_for(d, f"round {last_before + 3} ")
        restored = d.stdout()
    finally:
        d.kill()
    # The pause may have fallen inside a line: join it with its rest.
    after = rounds(before[before.rfind("\n") + 1:] + restored
                   if not before.endswith("\n") else restored)
    assert len(after) >= 2, restored[-500:]
    assert after[0][0] in (last_before, last_before + 1), (last_before, after[:2])
    check_rounds(after)
    assert "bad used element" not in before + restored
