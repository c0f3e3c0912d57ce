"""virtio-mmio devices end to end: tests/guest/virtio.c (a small polling
virtio driver in an integer-only test unikernel) against ember's block, net
and rng devices, a hostile driver's broken queues, and the configuration
spellings.  vsock has its own file (test_vsock.py).

Net tests use conftest's tap and echo fixtures."""
import os
import re
import struct
import subprocess
import time

import pytest

from conftest import EXIT_CONFIG, GUESTS, guest, needs_kvm, run

SECTOR = 512
MARKER = b"EMBER-MARKER"

pytestmark = needs_kvm


def vguest(*args, timeout=60, cmdline=""):
    """Run the virtio test guest with ember options args; cmdline goes to
    the guest (test=..., case=...)."""
    return run(["run", "--timeout", "30"] + list(args) + ["--", guest("virtio")] +
               cmdline.split(), timeout=timeout)


def disk(tmp_path, size=1 << 20, name="disk.img"):
    path = tmp_path / name
    path.write_bytes(MARKER + b"\0" + bytes(size - len(MARKER) - 1))
    return path


def pattern(seed, sector):
    """The guest's xorshift32 bytes for a written sector (virtio.c)."""
    x = ((seed * 2654435761 + sector) & 0xFFFFFFFF) | 1
    out = bytearray()
    for _ in range(SECTOR):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(x & 0xFF)
    return bytes(out)


# ---- discovery ----

def test_devices_announced_and_probed(tmp_path):
    """Drives, then nets, then vsock, then rng: one 4 KiB slot each from
    0xc0001000, GSIs from 5, on the command line as Firecracker does."""
    d0, d1 = disk(tmp_path, name="a.img"), disk(tmp_path, name="b.img")
    r = vguest("--drive", f"root,path={d0}", "--drive", f"data,path={d1}", "--rng",
               "--vsock", f"cid=3,uds={tmp_path}/v.sock", cmdline="test=probe")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [x for x in r.stdout.splitlines() if x.startswith("virtio: 0x")]
    assert lines == ["virtio: 0xc0001000 irq 5 id 2 block",
                     "virtio: 0xc0002000 irq 6 id 2 block",
                     "virtio: 0xc0003000 irq 7 id 19 vsock",
                     "virtio: 0xc0004000 irq 8 id 4 rng"], r.stdout


def test_cmdline_announcements_follow_user_args(tmp_path):
    r = run(["run", "--kernel", guest("cmdline"), "--cmdline", "console=ttyS0 a=b",
             "--drive", f"root,path={disk(tmp_path)}", "--rng"])
    assert r.returncode == 0, r.stderr
    assert ("cmdline: console=ttyS0 a=b virtio_mmio.device=4K@0xc0001000:5 "
            "virtio_mmio.device=4K@0xc0002000:6") in r.stdout


# ---- block ----

def test_block_read_write_flush_id(tmp_path):
    img = disk(tmp_path)
    r = vguest("--drive", f"root,path={img}", cmdline="test=blk sector=7 seed=3")
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("blk: capacity 2048 sectors", "blk: id root", "blk: sector0 EMBER-MARKER",
                 "blk: write/flush/read ok", "blk: out-of-range read refused"):
        assert line in r.stdout, r.stdout
    data = img.read_bytes()
    # what the guest wrote is on the host file, where it said, and only there
    assert data[7 * SECTOR:8 * SECTOR] == pattern(3, 7)
    assert data[:len(MARKER)] == MARKER
    assert data[8 * SECTOR:] == bytes(len(data) - 8 * SECTOR)


def test_block_read_only(tmp_path):
    img = disk(tmp_path)
    before = img.read_bytes()
    r = vguest("--drive", f"root,path={img},read_only=on", cmdline="test=blk ro=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "blk: write refused (read-only)" in r.stdout
    assert "blk: read-only feature set" in r.stdout
    assert img.read_bytes() == before


def test_block_from_ini_with_direct_io(tmp_path):
    img = disk(tmp_path)
    try:
        os.close(os.open(img, os.O_RDWR | os.O_DIRECT))
    except OSError as e:
        pytest.skip(f"{tmp_path} takes no O_DIRECT ({e.strerror})")
    ini = tmp_path / "vm.ini"
    ini.write_text(f"[vm]\nkernel = {guest('virtio')}\ncmdline = test=blk sector=2\n"
                   f"timeout = 30\n\n[drive.root]\npath = {img.name}\ndirect = on\n")
    r = run(["run", str(ini)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "blk: write/flush/read ok" in r.stdout
    assert img.read_bytes()[2 * SECTOR:3 * SECTOR] == pattern(1, 2)


def test_block_sequential_reads(tmp_path):
    img = disk(tmp_path, size=4 << 20)
    r = vguest("--drive", f"root,path={img}", cmdline="test=blk reads=64")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "blk: read 64 x 64 KiB" in r.stdout


@pytest.mark.parametrize("size,why", [
    (1000, "size 1000 is not a non-zero multiple of 512"),
    (0, "size 0 is not a non-zero multiple of 512"),
])
def test_block_bad_image_refused(tmp_path, size, why):
    img = tmp_path / "odd.img"
    img.write_bytes(bytes(size))
    r = vguest("--drive", f"root,path={img}", cmdline="test=blk")
    assert r.returncode == EXIT_CONFIG
    assert f"virtio-block root: {img}: {why}" in r.stderr


def test_block_missing_file_refused(tmp_path):
    r = vguest("--drive", f"root,path={tmp_path}/none.img", cmdline="test=blk")
    assert r.returncode == EXIT_CONFIG
    assert f"virtio-block root: {tmp_path}/none.img: No such file or directory" in r.stderr


# ---- net ----

def test_net_frames_echoed_through_tap(echo):
    r = vguest("--net", f"eth0,tap={echo},mac=02:00:00:00:00:42", cmdline="test=net count=4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "net: mac 02:00:00:00:00:42" in r.stdout
    for i in range(1, 5):
        assert f"net: echo ok {i}" in r.stdout


def test_net_missing_tap_refused():
    r = vguest("--net", "eth0,tap=embnosuch0", cmdline="test=net")
    assert r.returncode == EXIT_CONFIG
    assert "virtio-net eth0: tap embnosuch0: No such device" in r.stderr


# ---- rng ----

def test_rng_bytes():
    r = vguest("--rng", cmdline="test=rng")
    assert r.returncode == 0, r.stdout + r.stderr
    draws = re.findall(r"^rng: ([0-9a-f]{128})$", r.stdout, re.M)
    assert len(draws) == 2 and draws[0] != draws[1]
    assert "rng: ok" in r.stdout


def test_rng_rate_limited():
    """64 bytes a second with a 64-byte bucket: the guest's second draw
    waits for the refill.  Only a lower bound is checked (a slow host is
    never a failure)."""
    t = time.monotonic()
    r = vguest("--rng=bandwidth_size=64,bandwidth_refill=1s", cmdline="test=rng")
    took = time.monotonic() - t
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rng: ok" in r.stdout
    assert took >= 0.8, took


# ---- a hostile driver: the monitor lives on and says what happened ----

HOSTILE = {
    "loop": "chain from descriptor 0 loops or is longer than the queue (16)",
    "oob": "descriptor 1: buffer 0x300000000+512 is not in guest RAM",
    "hole": "descriptor 1: buffer 0xd0000000+512 is not in guest RAM",
    "huge": "+4294967280 is not in guest RAM",  # the buffer's address is the image's
    "badnext": "descriptor 0: next 19 is out of range (queue size 16)",
    "wrongdir": "descriptor 1 is driver-readable after a device-writable one",
    "availjump": "available index 21 is 21 ahead of the device (queue size 16)",
    "badhead": "available ring slot 0 names descriptor 18 (queue size 16)",
    "ringoob": "descriptor table at 0x300000000 (256 bytes) is not in guest RAM",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_queue_needs_reset_then_recovers(tmp_path, case):
    r = vguest("--drive", f"root,path={disk(tmp_path)}", cmdline=f"test=hostile case={case}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ember: virtio-block root: queue 0: " in r.stderr
    assert HOSTILE[case] in r.stderr
    assert "device needs reset (the guest must reset it)" in r.stderr
    assert f"hostile: {case}: needs reset" in r.stdout
    assert f"hostile: {case}: recovered" in r.stdout
    # logged once per breakage, not once per notification
    assert r.stderr.count("needs reset") == 1, r.stderr


def test_hostile_notify_on_unconfigured_queue_ignored(tmp_path):
    r = vguest("--drive", f"root,path={disk(tmp_path)}",
               cmdline="test=hostile case=unconfigured")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "notify on queue 7, which is not a queue of this device; ignored" in r.stderr
    assert "hostile: unconfigured: ignored" in r.stdout
    assert "hostile: unconfigured: recovered" in r.stdout


@pytest.mark.parametrize("case,message", [
    ("wrongdir", "tx queue: request 0 has device-writable buffers"),
    ("loop", "tx queue: chain from descriptor 0 loops"),
    ("oob", "tx queue: descriptor 0: buffer 0x300000000+72 is not in guest RAM"),
])
def test_hostile_net(tap, case, message):
    r = vguest("--net", f"eth0,tap={tap}", cmdline=f"test=hostile dev=net case={case}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ember: virtio-net eth0: {message}" in r.stderr
    assert f"hostile: {case}: recovered" in r.stdout


def test_hostile_rng_chain(tmp_path):
    r = vguest("--rng", cmdline="test=hostile dev=rng case=loop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ember: virtio-rng: queue 0: chain from descriptor 0 loops" in r.stderr
    assert "hostile: loop: recovered" in r.stdout


# ---- configuration ----

def test_devices_need_the_irqchip(tmp_path):
    r = vguest("--irqchip", "off", "--rng", cmdline="test=rng")
    assert r.returncode == EXIT_CONFIG
    assert "virtio devices need the irqchip (irqchip = off)" in r.stderr


def test_hvt_guests_have_no_virtio_devices():
    hello = os.path.join(GUESTS, "hvt", "hello.hvt")
    r = run(["run", "--rng", "--", hello])
    assert r.returncode == EXIT_CONFIG
    assert "[rng]: hvt unikernels have no virtio devices" in r.stderr


@pytest.mark.parametrize("opt,message", [
    ("--drive=,path=/x", "--drive ,path=/x: no device ID"),
    ("--drive=root,read_only=maybe", "--drive root: read_only: \"maybe\" is not a boolean"),
    ("--drive=root,size=1G", "--drive root: size: unknown key (known: path, read_only, direct"),
    ("--drive=root,path", "--drive: \"path\" is not key=value"),
    ("--net=eth0,mac=01:00:00:00:00:01", "is a multicast address"),
    ("--vsock=cid=2,uds=/tmp/x", "\"2\" is not a guest CID: must be 3..4294967294"),
    ("--vsock=cid=3", "[vsock]: no uds given (uds = PATH)"),
    ("--rng=bandwidth_size=lots", "\"lots\" is not a size in bytes"),
    ("--rng=ops_refill=soon", "\"soon\" is not a duration"),
])
def test_bad_device_options(opt, message):
    r = run(["run", opt, "--", guest("hello")])
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert message in r.stderr


def test_bad_ini_device_section(tmp_path):
    ini = tmp_path / "vm.ini"
    ini.write_text(f"[vm]\nkernel = {guest('hello')}\n\n[vsock]\ncid = 3\nport = 5\n")
    r = run(["run", str(ini)])
    assert r.returncode == EXIT_CONFIG
    assert f"{ini}:6: [vsock] port: unknown key (known: cid, uds)" in r.stderr


def test_unused_devices_leave_the_guest_alone(tmp_path):
    """A guest that never touches its devices runs as without them."""
    r = run(["run", "--kernel", guest("exit_status"), "--cmdline", "status=9",
             "--drive", f"root,path={disk(tmp_path)}", "--rng"])
    assert r.returncode == 9, r.stderr
