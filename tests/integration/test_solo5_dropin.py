"""ember as a drop-in for solo5-hvt (Solo5 v0.12's command line): a bare
kernel path, the unikernel's arguments after it, 4 GiB, sector sizes, the
tap's MTU, 63 devices, core files at an abort, the segment protections,
and ember run under the name solo5-hvt (its exit statuses).  Guests:
tests/guest/hvt/ (hello, halt, devices, many, protect, net), and ring I/O
(HVT_FEATURE_RING_IO).  Taps live in a network namespace each test makes;
only the ring tests send traffic, inside theirs (tap_echo.py there)."""
import contextlib
import os
import re
import shutil
import subprocess

import pytest

from conftest import EMBER, EXIT_CONFIG, EXIT_TRIPLE_FAULT, ip, needs_kvm, run, tap_echo
from test_hvt import hvt

pytestmark = needs_kvm


@pytest.fixture
def solo5_hvt(tmp_path):
    """ember under the name solo5-hvt (a symlink)."""
    link = tmp_path / "solo5-hvt"
    link.symlink_to(EMBER)
    return str(link)


def run_as(binary, args, timeout=60, prefix=()):
    return subprocess.run(list(prefix) + [binary] + list(args), capture_output=True, text=True,
                          timeout=timeout, errors="replace")


@contextlib.contextmanager
def netns_tap(mtu):
    """A network namespace of this test's with one tap in it (up, MTU
    mtu); yields (the `ip netns exec NS` prefix, the tap's name)."""
    if not shutil.which("ip"):
        pytest.skip("no ip(8)")
    ns = f"embs{os.getpid()}"
    if ip("netns", "add", ns).returncode:
        pytest.skip("cannot create a network namespace (needs CAP_SYS_ADMIN)")
    try:
        tap = "tap0"
        for cmd in (["tuntap", "add", "dev", tap, "mode", "tap"],
                    ["link", "set", tap, "mtu", str(mtu)], ["link", "set", tap, "up"]):
            r = ip("-n", ns, *cmd)
            if r.returncode:
                pytest.skip(f"ip -n {ns} {' '.join(cmd)}: {r.stderr.strip()}")
        yield ["ip", "netns", "exec", ns], tap
    finally:
        ip("netns", "del", ns)


def disk(tmp_path, name, size, first=b""):
    p = tmp_path / name
    p.write_bytes(first + bytes(size - len(first)))
    return str(p)


# ---- the command line ----

def test_bare_kernel_path_and_options_after_it_go_to_the_guest():
    r = run(["run", "--mem=64", hvt("hello"), "--solo5:quiet", "--mem=8", "x"])
    assert r.returncode == 0, r.stderr
    assert "cmdline: --solo5:quiet --mem=8 x\n" in r.stdout
    assert "mem_size=67108864" in r.stdout  # the --mem after the kernel was the guest's


def test_four_gib():
    r = run(["run", "--mem=4096", hvt("hello")])
    assert r.returncode == 0, r.stderr
    assert "mem_size=4294967296" in r.stdout
    assert "rsp=0xfffffff8" in r.stdout  # the stack at the top of the 4th GiB
    r = run(["run", "--mem=4098", hvt("hello")])
    assert r.returncode == EXIT_CONFIG
    assert "exceeds the max size 4294967296 bytes" in r.stderr


def test_malformed_mem():
    for bad in ("--mem=", "--mem=0", "--mem=1G", "--mem=-5"):
        r = run(["run", bad, hvt("hello")])
        assert r.returncode == EXIT_CONFIG, bad
        assert "Malformed argument to --mem" in r.stderr


def test_sector_size_and_tap_mtu(tmp_path):
    d0 = disk(tmp_path, "d0.img", 8192, b"\x11" * 16)
    d1 = disk(tmp_path, "d1.img", 512, b"\x22" * 16)
    with netns_tap(9000) as (ns, tap):
        r = run_as(EMBER, ["run", f"--block:disk0={d0}", "--block-sector-size:disk0=4096",
                           f"--block:disk1={d1}", f"--net:net0={tap}", hvt("devices")],
                   prefix=ns)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "dev 1 disk0 block attached=1 capacity=8192 block_size=4096" in r.stdout
    assert "dev 3 disk1 block attached=1 capacity=512 block_size=512" in r.stdout
    assert " mtu=9000" in r.stdout
    assert "disk0: " + "11" * 16 in r.stdout


def test_sector_size_refusals(tmp_path):
    d = disk(tmp_path, "d.img", 4096 + 512)
    base = ["run", f"--block:storage={d}"]
    r = run(base + ["--block-sector-size:storage=4096", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert "Backing storage size must be block aligned (4096 bytes)" in r.stderr
    r = run(base + ["--block-sector-size:storage=8192", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert "block aligned (8192 bytes)" in r.stderr
    for bad in ("1000", "256", "65536", "x"):
        r = run(base + [f"--block-sector-size:storage={bad}", hvt("blk")])
        assert r.returncode == EXIT_CONFIG, bad
        assert "power of two" in r.stderr


def test_bad_devices_get_solo5s_messages(tmp_path):
    r = run(["run", "--block:nosuch=/dev/null", hvt("hello")])
    assert r.returncode == EXIT_CONFIG
    assert "Resource not declared in manifest: 'nosuch'" in r.stderr
    r = run(["run", f"--block:storage={tmp_path}/missing.img", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert "Could not open block device" in r.stderr and "missing.img" in r.stderr


def test_63_block_devices(tmp_path):
    args = ["run"]
    for h in range(1, 64):
        args.append(f"--block:b{h}={disk(tmp_path, f'b{h}.img', 512, bytes([h]))}")
    r = run(args + [hvt("many")])
    assert r.returncode == 0, r.stderr + r.stdout
    assert "many: 63 devices ok" in r.stdout


# ---- core files ----

def test_core_file_at_abort_opens_in_gdb(tmp_path):
    gdb = shutil.which("gdb")
    r = run(["run", f"--dumpcore={tmp_path}", hvt("halt"), "status=255", "cookie=none"])
    assert r.returncode == 255, r.stderr
    cores = [p for p in os.listdir(tmp_path) if p.startswith("core.solo5-hvt.")]
    assert len(cores) == 1, r.stderr
    assert "dumpcore: dumping guest core to:" in r.stderr
    core = os.path.join(tmp_path, cores[0])
    with open(core, "rb") as f:
        head = f.read(18)
    assert head[:4] == b"\x7fELF" and head[16] == 4  # ET_CORE
    if not gdb:
        pytest.skip("no gdb (tests/install-deps.sh installs it)")
    g = subprocess.run([gdb, "-nx", "-batch", "-ex", "info registers rip", "-ex",
                        "x/2xb 0x100000", hvt("halt"), core], capture_output=True,
                       text=True, timeout=120)
    assert "<hvt_halt" in g.stdout, g.stdout + g.stderr  # rip: inside the guest's halt
    assert "0x100000 <_start>:\t0x48\t0x89" in g.stdout  # its code, from the core


def test_no_core_file_without_an_abort(tmp_path):
    r = run(["run", f"--dumpcore={tmp_path}", hvt("halt"), "status=3"])
    assert r.returncode == 3
    assert os.listdir(tmp_path) == []
    r = run(["run", f"--dumpcore={tmp_path}/nosuch", hvt("halt")])
    assert r.returncode == EXIT_CONFIG
    assert "dumpcore: cannot open dir" in r.stderr


# ---- the ELF segments' protections ----

@pytest.mark.parametrize("case,what", [
    ("write_text", "wrote to its code (.text, read-only)"),
    ("write_rodata", "wrote to its read-only data (.rodata)"),
    ("exec_data", "executed its data (not executable)"),
])
def test_protections_stop_the_guest(case, what):
    r = run(["run", hvt("protect"), case])
    assert r.returncode == EXIT_TRIPLE_FAULT, r.stdout + r.stderr
    assert f"protect: about to {case} at " in r.stdout
    addr = r.stdout.split(f"about to {case} at ")[1].split()[0]
    assert f"the guest {what} at {addr}" in r.stderr
    assert "survived" not in r.stdout


def test_protections_leave_a_well_behaved_guest_alone():
    r = run(["run", hvt("protect")])
    assert r.returncode == 0, r.stderr
    assert "nothing to break" in r.stdout


# ---- under the name solo5-hvt ----

def test_solo5_hvt_name_exit_statuses(solo5_hvt, tmp_path):
    r = run_as(solo5_hvt, [hvt("halt"), "status=121"])
    assert r.returncode == 121  # the guest's status, even where ember has a meaning for it
    r = run_as(solo5_hvt, ["--mem=16", "--", hvt("halt"), "status=0"])
    assert r.returncode == 0
    r = run_as(solo5_hvt, [hvt("protect"), "write_text"])
    assert r.returncode == 1  # a tender error: errx(1, ...)
    assert "wrote to its code" in r.stderr
    r = run_as(solo5_hvt, ["--bogus", hvt("hello")])
    assert r.returncode == 1
    assert "Invalid option: `--bogus'" in r.stderr and "usage: solo5-hvt" in r.stderr
    r = run_as(solo5_hvt, ["--mem=64"])
    assert r.returncode == 1 and "Missing KERNEL operand" in r.stderr
    r = run_as(solo5_hvt, ["--kernel", hvt("hello")])  # ember's own options are not solo5-hvt's
    assert r.returncode == 1 and "Invalid option" in r.stderr
    r = run_as(solo5_hvt, [hvt("hello")])
    assert r.returncode == 0 and "mem_size=536870912" in r.stdout  # solo5-hvt's 512 MiB


# ---- ring I/O (HVT_FEATURE_RING_IO): net.hvt `ring` moves its frames by
# the ring, net.hvt without it by hypercalls; both in a namespace of the
# test's own, with tap_echo.py there sending frames back ----

def ring_run(ns, tap, *args, binary=EMBER, timeout=60):
    opts = ["run"] if binary == EMBER else []
    return run_as(binary, opts + ["--mem=64", f"--net:service={tap}",
                                  "--net-mac:service=02:00:00:00:00:01", hvt("net")] + list(args),
                  prefix=ns, timeout=timeout)


@needs_kvm
@pytest.mark.parametrize("mode", ["ring", "hypercalls"])
def test_ring_offered_and_frames_both_ways(mode, solo5_hvt):
    """The boot info offers the ring (host_features bit 0, net_ring the
    top of RAM = mem_size); frames go out and come back by the ring when
    the guest takes it, by hypercalls when it does not."""
    with netns_tap(1500) as (ns, tap), tap_echo(tap, prefix=ns):
        r = ring_run(ns, tap, "count=6", *(["ring"] if mode == "ring" else []),
                     binary=solo5_hvt)
    assert r.returncode == 0, r.stdout + r.stderr
    feats, ring, mem = (int(x, 16) for x in re.search(
        r"host_features=(0x[0-9a-f]+) net_ring=(0x[0-9a-f]+) mem_size=(0x[0-9a-f]+)",
        r.stdout).groups())
    # 64 MiB less the 49280-byte ring, rounded down to a page
    assert (feats, ring, mem) == (1, 0x3ff3000, 0x3ff3000), r.stdout
    assert ("net: by ring" in r.stdout) == (mode == "ring")
    assert "net: empty read: AGAIN" in r.stdout
    assert "net: 6 of 6 echoed" in r.stdout, r.stdout


@needs_kvm
def test_no_net_device_no_ring():
    r = run(["run", "--mem=64", hvt("hello")])
    assert r.returncode == 0, r.stderr
    assert re.search(r"mem_size=(0x4000000|67108864)\b", r.stdout), r.stdout


@needs_kvm
def test_bad_ring_entries_fail_alone():
    """Reads of a bad GPA or handle (or a buffer a frame may not fit) commit
    EINVAL; bad writes and an unknown operation are passed over; the guest
    then echoes its frames by the ring as usual."""
    with netns_tap(1500) as (ns, tap), tap_echo(tap, prefix=ns):
        r = ring_run(ns, tap, "ring", "bad", "count=3")
    assert r.returncode == 0, r.stdout + r.stderr
    for case in ("GPA past RAM", "GPA across the end of RAM", "handle 0", "handle 63",
                 "buffer under MTU + 14"):
        assert f"net: bad ring read ({case}): EINVAL" in r.stdout, r.stdout
    assert "net: bad ring writes and an unknown operation: passed over" in r.stdout
    assert "net: 3 of 3 echoed" in r.stdout


@needs_kvm
@pytest.mark.parametrize("how", ["files", "stream"])
def test_ring_guest_snapshot_restores_with_the_ring(tmp_path, monkeypatch, how):
    """net.hvt `ring pause` snapshotted in POLL after it took the ring
    (to files, or as one stream, which a restore reads from stdin as a
    migration's receiver does);
    the restore registers the kick again and the guest's frames go out and
    come back by the ring."""
    import test_api
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    load = ["run", "--timeout", "30", "--use-saved-paths", "--restore"]
    with netns_tap(1500) as (ns, tap), tap_echo(tap, prefix=ns):
        inside = tmp_path / "ember-in-ns"
        inside.write_text("#!/bin/sh\nexec " + " ".join(ns) + f" {EMBER} \"$@\"\n")
        inside.chmod(0o755)
        monkeypatch.setattr(test_api, "EMBER", str(inside))
        e = test_api.Ember(tmp_path, run_args=[
            "--memory", "64", f"--net:service={tap}", "--timeout", "60", "--kernel", hvt("net"),
            "--cmdline", "ring pause count=4"], name="first")
        try:
            e.wait_output("net: pausing\n")
            if how == "stream":  # the source holds the tap: read the stream after it
                c = run([*"snapshot create --api-sock".split(), e.sock, "--to", str(state)])
                assert c.returncode == 0, c.stderr
            else:
                e.ok("PATCH", "/vm", {"state": "Paused"})
                e.ok("PUT", "/snapshot/create",
                     {"snapshot_path": str(state), "mem_file_path": str(mem)})
        finally:
            e.kill()
        assert "net: by ring" in e.stdout()
        if how == "files":
            r = run_as(EMBER, load + [str(state), "--memory-file", str(mem)], prefix=ns)
        else:
            with open(state, "rb") as stream:
                r = subprocess.run(list(ns) + [EMBER] + load + ["-"], stdin=stream,
                                   capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "net: pausing" not in r.stdout  # it went on from the snapshot
    assert "net: 4 of 4 echoed" in r.stdout, r.stdout
