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

import pytest

from conftest import guest, needs_kvm, tap_echo
from test_api import Ember
from test_dirty_tracking import base_then_diff, joined, wait_for

pytestmark = needs_kvm


@pytest.fixture
def long_echo(tap):
    """conftest's echo, but lasting as long as any wait below can."""
    with tap_echo(tap, timeout=900) as t:
        yield t


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
        before = base_then_diff(e, files)
    finally:
        e.kill()
    check_rounds(rounds(before))
    last_before = rounds(before)[-1][0]
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
    after = rounds(joined(before, restored))
    assert len(after) >= 2, restored[-500:]
    assert after[0][0] in (last_before, last_before + 1), (last_before, after[:2])
    check_rounds(after)
    assert "bad used element" not in before + restored
