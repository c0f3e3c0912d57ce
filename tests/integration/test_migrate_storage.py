"""Live migration with disk copy (docs/storage-migration.md, "Between
hosts"): `ember migrate --copy-storage` moves a VM's local disk with its
memory over the migration stream (records DSKB/DSKD/DSKZ/DSKE).

The guest is the virtio test guest's `blkpattern` (tests/guest/
virtio_blkpat.c): passes of a checksummed pattern over drive d0, each read
back and checked, until drive ctl's sector 0 says STOP.  ctl is "shared
storage": the target opens the same file.  The disk copy is slowed with
--max-bandwidth where a test must catch it in flight; nothing waits on a
clock: each step polls for what it needs to see."""
import json
import os
import re
import signal
import time

import pytest

from conftest import guest, needs_kvm
from test_api import Ember
from test_drive_move import expected, fill, sha, small_tmpfs  # noqa: F401 (fixture)
from test_migrate_cli import (_port, finish, migrate, nets, psk_file,  # noqa: F401
                              real_vmms, start, summary)

pytestmark = needs_kvm

MiB = 1 << 20
WAIT = 120  # seconds: a bound for hangs, never a measure of speed


def passes(e):
    return len(re.findall(r"blkpattern: pass \d+ ok", e.stdout()))


def wait_passes(e, n, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if passes(e) >= n:
            return
        assert e.p.poll() is None, e.stdout()[-2000:] + e.stderr()
        time.sleep(0.05)
    pytest.fail(f"no {n} passes: {e.stdout()[-2000:]!r}")


def pattern_vm(tmp_path, src, ctl, extra_drive=None, limiter=None):
    """The blkpattern guest on src (d0) and ctl, started through the API."""
    e = Ember(tmp_path, name="src")
    try:
        boot_pattern(e, src, ctl, limiter)
    except BaseException:
        e.kill()
        raise
    return e


def boot_pattern(e, src, ctl, limiter):
    e.ok("PUT", "/boot-source", {"kernel_image_path": guest("virtio"),
                                 "boot_args": "test=blkpattern"})
    e.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})
    d0 = {"drive_id": "d0", "path_on_host": str(src), "is_root_device": False,
          "is_read_only": False}
    if limiter:
        d0["rate_limiter"] = limiter
    e.ok("PUT", "/drives/d0", d0)
    e.ok("PUT", "/drives/ctl", {"drive_id": "ctl", "path_on_host": str(ctl),
                                "is_root_device": False, "is_read_only": False})
    e.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    e.wait_output(" sectors\n", timeout=60)


def status(e):
    st, js = e.curl("GET", "/migration")
    return js if st == 200 else {}


def wait_disk_copy(e, timeout=WAIT):
    """Until the source has sent part of its disk, not all of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = status(e).get("disks")
        if d and 0 < d["bytes_copied"] < d["bytes_total"]:
            return d
        time.sleep(0.02)
    pytest.fail(f"the disk copy never got going: {status(e)}")


def stop_guest(ctl):
    with open(ctl, "r+b") as f:
        f.write(b"STOP")


def final_pass(e):
    assert e.wait(timeout=300) == 0, e.stdout()[-2000:] + e.stderr()
    m = re.search(r"blkpattern: final pass (\d+) ok", e.stdout())
    assert m, e.stdout()[-2000:]
    assert "blkpattern: pass" not in re.sub(r"pass \d+ ok", "", e.stdout())
    return int(m.group(1))


def check_target_pattern(dst, ctl, dst_img, size=1 * MiB):
    """One more whole pass on the target, then STOP: every pass read back
    whole, and the destination file is exactly the last one."""
    wait_passes(dst, passes(dst) + 1)
    stop_guest(ctl)
    last = final_pass(dst)
    assert open(dst_img, "rb").read() == expected(last, size)


def check_source_runs_on(src):
    st, js = src.curl("GET", "/")
    assert js["state"] == "Running", js
    wait_passes(src, passes(src) + 1)


def files(tmp_path, size=1 * MiB, byte=0):
    """d0's file (byte everywhere; None: random data, so the copy has data
    to send from the start), ctl's, and d0's destination."""
    src, ctl, dst = tmp_path / "src.img", tmp_path / "ctl.img", tmp_path / "dst.img"
    fill(src, size, byte=byte)
    fill(ctl, 4096, byte=0)
    return src, ctl, dst


def target_args(dst, ctl, drive="d0"):
    return ["--copy-storage", drive, "--drive", f"{drive},path={dst}",
            "--drive", f"ctl,path={ctl}"]


# ---- the guest writing through the migration ----

def test_same_host_pattern_moves_with_its_disk(tmp_path, real_vmms):
    """The guest writes all through the disk copy and the memory rounds;
    on the target every pass reads back whole; the destination is exactly
    the target's last pass; the source's file no longer changes after the
    hand-over."""
    src_img, ctl, dst_img = files(tmp_path)
    src = pattern_vm(tmp_path, src_img, ctl)
    dst = Ember(tmp_path, name="dst")
    try:
        wait_passes(src, 1)
        # ~4 s of disk copy at this rate: guest writes land on copied and
        # uncopied blocks alike
        p = start("--from", src.sock, "--to", dst.sock, "--copy-storage", "d0",
                  "--max-bandwidth", str(256 << 10), "--downtime-ms", "50",
                  *target_args(dst_img, ctl)[2:])
        rc, out, err = finish(p, timeout=WAIT)
        assert rc == 0, out + err
        assert summary(out)["result"] == "completed"
        assert src.wait(timeout=WAIT) == 0, src.stderr()
        old = sha(src_img)
        check_target_pattern(dst, ctl, dst_img)
        assert sha(src_img) == old, "the source's file changed after the hand-over"
    finally:
        src.kill()
        dst.kill()


@pytest.mark.parametrize("auth", ["psk"])
def test_between_namespaces_over_tls(tmp_path, nets, real_vmms, auth):
    """Between two network namespaces over TLS 1.3 (PSK), the disk with
    the VM: the receiving side creates the destination, the guest reads
    every pass back on the target."""
    src_img, ctl, dst_img = files(tmp_path)
    src = pattern_vm(tmp_path, src_img, ctl)
    dst = Ember(tmp_path, name="dst")
    key = "cd" * 32
    port = next(_port)
    try:
        wait_passes(src, 1)
        recv = start("--listen", f"{nets['addr']}:{port}", "--to", dst.sock, "--timeout", "90",
                     *psk_file(tmp_path / "r.psk", key), *target_args(dst_img, ctl),
                     netns=nets["recv"])
        assert "listening on" in recv.stderr.readline()
        send = migrate("--from", src.sock, "--to-host", f"{nets['addr']}:{port}", "--timeout",
                       "90", "--copy-storage", "d0", "--downtime-ms", "50",
                       *psk_file(tmp_path / "s.psk", key), netns=nets["send"], timeout=WAIT)
        rc, out, err = finish(recv, timeout=WAIT)
        assert rc == 0, out + err
        assert send.returncode == 0, send.stdout + send.stderr
        assert summary(send.stdout)["handover"] == "gogo"
        assert src.wait(timeout=WAIT) == 0, src.stderr()
        check_target_pattern(dst, ctl, dst_img)
    finally:
        src.kill()
        dst.kill()


# ---- nothing lost: failures leave the source whole and running ----

@pytest.mark.parametrize("how", ["cancel", "kill-target"])
def test_stopped_mid_disk_copy(tmp_path, real_vmms, how):
    """During the disk copy, SIGINT to the controller (a cancel at the
    source) or kill -9 of the target VMM: the migration fails, the VM runs
    on on its file, every pass it writes there reads back whole, and the
    destination is removed."""
    src_img, ctl, dst_img = files(tmp_path, 2 * MiB, byte=None)
    src = pattern_vm(tmp_path, src_img, ctl)
    dst = Ember(tmp_path, name="dst")
    try:
        p = start("--from", src.sock, "--to", dst.sock, "--max-bandwidth", str(64 << 10),
                  *target_args(dst_img, ctl))
        wait_disk_copy(src)
        if how == "cancel":
            p.send_signal(signal.SIGINT)
        else:
            dst.p.send_signal(signal.SIGKILL)
        rc, out, err = finish(p, timeout=WAIT)
        assert rc == 1, out + err
        assert summary(out)["result"] in ("cancelled", "failed"), out
        assert not dst_img.exists(), err
        if how == "cancel":
            assert status(src)["phase"] == "cancelled", status(src)
        check_source_runs_on(src)
        stop_guest(ctl)
        final_pass(src)  # every pass on the source's file read back whole
    finally:
        src.kill()
        dst.kill()


def test_sending_controller_killed_between_namespaces(tmp_path, nets, real_vmms):
    """kill -9 of the sending host's controller (its TLS relay) during the
    disk copy: the source fails the migration and runs on; the receiving
    controller sees its target fail and removes the destination."""
    src_img, ctl, dst_img = files(tmp_path, 2 * MiB, byte=None)
    src = pattern_vm(tmp_path, src_img, ctl)
    dst = Ember(tmp_path, name="dst")
    key = "ab" * 32
    port = next(_port)
    try:
        recv = start("--listen", f"{nets['addr']}:{port}", "--to", dst.sock, "--timeout", "90",
                     *psk_file(tmp_path / "r.psk", key), *target_args(dst_img, ctl),
                     netns=nets["recv"])
        assert "listening on" in recv.stderr.readline()
        send = start("--from", src.sock, "--to-host", f"{nets['addr']}:{port}", "--timeout",
                     "90", "--copy-storage", "d0", "--max-bandwidth", str(64 << 10),
                     *psk_file(tmp_path / "s.psk", key), netns=nets["send"])
        wait_disk_copy(src)
        send.kill()  # ip netns exec execs the controller: this is its pid
        send.wait()
        rc, out, err = finish(recv, timeout=WAIT)
        assert rc == 1, out + err
        assert not dst_img.exists(), err
        deadline = time.monotonic() + WAIT
        while status(src).get("phase") not in ("failed", "cancelled"):
            assert time.monotonic() < deadline, status(src)
            time.sleep(0.05)
        check_source_runs_on(src)
    finally:
        src.kill()
        dst.kill()


def test_destination_fills_up(tmp_path, small_tmpfs, real_vmms):
    """The destination on a 1 MiB tmpfs, the disk 4 MiB of data: ENOSPC on
    the target fails the migration before the hand-over, naming the drive,
    the file and the offset; the source runs on; the file is removed."""
    src_img, ctl, _ = files(tmp_path, 4 * MiB)
    fill(src_img, 4 * MiB)  # all data
    dst_img = small_tmpfs / "dst.img"
    src = Ember(tmp_path, name="src", run_args=[
        "--kernel", guest("virtio"), "--cmdline", "test=blkloop spin=200000",
        "--drive", f"d0,path={src_img}", "--timeout", "300"])
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("blkloop: round", timeout=60)
        before = sha(src_img)
        r = migrate("--from", src.sock, "--to", dst.sock, "--copy-storage", "d0",
                    "--drive", f"d0,path={dst_img}", timeout=WAIT)
        assert r.returncode == 1, r.stdout + r.stderr
        err = summary(r.stdout)["error"] or ""
        both = err + r.stderr + dst.stderr()
        assert "No space left on device" in both, both
        assert 'drive "d0"' in both and str(dst_img) in both and "at offset" in both, both
        assert not dst_img.exists()
        st, js = src.curl("GET", "/")
        assert js["state"] == "Running", js
        assert sha(src_img) == before
    finally:
        src.kill()
        dst.kill()


def test_sparse_source_stays_sparse(tmp_path, real_vmms):
    """A 64 MiB disk with 1 MiB of data: the destination holds the same
    bytes and about as few blocks."""
    src_img, ctl, dst_img = tmp_path / "src.img", tmp_path / "ctl.img", tmp_path / "dst.img"
    fill(src_img, 64 * MiB, data_at=[(8 * MiB, 512 << 10), (40 * MiB, 512 << 10)])
    fill(ctl, 4096, byte=0)
    src = Ember(tmp_path, name="src", run_args=[
        "--kernel", guest("virtio"), "--cmdline", "test=blkloop spin=200000",
        "--drive", f"d0,path={src_img},read_only=on", "--timeout", "300"])
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("blkloop: round", timeout=60)
        r = migrate("--from", src.sock, "--to", dst.sock, "--copy-storage", "d0",
                    "--drive", f"d0,path={dst_img}", timeout=WAIT)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sha(dst_img) == sha(src_img)
        assert os.stat(dst_img).st_blocks * 512 <= 2 * MiB, os.stat(dst_img).st_blocks
        dst.wait_output("blkloop: round", timeout=60)
    finally:
        src.kill()
        dst.kill()


def test_refusals(tmp_path, nets, real_vmms):
    """copy_storage with mode local (API); a copied drive's file that
    exists already (left as it was); a drive the source does not have (the
    created file removed again); a receive that did not ask for the copy
    refuses it, so no file is written that was not meant to be."""
    src_img, ctl, dst_img = files(tmp_path)
    src = pattern_vm(tmp_path, src_img, ctl)
    dst = Ember(tmp_path, name="dst")
    try:
        st, js = src.curl("PUT", "/migration/send", {"copy_storage": ["d0"], "mode": "local"})
        assert st == 400 and "pre-copy only" in js["fault_message"], js
        dst_img.write_bytes(b"mine")
        r = migrate("--from", src.sock, "--to", dst.sock, *target_args(dst_img, ctl))
        assert r.returncode == 1 and "must not exist" in r.stderr, r.stderr
        assert dst_img.read_bytes() == b"mine"
        other = tmp_path / "other.img"
        r = migrate("--from", src.sock, "--to", dst.sock, "--copy-storage", "nosuch",
                    "--drive", f"nosuch,path={other}", "--drive", f"d0,path={src_img}",
                    "--drive", f"ctl,path={ctl}")
        assert r.returncode == 1, r.stdout + r.stderr
        assert 'drive "nosuch": no such drive' in r.stdout + r.stderr, r.stdout + r.stderr
        assert not other.exists()
        # between hosts: the receiver names d0's file but not its copy (a
        # fresh target: the one above failed with its stream)
        dst.kill()
        dst = Ember(tmp_path, name="dst2")
        port = next(_port)
        key = "ef" * 32
        recv = start("--listen", f"{nets['addr']}:{port}", "--to", dst.sock, "--timeout", "60",
                     *psk_file(tmp_path / "r.psk", key), "--drive", f"d0,path={dst_img}",
                     "--drive", f"ctl,path={ctl}", netns=nets["recv"])
        assert "listening on" in recv.stderr.readline()
        send = migrate("--from", src.sock, "--to-host", f"{nets['addr']}:{port}", "--timeout",
                       "60", "--copy-storage", "d0", *psk_file(tmp_path / "s.psk", key),
                       netns=nets["send"], timeout=WAIT)
        rc, out, err = finish(recv, timeout=WAIT)
        assert rc == 1 and send.returncode == 1, out + err + send.stdout + send.stderr
        assert "did not ask for its copy" in send.stdout + send.stderr + dst.stderr(), \
            send.stdout + send.stderr + dst.stderr()
        assert dst_img.read_bytes() == b"mine"
        check_source_runs_on(src)
    finally:
        src.kill()
        dst.kill()


# ---- hvt block devices, rate limiters ----

def test_hvt_block_device_moves_with_its_disk(tmp_path, real_vmms):
    """A Solo5 hvt guest's block device (its vCPU thread makes the block
    calls, through the same backend whose writes the tracker marks): the
    target's guest goes on reading the copied file, sector after sector."""
    from conftest import GUESTS
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"".join(f"sector {k:05d}".encode().ljust(512, b"\0")
                              for k in range(64)))
    dst_img = tmp_path / "dst.img"
    src = Ember(tmp_path, name="src", run_args=[
        "--kernel", os.path.join(GUESTS, "hvt", "blk.hvt"), "--cmdline", "loop",
        "--block:storage=" + str(disk), "--timeout", "300"])
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("blk: round 3 ", timeout=60)
        r = migrate("--from", src.sock, "--to", dst.sock, "--copy-storage", "storage",
                    "--drive", f"storage,path={dst_img}", timeout=WAIT)
        assert r.returncode == 0, r.stdout + r.stderr
        assert dst_img.read_bytes() == disk.read_bytes()
        deadline = time.monotonic() + WAIT
        while len(re.findall(r"blk: round \d+", dst.stdout())) < 5:
            assert time.monotonic() < deadline, dst.stdout() + dst.stderr()
            time.sleep(0.05)
        for m in re.finditer(r"blk: round (\d+) buffer ([^\n]*)\n", dst.stdout()):
            rr = int(m.group(1))
            if rr > 1:
                assert m.group(2).startswith(f"sector {1 + (rr - 2) % 63:05d}"), m.group(0)
    finally:
        src.kill()
        dst.kill()


def test_rate_limited_drive_keeps_its_limit(tmp_path, real_vmms):
    """The drive's rate limiter is the device's: it travels in the state
    and limits the target's drive, now on the new file."""
    src_img, ctl, dst_img = files(tmp_path)
    limiter = {"ops": {"size": 1, "refill_time": 50}}
    src = pattern_vm(tmp_path, src_img, ctl, limiter=limiter)
    dst = Ember(tmp_path, name="dst")
    metrics = tmp_path / "metrics.json"
    metrics.write_text("")
    try:
        dst.ok("PUT", "/metrics", {"metrics_path": str(metrics)})
        r = migrate("--from", src.sock, "--to", dst.sock, "--downtime-ms", "50",
                    *target_args(dst_img, ctl), timeout=WAIT)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_passes(dst, passes(dst) + 1)
        dst.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
        last = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()][-1]
        blk = [v for k, v in last.items() if k.startswith("block")]
        assert blk and blk[0]["rate_limiter_throttled_events"] > 0, last
        st, conf = dst.curl("GET", "/vm/config")
        assert st == 200, conf
        drives = {d["drive_id"]: d for d in conf["drives"]}
        assert drives["d0"]["path_on_host"] == str(dst_img), drives  # the new file
        check_target_pattern(dst, ctl, dst_img)
    finally:
        src.kill()
        dst.kill()
