"""Diff snapshots carry the pages ember itself writes into guest RAM, not
only the guest's own writes (KVM's dirty log sees only those).

The virtio test guest's `blkloop` reads sector 1, 2, 3... into one fixed
buffer, each round first printing what the buffer holds: the previous
round's sector.  Base snapshot, more rounds, diff snapshot, merge, load:
the restored guest must find in its buffer the sector it read last (the
device wrote it with preadv, KVM never saw it), and its used ring must be
where the device left it (a stale index is a phantom completion or a
hang).  Without ember's own dirty bitmap the buffer comes back holding
the base's sector.
"""
import os
import re
import time

import pytest

from conftest import EXIT_TIMEOUT, GUESTS, guest, needs_kvm, run
from test_api import Ember

pytestmark = needs_kvm

SECTORS = 64


def sector_of_round(r):
    return 1 + (r - 1) % (SECTORS - 1)


def wait_for(e, text, timeout=120):
    deadline = time.monotonic() + timeout
    while text not in e.stdout():
        assert e.p.poll() is None, e.stderr()
        assert time.monotonic() < deadline, f"no {text!r}: {e.stdout()[-300:]}"
        time.sleep(0.01)


LINE = re.compile(r"(?:blkloop|blk): round (\d+) buffer ([^\n]*)\n")


def rounds(text):
    """[(round, buffer text)] of the whole lines in text."""
    return [(int(r), b) for r, b in LINE.findall(text)]


def check_rounds(lines):
    for r, buf in lines:
        want = "" if r == 1 else f"sector {sector_of_round(r - 1):05d}"
        assert buf == want, f"round {r}: the buffer holds {buf!r}, not {want!r}"


# virtio-blk (preadv into the guest's buffer, used ring) and the hvt
# frontend (a BLOCK_READ hypercall's buffer, its result)
GUESTS_UNDER_TEST = {
    "virtio": lambda disk: ["--kernel", guest("virtio"), "--cmdline", "test=blkloop spin=200000",
                            "--drive", f"d0,path={disk}"],
    "hvt": lambda disk: ["--kernel", os.path.join(GUESTS, "hvt", "blk.hvt"), "--cmdline",
                         "loop", "--block:storage=" + str(disk)],
}


@pytest.mark.parametrize("kind", sorted(GUESTS_UNDER_TEST))
def test_diff_snapshot_keeps_device_writes(tmp_path, kind):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"".join(f"sector {k:05d}".encode().ljust(512, b"\0")
                              for k in range(SECTORS)))
    e = Ember(tmp_path, run_args=GUESTS_UNDER_TEST[kind](disk) + ["--track-dirty", "--timeout",
                                                                "120"], name="src")
    files = {n: tmp_path / n for n in ("base.state", "base.mem", "diff.state", "diff.mem")}
    try:
        before = base_then_diff(e, files)
    finally:
        e.kill()
    check_restored(files, before)


def check_restored(files, before):
    """The source's rounds were right, and the diff's state loaded with the
    merged memory goes on from the source's last round, still right."""
    check_rounds(rounds(before))
    r = run(["run", "--restore", str(files["diff.state"]), "--memory-file",
             str(files["base.mem"]), "--use-saved-paths", "--timeout", "3"], timeout=60)
    assert r.returncode == EXIT_TIMEOUT, (r.returncode, r.stderr, r.stdout[-500:])
    after = rounds(joined(before, r.stdout))
    assert len(after) >= 2, r.stdout[-500:]
    last_before = rounds(before)[-1][0]
    assert after[0][0] in (last_before, last_before + 1), (last_before, after[:2])
    check_rounds(after)
    assert "read: status" not in r.stdout and "read failed" not in r.stdout


@pytest.mark.parametrize("kind", sorted(GUESTS_UNDER_TEST))
def test_tracking_turned_on_at_run_time(tmp_path, kind):
    """ember's PATCH /machine-config {"track_dirty_pages": true} after boot
    switches KVM's log on in the running VM's memory slots (as a migration
    would, only while it runs).  There is no base yet, so a diff needs a
    full snapshot first; the diff after it carries the guest's and the
    device's writes since, and merged into the full one it loads and goes
    on exactly.  Turned off, diffs are refused again."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"".join(f"sector {k:05d}".encode().ljust(512, b"\0")
                              for k in range(SECTORS)))
    e = Ember(tmp_path, run_args=GUESTS_UNDER_TEST[kind](disk) + ["--timeout", "120"],
              name="src")
    files = {n: tmp_path / n for n in ("base.state", "base.mem", "diff.state", "diff.mem")}
    diff = {"snapshot_path": str(files["diff.state"]), "mem_file_path": str(files["diff.mem"]),
            "snapshot_type": "Diff"}
    try:
        wait_for(e, "round 2 ")
        assert e.curl("GET", "/machine-config")[1]["track_dirty_pages"] is False
        e.ok("PATCH", "/vm", {"state": "Paused"})
        assert "dirty page tracking disabled" in e.fault("PUT", "/snapshot/create", diff)
        e.ok("PATCH", "/vm", {"state": "Resumed"})

        e.ok("PATCH", "/machine-config", {"track_dirty_pages": True})  # running
        assert e.curl("GET", "/machine-config")[1]["track_dirty_pages"] is True
        assert "vcpu_count: only track_dirty_pages may change after boot" in e.fault(
            "PATCH", "/machine-config", {"track_dirty_pages": True, "vcpu_count": 1})
        e.ok("PATCH", "/vm", {"state": "Paused"})
        assert "needs a base" in e.fault("PUT", "/snapshot/create", diff)
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(files["base.state"]),
                                         "mem_file_path": str(files["base.mem"])})
        base_round = rounds(e.stdout())[-1][0]
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        wait_for(e, f"round {base_round + 16} ")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", diff)
        before = e.stdout()

        e.ok("PATCH", "/machine-config", {"track_dirty_pages": False})  # paused
        assert e.curl("GET", "/machine-config")[1]["track_dirty_pages"] is False
        assert "dirty page tracking disabled" in e.fault("PUT", "/snapshot/create", diff)
    finally:
        e.kill()
    r = run(["snapshot", "merge", str(files["base.mem"]), str(files["diff.mem"])])
    assert r.returncode == 0, r.stderr
    check_restored(files, before)


def base_then_diff(e, files):
    """A full snapshot at round 4, then (resumed) a diff at round 20 of the
    round-printing guest behind API ember e, the base merged with the
    diff; returns the guest's output up to the diff."""
    wait_for(e, "round 4 ")
    e.ok("PATCH", "/vm", {"state": "Paused"})
    e.ok("PUT", "/snapshot/create", {"snapshot_path": str(files["base.state"]),
                                     "mem_file_path": str(files["base.mem"])})
    e.ok("PATCH", "/vm", {"state": "Resumed"})
    # far enough that the buffers and the used ring changed many times
    wait_for(e, "round 20 ")
    e.ok("PATCH", "/vm", {"state": "Paused"})
    e.ok("PUT", "/snapshot/create", {"snapshot_path": str(files["diff.state"]),
                                     "mem_file_path": str(files["diff.mem"]),
                                     "snapshot_type": "Diff"})
    before = e.stdout()
    r = run(["snapshot", "merge", str(files["base.mem"]), str(files["diff.mem"])])
    assert r.returncode == 0, r.stderr
    return before


def joined(before, after):
    """The restored run's output, with the line the pause split (if any)
    joined to its rest."""
    return before[before.rfind("\n") + 1:] + after if not before.endswith("\n") else after
