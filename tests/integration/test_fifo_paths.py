"""Paths that are not the kind of file they name: a FIFO's open(2) waits
for its other end, forever if nobody comes, so a FIFO given as a kernel,
initrd, disk or output file used to hang ember (and with it the API, and
`--timeout`).  Each is now refused at once by host_open() (monitor/
hostfile.h) with exit 121 and a message naming the path; drives may also
be block devices (a loop device here), the serial output a terminal,
/dev/null, or a FIFO that has its reader.  `--timeout` bounds start-up as
well as the run (monitor/startup.h): a start-up step that blocks (strace
delays one here) ends with exit 124 and the phase it was in.

The subprocess timeouts are hang detectors, not timing assertions."""
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import EMBER, EXIT_CONFIG, EXIT_TIMEOUT, GUESTS, guest, needs_kvm, run

HANG = 30  # seconds: far beyond any refusal; only a hang gets there


def hvt(name):
    path = os.path.join(GUESTS, "hvt", name + ".hvt")
    if not os.path.exists(path):
        pytest.fail(f"hvt test guest {path} missing: run make guests")
    return path


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


# What each user path is, as `ember run` options around it.
CLI_PATHS = {
    "kernel": lambda p: ["--kernel", p],
    "initrd": lambda p: ["--kernel", guest("hello"), "--initrd", p],
    "drive": lambda p: ["--drive", f"root,path={p}", "--kernel", guest("virtio")],
    "hvt-block": lambda p: [f"--block:storage={p}", "--", hvt("blk")],
    "serial": lambda p: ["--kernel", guest("hello"), "--serial", p],
}


@pytest.mark.parametrize("what", sorted(CLI_PATHS))
def test_fifo_refused(fifo, what):
    r = run(["run"] + CLI_PATHS[what](fifo), timeout=HANG)
    assert r.returncode == EXIT_CONFIG, r.stderr
    # The serial output takes a FIFO that has a reader; this one has none.
    assert f"{fifo}: is a FIFO" in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("what", ["kernel", "initrd", "drive", "hvt-block"])
@pytest.mark.parametrize("path,kind", [("/dev/null", "a character device"),
                                       ("DIR", "a directory")])
def test_other_kinds_refused(tmp_path, what, path, kind):
    path = str(tmp_path) if path == "DIR" else path
    r = run(["run"] + CLI_PATHS[what](path), timeout=HANG)
    assert r.returncode == EXIT_CONFIG, r.stderr
    wanted = "a regular file or a block device" if what in ("drive", "hvt-block") \
        else "a regular file"
    assert f"{path}: is {kind}, not {wanted}" in r.stderr, r.stderr


def test_fifo_drive_in_ini_file(tmp_path, fifo):
    ini = tmp_path / "vm.ini"
    ini.write_text(f"[vm]\nkernel = {guest('virtio')}\n\n[drive.root]\npath = {fifo}\n")
    r = run(["run", str(ini)], timeout=HANG)
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert f"{fifo}: is a FIFO, not a regular file or a block device" in r.stderr


def test_fifo_kernel_with_timeout(fifo):
    """Refused, or at worst the timeout: never a hang."""
    r = run(["run", "--kernel", fifo, "--timeout", "1"], timeout=HANG)
    assert r.returncode in (EXIT_CONFIG, EXIT_TIMEOUT), r.stderr
    assert fifo in r.stderr or "during start-up" in r.stderr


def test_dry_run_refuses_fifo(fifo):
    r = run(["run", "--kernel", guest("hello"), "--initrd", fifo, "--dry-run"], timeout=HANG)
    assert r.returncode == EXIT_CONFIG
    assert f"initrd {fifo}: is a FIFO, not a regular file" in r.stderr


def test_fifo_vsock_uds_refused(fifo):
    """The vsock socket's path: ember replaces only a socket left there."""
    r = run(["run", "--vsock", f"cid=3,uds={fifo}", "--kernel", guest("virtio")], timeout=HANG)
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert f"uds {fifo}: exists and is not a socket" in r.stderr
    assert os.path.exists(fifo)


@needs_kvm
def test_fifo_cpuid_cache_ignored(fifo):
    """EMBER_CPUID_CACHE at a FIFO: not a cache, so KVM is asked (and the
    fresh cache is renamed over it)."""
    r = run(["run", "--kernel", guest("hello")], timeout=HANG,
            env=dict(os.environ, EMBER_CPUID_CACHE=fifo))
    assert r.returncode == 0, r.stderr


@needs_kvm
def test_serial_fifo_with_reader(fifo):
    """A FIFO whose reader is there already is a fine serial output."""
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = run(["run", "--kernel", guest("hello"), "--serial", fifo], timeout=HANG)
        assert r.returncode == 0, r.stderr
        assert os.read(rd, 4096).startswith(b"Hello from ember guest")
    finally:
        os.close(rd)


@needs_kvm
def test_serial_to_dev_null():
    r = run(["run", "--kernel", guest("hello"), "--serial", "/dev/null"], timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""


# ---- block devices as drives (as QEMU and Firecracker take them) ----

@pytest.fixture
def loop_dev(tmp_path):
    """A loop device over a 256 KiB file: (device, backing file)."""
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("a loop device needs root and losetup")
    img = tmp_path / "disk.img"
    img.write_bytes(b"EMBER-MARKER\0" + bytes(256 * 1024 - 13))
    r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip(f"cannot make a loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev, img
    finally:
        subprocess.run(["losetup", "-d", dev])


@needs_kvm
def test_block_device_as_hvt_block(loop_dev):
    dev, img = loop_dev
    r = run(["run", f"--block:storage={dev}", "--", hvt("blk")], timeout=HANG)
    assert r.returncode == 0, r.stdout + r.stderr
    # The capacity is the device's (BLKGETSIZE64), not st_size (0).
    assert "capacity=262144 block_size=512" in r.stdout
    assert "blk: all ok" in r.stdout


@needs_kvm
def test_block_device_as_virtio_drive(loop_dev):
    dev, img = loop_dev
    r = run(["run", "--timeout", "30", "--drive", f"root,path={dev}", "--",
             guest("virtio"), "test=blk", "sector=2"], timeout=HANG)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("blk: capacity 512 sectors", "blk: sector0 EMBER-MARKER",
                 "blk: write/flush/read ok"):
        assert line in r.stdout, r.stdout


# ---- --timeout bounds start-up ----

def strace_delay(path, seconds):
    """strace arguments that hold ember's openat of path for seconds."""
    if not shutil.which("strace"):
        pytest.skip("no strace to delay a start-up step")
    return ["strace", "-f", "-qq", "-o", "/dev/null", "-P", path, "-e", "trace=openat",
            "-e", f"inject=openat:delay_enter={int(seconds * 1e6)}"]


def run_traced(prefix, args):
    r = subprocess.run(prefix + [EMBER] + args, capture_output=True, text=True,
                       timeout=HANG, errors="replace")
    if "strace:" in r.stderr and "ember" not in r.stderr:
        pytest.skip(f"strace cannot trace here: {r.stderr.strip()[:200]}")
    return r


@needs_kvm
def test_timeout_ends_a_slow_startup():
    kernel = guest("loop")
    r = run_traced(strace_delay(kernel, 3), ["run", "--kernel", kernel, "--timeout", "1"])
    assert r.returncode == EXIT_TIMEOUT, r.stderr
    assert "ember: timeout after 1 s during start-up (loading the kernel)" in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_timeout_counts_startup_in():
    """One --timeout for the whole run: 3 s of start-up leave the guest 1."""
    kernel = guest("loop")
    r = run_traced(strace_delay(kernel, 3),
                   ["run", "--kernel", kernel, "--timeout", "4", "--stats"])
    assert r.returncode == EXIT_TIMEOUT, r.stderr
    assert "ember: timeout after 4 s\n" in r.stderr  # the guest's timer, not start-up's
    assert "looping forever" in r.stdout
    # From vm_build() on (the delay is inside): about 4000 ms with the
    # deadline carried over, about 7000 if the guest got 4 s of its own.
    stop = float(re.search(r"stop ([0-9.]+) ms", r.stderr).group(1))
    assert stop < 5500, r.stderr


def test_fifo_ini_file_bounded_by_timeout(tmp_path, fifo):
    """config/ini.c reads the INI file with a plain fopen(): a FIFO there
    blocks, and --timeout (from the command line, armed before the file is
    read) ends it.  Once the INI reader refuses FIFOs, 121 is right too."""
    r = run(["run", fifo, "--kernel", guest("hello"), "--timeout", "1"], timeout=HANG)
    if r.returncode == EXIT_CONFIG:
        assert fifo in r.stderr
    else:
        assert r.returncode == EXIT_TIMEOUT, r.stderr
        assert "timeout after 1 s during start-up (reading the configuration)" in r.stderr


def test_fifo_state_file_bounded_by_timeout(tmp_path, fifo):
    """The snapshot's state file (snapshot/format.c opens it): as above."""
    r = run(["run", "--restore", fifo, "--memory-file", str(tmp_path / "mem"),
             "--timeout", "1"], timeout=HANG)
    if r.returncode == EXIT_CONFIG:
        assert fifo in r.stderr
    else:
        assert r.returncode == EXIT_TIMEOUT, r.stderr
        assert "timeout after 1 s during start-up (reading the configuration)" in r.stderr


@needs_kvm
def test_snapshot_paths(tmp_path, fifo):
    """A real snapshot, then a FIFO for its memory file (vm_snapshot.c's
    open: bounded by --timeout, or refused) and for a drive override
    (refused by blk_open)."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    sock = str(tmp_path / "api.sock")
    p = subprocess.Popen([EMBER, "run", "--kernel", guest("loop"), "--api-sock", sock,
                          "--drive", f"root,path={img}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        state, mem = str(tmp_path / "state"), str(tmp_path / "mem")
        r = run(["snapshot", "create", "--api-sock", sock, "--state", state, "--memory", mem],
                timeout=HANG)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        p.kill()
        p.wait()
    r = run(["run", "--restore", state, "--memory-file", fifo, "--use-saved-paths",
             "--timeout", "1"], timeout=HANG)
    if r.returncode == EXIT_CONFIG:
        assert fifo in r.stderr
    else:
        assert r.returncode == EXIT_TIMEOUT, r.stderr
        assert ("timeout after 1 s during start-up (mapping the snapshot's memory file)"
                in r.stderr), r.stderr
    r = run(["run", "--restore", state, "--memory-file", mem, "--drive", f"root,path={fifo}",
             "--timeout", "5"], timeout=HANG)
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert f"{fifo}: is a FIFO, not a regular file or a block device" in r.stderr


def test_snapshot_merge_fifo(tmp_path, fifo):
    mem = tmp_path / "mem"
    mem.write_bytes(bytes(4096))
    r = run(["snapshot", "merge", str(mem), fifo], timeout=5)
    assert r.returncode != 0 and fifo in r.stderr


# ---- the API: a FIFO must not stop it answering ----

def curl(sock, method, path, body=None, timeout=5):
    """(status, JSON or None); status 0 when no answer came in timeout s."""
    cmd = ["curl", "-s", "--max-time", str(timeout), "--unix-socket", sock, "-X", method,
           "-w", "\n%{http_code}", "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    text, _, code = r.stdout.rpartition("\n")
    return int(code or 0), (json.loads(text) if text.strip() else None)


@pytest.fixture
def api(tmp_path):
    if not shutil.which("curl"):
        pytest.skip("no curl")
    sock = str(tmp_path / "api.sock")
    p = subprocess.Popen([EMBER, "--api-sock", sock], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock)
            break
        except OSError:
            time.sleep(0.01)
    try:
        yield sock
    finally:
        p.kill()
        p.wait()


def test_api_boot_source_fifo(api, fifo):
    st, js = curl(api, "PUT", "/boot-source", {"kernel_image_path": fifo})
    assert st == 400 and fifo in js["fault_message"], (st, js)
    st, js = curl(api, "GET", "/")
    assert st == 200 and js["state"] == "Not started"


# A read-write drive's open (O_RDWR) of a FIFO does not wait on Linux: the
# API refuses it already; a read-only one's (O_RDONLY) waits for a writer.
@pytest.mark.parametrize("read_only", [
    False, True], ids=["read-write", "read-only"])
def test_api_drive_fifo(api, fifo, read_only):
    st, js = curl(api, "PUT", "/drives/root", {"drive_id": "root", "path_on_host": fifo,
                                               "is_root_device": True,
                                               "is_read_only": read_only})
    assert st == 400 and fifo in js["fault_message"], (st, js)
    st, js = curl(api, "GET", "/")
    assert st == 200 and js["state"] == "Not started"
