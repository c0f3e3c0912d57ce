"""Post-copy live migration (docs/migration.md, "Post-copy"): the target
runs after the state and a first round of pages and fetches the rest
through userfaultfd while the source pushes them.  Two embers on this
machine joined by a socketpair (test_migration.py's helpers).

No timing is asserted: waits are bounded, and what is checked is the
count's continuity, the guest's own pattern check and where each end
ends up."""
import os
import signal

import pytest

from conftest import guest, needs_kvm
from test_api import Ember
from test_migration import (blk_rounds_go_on, counts, mig, mig_or_none, phase_in, start,
                            wait_for)

pytestmark = needs_kvm


def guest_ember(tmp_path, cmdline, name="src"):
    return Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline", cmdline,
                                     "--timeout", "120"], name=name)


def continuous(src, dst):
    nums = counts(src.stdout() + dst.stdout())
    assert nums == list(range(1, len(nums) + 1)), nums[-20:]
    return nums


def counts_on_target(src, dst, more=2):
    n = counts(src.stdout())[-1]
    wait_for(lambda: counts(dst.stdout()) and counts(dst.stdout())[-1] > n + more,
             "the target to count on", timeout=90)


@pytest.mark.parametrize("mode", ["postcopy", "postcopy-now"])
def test_explicit_postcopy_memory_intact(tmp_path, mode):
    """"mode": "postcopy" (after round 0) or "postcopy-now" (before any
    round): the target runs with
    pages missing, the guest reads its 16 MiB pattern back on every
    line (each missing page a fault served from the source), no word is
    wrong and the count goes on with no step lost or repeated."""
    src = guest_ember(tmp_path, "count=100000 spin=20000000 fill=16 check=1")
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 3\n", timeout=60)
        start(src, dst, send_body={"mode": mode, "timeout_ms": 100000})
        seen = set()

        def done():
            js = mig_or_none(dst)
            if js:
                seen.add(js["phase"])
                assert js["phase"] != "failed", (js, dst.stderr())
            return js and js["phase"] == "running" and src.p.poll() is not None
        wait_for(done, "the post-copy to end", timeout=110)
        assert src.p.returncode == 0, src.stderr()
        assert "migration completed (post-copy)" in src.stderr()
        js = mig(dst)
        assert js["pages_missing"] == 0, js
        if mode == "postcopy-now":  # all 16 MiB missing: the first check faults
            assert js["faults_served"] > 0, js
        assert js["downtime_ms"] is not None and js["downtime_ms"] > 0, js
        counts_on_target(src, dst)
        continuous(src, dst)
        assert "pattern bad" not in src.stdout() + dst.stdout()
    finally:
        src.kill()
        dst.kill()


def test_write_heavy_guest_moves_by_postcopy(tmp_path):
    """A guest that dirties 2048 pages on every line, under 2 MB/s:
    pre-copy cannot converge (each round finds as many dirty as it
    sent); "converge": "postcopy" switches, the guest moves and keeps
    counting."""
    src = guest_ember(tmp_path, "count=100000 spin=2000000 fill=16 dirty=2048")
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 3\n", timeout=60)
        start(src, dst, send_body={"max_bandwidth": 2000000, "downtime_ms": 5,
                                   "timeout_ms": 100000, "converge": "postcopy"})
        seen = {"phases": set(), "rounds": 0}

        def done():
            js = mig_or_none(src)
            if js:
                seen["phases"].add(js["phase"])
                seen["rounds"] = max(seen["rounds"], js["round"])
                assert js["phase"] != "failed", (js, src.stderr())
            return src.p.poll() is not None
        wait_for(done, "the migration to complete", timeout=110)
        assert src.p.returncode == 0, src.stderr()
        assert "migration completed (post-copy)" in src.stderr()
        assert seen["rounds"] >= 2, seen
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
        assert js["phase"] == "running", (js, dst.stderr())
        assert js["downtime_ms"] is not None, js
        counts_on_target(src, dst)
        continuous(src, dst)
    finally:
        src.kill()
        dst.kill()


def test_source_killed_mid_postcopy_target_fails_loudly(tmp_path):
    """kill -9 of the source while the target still lacks pages: the
    target must not run on with them missing: it says so and exits."""
    src = guest_ember(tmp_path, "count=100000 spin=20000000 fill=32 check=1")
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 2\n", timeout=60)
        # 200 KB/s: the push of the missing pages takes minutes
        start(src, dst, send_body={"mode": "postcopy-now", "max_bandwidth": 200000,
                                   "timeout_ms": 100000})
        js = wait_for(phase_in(dst, {"postcopy", "running", "failed"}), "post-copy")
        assert js["phase"] == "postcopy", js
        os.kill(src.p.pid, signal.SIGKILL)
        src.p.wait(timeout=10)
        rc = dst.p.wait(timeout=60)
        assert rc == -signal.SIGABRT, (rc, dst.stderr())  # its own, not seccomp's SIGSYS
        err = dst.stderr()
        assert "migration failed in post-copy" in err and "the guest is lost" in err, err
    finally:
        src.kill()
        dst.kill()


@pytest.mark.parametrize("kind", ["virtio", "hvt"])
def test_blk_guest_moves_by_postcopy_now(tmp_path, kind):
    """virtio-blk reads (the vmm thread writes the sector into guest RAM
    and reads the queue there) and Solo5 hvt block reads (a hypercall on
    the vCPU thread) with every page missing at first ("postcopy-now"):
    ember's own accesses to RAM fault and are served too (the restore's
    queue sweep waits until RAM can be read), and every round's buffer
    holds the sector it read."""
    from test_dirty_tracking import GUESTS_UNDER_TEST, SECTORS
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"".join(f"sector {k:05d}".encode().ljust(512, b"\0")
                              for k in range(SECTORS)))
    src = Ember(tmp_path, run_args=GUESTS_UNDER_TEST[kind](disk) + ["--timeout", "120"],
                name="src")
    dst = Ember(tmp_path, name="dst")
    try:
        wait_for(lambda: "round 3 " in src.stdout(), "round 3")
        start(src, dst, send_body={"mode": "postcopy-now"})
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
        assert js["phase"] == "running", (js, dst.stderr())
        assert js["pages_missing"] == 0, js  # faults: as the push races them
        assert src.wait(timeout=30) == 0, src.stderr()
        blk_rounds_go_on(src, dst)
    finally:
        src.kill()
        dst.kill()


def test_net_guest_moves_by_postcopy_with_traffic(tmp_path, tap):
    """The virtio test guest's netloop (a frame out, its echo back, each
    round, tap_echo.py answering) with every page missing at first:
    frames keep coming on the target's tap while its RAM fills, the rx
    path writes them into guest RAM (through the faults), and each
    round's rx buffers hold the echoes they should.  The target gets
    another tap (a tap is one process's at a time), with its own echo."""
    from conftest import ip, tap_echo
    from test_dirty_tracking import joined
    from test_dirty_tracking_net import check_rounds, rounds
    other = tap[:12] + "p"
    assert ip("tuntap", "add", "dev", other, "mode", "tap").returncode == 0
    try:
        assert ip("link", "set", other, "up").returncode == 0
        with tap_echo(tap, timeout=300), tap_echo(other, timeout=300):
            src = Ember(tmp_path, run_args=["--kernel", guest("virtio"), "--cmdline",
                                            "test=netloop spin=200000 resend=200", "--net",
                                            f"eth0,tap={tap}", "--timeout", "300"], name="src")
            dst = Ember(tmp_path, name="dst")
            try:
                wait_for(lambda: len(rounds(src.stdout())) >= 3, "rounds on the source")
                start(src, dst, send_body={"mode": "postcopy-now"},
                      recv_body={"network_overrides": [{"iface_id": "eth0",
                                                        "host_dev_name": other}]})
                js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
                assert js["phase"] == "running", (js, dst.stderr())
                assert src.wait(timeout=30) == 0, src.stderr()
                n = rounds(src.stdout())[-1][0]
                wait_for(lambda: rounds(dst.stdout()) and rounds(dst.stdout())[-1][0] > n + 3,
                         "echo rounds on the target")
                after = rounds(joined(src.stdout(), dst.stdout()))
                check_rounds(after)
                assert "bad used element" not in src.stdout() + dst.stdout()
            finally:
                src.kill()
                dst.kill()
    finally:
        ip("link", "del", other)


def test_cli_postcopy(tmp_path):
    """`ember migrate --mode postcopy` on one host: the controller asks for
    post-copy, follows the target through its postcopy phase and reports
    completed; the guest counts on.  Between hosts it is refused before
    anything starts (the relay would have to outlive the hand-over)."""
    import json
    import subprocess
    from test_api import EMBER
    src = guest_ember(tmp_path, "count=100000 spin=2000000 fill=16 check=1")
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 3\n", timeout=60)
        bad = subprocess.run([EMBER, "migrate", "--from", src.sock, "--to-host", "127.0.0.1:1",
                              "--insecure-plain", "--mode", "postcopy"],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 121 and "same-host only" in bad.stderr, bad
        r = subprocess.run([EMBER, "migrate", "--from", src.sock, "--to", dst.sock,
                            "--mode", "postcopy"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert json.loads(r.stdout.strip().splitlines()[-1])["result"] == "completed", r.stdout
        assert src.wait(timeout=60) == 0, src.stderr()
        counts_on_target(src, dst)
        assert "pattern bad" not in src.stdout() + dst.stdout()
    finally:
        src.kill()
        dst.kill()
