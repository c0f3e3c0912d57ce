"""Moving a running VM's drive to another file (docs/storage-migration.md):
`ember drive move` against ember's PUT/GET /drives/{id}/move.

The guest writing across a move is the virtio test guest's `blkpattern`
(tests/guest/virtio_blkpat.c): passes of a checksummed pattern over its first
drive, each read back and checked, until its second drive's sector 0 says
STOP.  Copies are slowed with --max-bandwidth where a test must catch one in
flight; nothing waits on a clock: each step waits for what it needs to see.
"""
import contextlib
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import time

import pytest

from conftest import EMBER, GUESTS, guest, needs_kvm, run
from test_api import Ember

pytestmark = needs_kvm

MiB = 1 << 20
SECTOR = 512


def fill(path, size, data_at=None, byte=None):
    """A disk of size bytes: random data in the (offset, length) spans of
    data_at (default: all of it), holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in (data_at or [(0, size)]):
            f.seek(off)
            f.write(os.urandom(n) if byte is None else bytes([byte]) * n)
    return path


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def expected(pass_no, size):
    """blkpattern's disk after pass pass_no (virtio_blkpat.c)."""
    out = bytearray()
    m = (1 << 64) - 1
    for s in range(size // SECTOR):
        base = ((pass_no << 40) ^ (s << 8) ^ 0x5bd1e9955bd1e995) & m
        words = [(base + j) & m for j in range(63)]
        words.append(sum(words) & m)
        out += struct.pack("<64Q", *words)
    return bytes(out)


def drive_cli(*args, timeout=120):
    return subprocess.run([EMBER, "drive"] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def move(e, to, *extra, drive="d0"):
    """`ember drive move` to to, waited for."""
    return drive_cli("move", "--api-sock", e.sock, "--drive", drive, "--to", str(to), *extra)


def report(e, drive="d0"):
    st, js = e.curl("GET", f"/drives/{drive}/move")
    assert st == 200, js
    return js


def wait_report(e, cond, drive="d0", timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, r = e.curl("GET", f"/drives/{drive}/move")  # 400 until the CLI's PUT is in
        if st == 200 and cond(r):
            return r
        time.sleep(0.02)
    pytest.fail(f"the move never got there: {report(e, drive)}")


def wait_count(e, pattern, n, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, e.stdout())) >= n:
            return
        assert e.p.poll() is None, e.stdout() + e.stderr()
        time.sleep(0.05)
    pytest.fail(f"no {n} x {pattern!r}: {e.stdout()[-2000:]!r}; {e.stderr()!r}")


def start_move(e, dst, *extra, drive="d0"):
    """`ember drive move --wait` in the background."""
    return subprocess.Popen([EMBER, "drive", "move", "--api-sock", e.sock, "--drive", drive,
                             "--to", str(dst), "--wait"] + list(extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def loop_ember(tmp_path, disk, *drive_opts, name=None):
    """The virtio guest reading sector after sector (blkloop) from d0."""
    opts = ",".join((f"d0,path={disk}",) + drive_opts)
    return Ember(tmp_path, name=name, run_args=[
        "--kernel", guest("virtio"), "--cmdline", "test=blkloop spin=200000",
        "--drive", opts, "--timeout", "300"])


@contextlib.contextmanager
def loop_vm(tmp_path, disk, *drive_opts, name=None):
    """loop_ember, killed at the end of the with block."""
    e = loop_ember(tmp_path, disk, *drive_opts, name=name)
    try:
        yield e
    finally:
        e.kill()


def rounds(e):
    return len(re.findall(r"blkloop: round \d+", e.stdout()))


# ---- the guest writing across a move ----

def test_pattern_guest_across_move(tmp_path):
    """The guest writes its pattern all through the copy and the pivot;
    every pass reads back whole; the new file is exactly the last pass;
    the old file does not change after the pivot; GET /vm/config and the
    next snapshot name the new file."""
    size = 1 * MiB
    src, ctl, dst = tmp_path / "src.img", tmp_path / "ctl.img", tmp_path / "dst.img"
    fill(src, size, byte=0)
    fill(ctl, 4096, byte=0)
    e = Ember(tmp_path)
    try:
        e.ok("PUT", "/boot-source", {"kernel_image_path": guest("virtio"),
                                     "boot_args": "test=blkpattern"})
        e.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})
        for d, p in (("d0", src), ("ctl", ctl)):
            e.ok("PUT", f"/drives/{d}", {"drive_id": d, "path_on_host": str(p),
                                          "is_root_device": False, "is_read_only": False})
        e.ok("PUT", "/actions", {"action_type": "InstanceStart"})
        e.wait_output("blkpattern: 2048 sectors", timeout=60)
        # ~32 s of copying at this rate: passes of the guest's writes land
        # on copied and uncopied regions alike
        cli = start_move(e, dst, "--max-bandwidth", str(32 << 10))
        wait_report(e, lambda r: r["bytes_copied"] > 0)
        seen = len(re.findall(r"pass \d+ ok", e.stdout()))
        wait_count(e, r"pass \d+ ok", seen + 2)
        r = report(e)
        if r["phase"] == "copying":
            # the second pass began after the watermark passed the first
            # chunk, and wrote it: that write went to both files
            assert r["mirrored_bytes"] > 0, r
        out, err = cli.communicate(timeout=300)
        assert cli.returncode == 0, out + err
        assert f"moved to {dst}" in out
        r = report(e)
        assert r["phase"] == "completed" and r["error"] is None, r
        assert r["bytes_copied"] == size and r["bytes_remaining"] == 0
        assert r["pivot_pause_us"] >= 0
        old = sha(src)
        cfg = e.curl("GET", "/vm/config")[1]
        assert [d["path_on_host"] for d in cfg["drives"] if d["drive_id"] == "d0"] == \
            [str(dst)], cfg["drives"]
        # two more passes: one at least wholly on the new file
        seen = len(re.findall(r"pass \d+ ok", e.stdout()))
        wait_count(e, r"pass \d+ ok", seen + 2)
        # the next snapshot names the new file
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(tmp_path / "s.state"),
                                         "mem_file_path": str(tmp_path / "s.mem")})
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        state = (tmp_path / "s.state").read_bytes()
        assert str(dst).encode() in state and str(src).encode() not in state
        with open(ctl, "r+b") as f:
            f.write(b"STOP")
        assert e.wait(timeout=300) == 0, e.stdout()[-2000:] + e.stderr()
        m = re.search(r"blkpattern: final pass (\d+) ok", e.stdout())
        assert m, e.stdout()[-2000:]
        assert "blkpattern: pass" not in re.sub(r"pass \d+ ok", "", e.stdout())
        assert open(dst, "rb").read() == expected(int(m.group(1)), size)
        assert sha(src) == old, "the old file changed after the pivot"
    finally:
        e.kill()


# ---- cancel, kill -9, full and bad destinations ----

def test_cancel_mid_copy(tmp_path):
    src, dst = fill(tmp_path / "src.img", 4 * MiB), tmp_path / "dst.img"
    before = sha(src)
    with loop_vm(tmp_path, src) as e:
        e.wait_output("blkloop: round 2")
        cli = start_move(e, dst, "--max-bandwidth", str(64 << 10))
        wait_report(e, lambda r: r["phase"] == "copying" and r["bytes_copied"] > 0)
        c = drive_cli("cancel", "--api-sock", e.sock, "--drive", "d0")
        assert c.returncode == 0, c.stderr
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 1
        assert 'drive "d0"' in err and str(dst) in err and "cancelled" in err, err
        assert f"removed {dst}" in err and not dst.exists()
        r = report(e)
        assert r["phase"] == "cancelled" and "cancelled" in r["error"], r
        assert r["bytes_remaining"] > 0
        # the guest goes on, on the source
        n = rounds(e)
        wait_count(e, r"blkloop: round \d+", n + 5)
        assert sha(src) == before
        # cancelling again: nothing runs
        c = drive_cli("cancel", "--api-sock", e.sock, "--drive", "d0")
        assert c.returncode == 1 and "no move is running" in c.stderr


def test_kill_ember_mid_copy(tmp_path):
    """kill -9 of ember: the source is whole and a new ember runs on it."""
    src, dst = fill(tmp_path / "src.img", 4 * MiB), tmp_path / "dst.img"
    before = sha(src)
    e = loop_ember(tmp_path, src, name="a")
    cli = start_move(e, dst, "--max-bandwidth", str(64 << 10))
    wait_report(e, lambda r: r["bytes_copied"] > 0)
    e.p.send_signal(signal.SIGKILL)
    e.p.wait()
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 1
    assert "ember went away" in err and "last seen: copying" in err, err
    # the destination still had its mark (ember takes it off just before a
    # pivot): it never became the drive, so the CLI removed it
    assert "before the pivot" in err and f"removed {dst}" in err and not dst.exists(), err
    assert sha(src) == before
    with loop_vm(tmp_path, src, name="b") as e2:
        e2.wait_output("blkloop: round 3")


def test_kill_cli_mid_copy(tmp_path):
    """The move is ember's: the CLI going away changes nothing."""
    src, dst = fill(tmp_path / "src.img", 1 * MiB), tmp_path / "dst.img"
    with loop_vm(tmp_path, src) as e:
        cli = start_move(e, dst, "--max-bandwidth", str(256 << 10))
        wait_report(e, lambda r: r["bytes_copied"] > 0)
        cli.kill()
        cli.wait()
        wait_report(e, lambda r: r["phase"] == "completed")
        assert sha(dst) == sha(src)
        # ember took the file's "incomplete" mark off before the pivot
        with pytest.raises(OSError):
            os.getxattr(dst, "user.ember.move-incomplete")


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip("cannot mount a tmpfs: " + r.stderr)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_destination_fills_up(tmp_path, small_tmpfs):
    src, dst = fill(tmp_path / "src.img", 4 * MiB), small_tmpfs / "dst.img"
    before = sha(src)
    with loop_vm(tmp_path, src) as e:
        e.wait_output("blkloop: round 2")
        r = move(e, dst, "--wait")
        assert r.returncode == 1
        assert 'drive "d0"' in r.stderr and str(dst) in r.stderr
        assert "No space left on device" in r.stderr, r.stderr
        assert "stays on " + str(src) in r.stderr
        assert not dst.exists()
        assert report(e)["phase"] == "failed"
        n = rounds(e)
        wait_count(e, r"blkloop: round \d+", n + 5)
        assert sha(src) == before


def test_destination_missing_or_not_writable(tmp_path):
    src = fill(tmp_path / "src.img", 1 * MiB)
    with loop_vm(tmp_path, src) as e:
        missing = tmp_path / "no" / "such" / "dst.img"
        r = move(e, missing)
        assert r.returncode == 1
        assert f'drive "d0": cannot create {missing}: No such file or directory' in r.stderr
        ro = tmp_path / "ro"
        ro.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                           str(ro)]).returncode == 0:
            try:
                r = move(e, ro / "dst.img")
                assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
            finally:
                subprocess.run(["umount", "-l", str(ro)])
        exists = fill(tmp_path / "exists.img", 4096)
        r = move(e, exists)
        assert r.returncode == 1 and "File exists" in r.stderr and "--force" in r.stderr
        assert exists.stat().st_size == 4096
        r = move(e, tmp_path / "x.img", drive="nope")
        assert r.returncode == 1 and 'drive "nope": no such drive' in r.stderr, r.stderr
        assert not (tmp_path / "x.img").exists()
        # the drive's own file, through --force
        r = move(e, src, "--force")
        assert r.returncode == 1 and "the drive's own file" in r.stderr, r.stderr
        assert src.stat().st_size == 1 * MiB


def test_api_refusals(tmp_path):
    src = fill(tmp_path / "src.img", 1 * MiB)
    with loop_vm(tmp_path, src) as e:
        assert "no file descriptor" in e.fault("PUT", "/drives/d0/move",
                                               {"path": str(tmp_path / "x")})
        assert "unknown field" in e.fault("PUT", "/drives/d0/move", {"colour": 1})
        assert "max_bandwidth" in e.fault("PUT", "/drives/d0/move",
                                          {"path": "/x", "max_bandwidth": -1})
        assert "no move has been started" in e.fault("GET", "/drives/d0/move")
        assert "Invalid request method" in e.fault("PATCH", "/drives/d0/move", {})


# ---- sparse files, twice, hvt, read-only, rate limits ----

def test_sparse_source_stays_sparse(tmp_path):
    size = 16 * MiB
    spans = [(0, 64 << 10), (5 * MiB, 256 << 10), (size - (128 << 10), 128 << 10)]
    src, dst = fill(tmp_path / "src.img", size, spans), tmp_path / "dst.img"
    with loop_vm(tmp_path, src) as e:
        r = move(e, dst, "--wait")
        assert r.returncode == 0, r.stderr
        rep = report(e)
        # the copy read the data, not the holes
        assert rep["data_bytes"] <= sum(n for _, n in spans) + 2 * 4096, rep
    assert sha(dst) == sha(src)
    assert os.stat(dst).st_size == size
    # allocated blocks: the data's, not the disk's (a little slack for
    # file system metadata and the guest's reads, which allocate nothing)
    assert os.stat(dst).st_blocks * 512 <= os.stat(src).st_blocks * 512 + 64 * 1024


def test_move_twice(tmp_path):
    src = fill(tmp_path / "a.img", 2 * MiB)
    content = sha(src)
    with loop_vm(tmp_path, src) as e:
        for to in ("b.img", "c.img"):
            r = move(e, tmp_path / to, "--wait")
            assert r.returncode == 0, r.stderr
            assert report(e)["path"] == str(tmp_path / to)
        n = rounds(e)
        wait_count(e, r"blkloop: round \d+", n + 5)
    assert sha(tmp_path / "b.img") == sha(tmp_path / "c.img") == content


def test_hvt_block_device(tmp_path):
    """A Solo5 hvt guest's block device: its vCPU thread makes the block
    calls, paused for the pivot."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"".join(f"sector {k:05d}".encode().ljust(512, b"\0")
                              for k in range(64)))
    dst = tmp_path / "dst.img"
    e = Ember(tmp_path, run_args=["--kernel", os.path.join(GUESTS, "hvt", "blk.hvt"),
                                  "--cmdline", "loop", "--block:storage=" + str(disk),
                                  "--timeout", "300"])
    try:
        e.wait_output("blk: round 3 ")
        r = move(e, dst, "--wait", drive="storage")
        assert r.returncode == 0, r.stdout + r.stderr
        n = len(re.findall(r"blk: round \d+", e.stdout()))
        wait_count(e, r"blk: round \d+", n + 5)
        # the rounds after the pivot read the new file: each round's buffer
        # holds the sector it read before
        for m in re.finditer(r"blk: round (\d+) buffer ([^\n]*)\n", e.stdout()):
            rr = int(m.group(1))
            if rr > 1:
                assert m.group(2).startswith(f"sector {1 + (rr - 2) % 63:05d}"), m.group(0)
    finally:
        e.kill()
    assert dst.read_bytes() == disk.read_bytes()


def test_read_only_drive(tmp_path):
    src, dst = fill(tmp_path / "src.img", 1 * MiB), tmp_path / "dst.img"
    with loop_vm(tmp_path, src, "read_only=on") as e:
        r = move(e, dst, "--wait")
        assert r.returncode == 0, r.stderr
        n = rounds(e)
        wait_count(e, r"blkloop: round \d+", n + 5)
    assert sha(dst) == sha(src)


def test_rate_limited_drive_keeps_its_limit(tmp_path):
    """One op per refill period: the guest's reads are throttled before the
    move and still after it (the limiter is the device's, not the file's)."""
    src, dst = fill(tmp_path / "src.img", 1 * MiB), tmp_path / "dst.img"
    metrics = tmp_path / "metrics.json"
    metrics.write_text("")
    e = Ember(tmp_path)
    try:
        e.ok("PUT", "/metrics", {"metrics_path": str(metrics)})
        e.ok("PUT", "/boot-source", {"kernel_image_path": guest("virtio"),
                                     "boot_args": "test=blkloop spin=1000"})
        e.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})
        e.ok("PUT", "/drives/d0", {
            "drive_id": "d0", "path_on_host": str(src), "is_root_device": False,
            "is_read_only": False,
            "rate_limiter": {"ops": {"size": 1, "refill_time": 50}}})
        e.ok("PUT", "/actions", {"action_type": "InstanceStart"})
        e.wait_output("blkloop: round 3", timeout=60)
        r = move(e, dst, "--wait")
        assert r.returncode == 0, r.stderr
        e.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
        n = rounds(e)
        wait_count(e, r"blkloop: round \d+", n + 3)
        e.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        last = lines[-1]
        blk = [v for k, v in last.items() if k.startswith("block")]
        assert blk and blk[0]["rate_limiter_throttled_events"] > 0, last
    finally:
        e.kill()


def test_snapshot_during_move(tmp_path):
    """A snapshot taken mid-copy names the old file (authoritative until
    the pivot) and restores on it; the copy goes on while the VM is paused
    and completes after."""
    src, dst = fill(tmp_path / "src.img", 2 * MiB), tmp_path / "dst.img"
    content = sha(src)
    with loop_vm(tmp_path, src) as e:
        e.wait_output("blkloop: round 2")
        cli = start_move(e, dst, "--max-bandwidth", str(256 << 10))
        wait_report(e, lambda r: r["bytes_copied"] > 0)
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(tmp_path / "s.state"),
                                         "mem_file_path": str(tmp_path / "s.mem")})
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        out, err = cli.communicate(timeout=120)
        assert cli.returncode == 0, out + err
    state = (tmp_path / "s.state").read_bytes()
    assert str(src).encode() in state and str(dst).encode() not in state
    assert sha(dst) == content
    r = run(["run", "--restore", str(tmp_path / "s.state"), "--memory-file",
             str(tmp_path / "s.mem"), "--use-saved-paths", "--timeout", "3"], timeout=60)
    assert "blkloop: round" in r.stdout, r.stdout + r.stderr
