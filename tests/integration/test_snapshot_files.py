"""Snapshots under stress: one snapshot restored several times at once,
a kill -9 at each step of writing one (injected with strace), and every
kind of bad snapshot refused, by `ember run --restore` (exit 121) and by
PUT /snapshot/load (400) with ember left up for a good load.

The state file's layout (snapshot/snapshot.h): a 64-byte header (magic,
version u32 at 8, arch u32 at 12, ...), sections {u32 tag, u32 index, u64
len, data padded to 8}, and a CRC32 (zlib's) of everything before it."""
import os
import re
import shutil
import struct
import subprocess
import time
import zlib

import pytest

from conftest import EMBER, EXIT_CONFIG, guest, needs_kvm, run
from test_api import Ember
from test_snapshot_api import COUNT_TO, count_and_snapshot, counts

pytestmark = needs_kvm


def sections(data):
    """{(tag, index): (offset of the data, length)} of a state file."""
    nr = struct.unpack_from("<I", data, 56)[0]
    out, off = {}, 64
    for _ in range(nr):
        tag, index, n = struct.unpack_from("<4sIQ", data, off)
        out[(tag.decode(), index)] = (off + 16, n)
        off += 16 + ((n + 7) & ~7)
    return out


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def reseal(data):
    """The state file with its CRC trailer recomputed."""
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """One snapshot of the counting guest: (output before it, state, mem)."""
    d = tmp_path_factory.mktemp("snap")
    return count_and_snapshot(d, at=100)


def restore(state, mem, *extra, timeout=60):
    return run(["run", "--restore", str(state), "--memory-file", str(mem), "--timeout", "30"]
               + list(extra), timeout=timeout)


# ---- one snapshot, several guests ----

def test_restored_four_times_at_once(snapshot, tmp_path):
    first, state, mem = snapshot
    procs = [subprocess.Popen(["/bin/sh", "-c", 'exec "$0" run --restore "$1" --memory-file "$2" '
                               '--timeout 30 > "$3"', EMBER, str(state),
                               str(mem), str(tmp_path / f"out{i}")]) for i in range(4)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    for i in range(4):
        # each counts on from the snapshot by itself: nothing shared
        assert counts(first + (tmp_path / f"out{i}").read_text())[-1] == COUNT_TO


# ---- a kill at each step of writing ----

def _snapshot_and_kill(tmp_path, syscall, when):
    """Snapshot A of the counting guest, resume it, then snapshot B to the
    same paths while strace kills ember at the when-th `syscall`.
    Returns (output at A, output at B, state, mem)."""
    if not shutil.which("strace"):
        pytest.skip("no strace to inject the kill")
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    e = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline",
                                  f"count={COUNT_TO}", "--timeout", "60"], name="victim")
    try:
        e.wait_output("count 100\n")
        body = {"snapshot_path": str(state), "mem_file_path": str(mem)}
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", body)
        at_a = e.stdout()
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        e.wait_output("count 200\n")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        tr = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(e.p.pid),
                               "-e", f"inject={syscall}:signal=KILL:when={when}"],
                              stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # attached (strace has no "ready" signal)
        if tr.poll() is not None:
            pytest.skip(f"strace cannot attach here: {tr.stderr.read().strip()}")
        e.curl("PUT", "/snapshot/create", body)
        e.wait(timeout=10)
        tr.wait(timeout=10)
    finally:
        e.kill()
    return at_a, e.stdout(), state, mem


# strace's kill lands on entry to the syscall, which then never runs
# (test_snapshot.py checks the files each step leaves behind).
@pytest.mark.parametrize("syscall,when", [
    ("openat", 1),  # before anything of B is written
    ("fsync", 1),   # B's memory written to its temp file, not synced
    ("rename", 1),  # B's memory not yet under <mem>.next: A loads
    ("rename", 2),  # B's memory under <mem>.next, its state file not committed: A loads
    ("rename", 3),  # B's state committed, its memory still under <mem>.next: B loads
])
def test_kill_while_writing_leaves_a_whole_snapshot(tmp_path, syscall, when):
    at_a, out, state, mem = _snapshot_and_kill(tmp_path, syscall, when)
    r = restore(state, mem)
    assert r.returncode == 0, r.stderr
    after = re.findall(r"count (\d+)\n", r.stdout)
    assert after, r.stdout[-200:]
    first = int(after[0])
    # The restored guest starts right after the snapshot that was whole
    # (B only once its state file was committed: the third rename): with
    # the line after its last whole one, or the one after that when the
    # pause split a line (the restore finishes it without "count").  How
    # far it counted before each pause depends on the machine: the
    # outputs at A and B say where.
    def last(text):
        return max([int(n) for n in re.findall(r"count (\d+)\n", text)] or [0])
    whole = out if (syscall, when) == ("rename", 3) else at_a
    assert first in (last(whole) + 1, last(whole) + 2), (first, last(at_a), last(out))
    before = [int(n) for n in re.findall(r"count (\d+)\n", out)]
    if first - 1 not in before:
        # B, paused mid-line: the line is split between the two runs,
        # whose raw outputs must then count on without a gap
        counts(out + r.stdout)
    assert [int(n) for n in after] == list(range(first, COUNT_TO + 1))


# ---- bad snapshots ----

def _bad_copy(tmp_path, snapshot, how):
    """A copy of the snapshot's files, damaged as named; (state, mem, message)."""
    _, state, mem = snapshot
    data, s, m = state.read_bytes(), tmp_path / "bad.state", tmp_path / "bad.mem"
    shutil.copy(mem, m)
    msg = None
    if how == "truncated-header":
        data = data[:40]
        msg = "short file: 40 bytes"
    elif how == "truncated-middle":
        data = data[:len(data) // 2]
    elif how == "flipped-byte":
        b = bytearray(data)
        b[200] ^= 0x40
        data = bytes(b)
        msg = "CRC"
    elif how == "version":
        data = reseal(data[:8] + struct.pack("<I", 7) + data[12:])
        msg = "format version 7, this ember reads 3"
    elif how == "arch":
        data = reseal(data[:12] + struct.pack("<I", 9) + data[16:])
        msg = "arch"
    elif how == "other-memory":
        with open(m, "r+b") as f:
            f.seek(4096 * 300)
            f.write(b"\x01" * 4096)
            f.seek(0)
            f.write(b"\x02" * 64)
        msg = "does not belong to state file"
    elif how == "memory-size":
        os.truncate(m, os.path.getsize(m) + 4096)
        msg = "its size is not the snapshot's"
    elif how == "missing-memory":
        os.unlink(m)
        msg = "No such file or directory"
    s.write_bytes(data)
    return s, m, msg


BAD = ["truncated-header", "truncated-middle", "flipped-byte", "version", "arch",
       "other-memory", "memory-size", "missing-memory"]


@pytest.mark.parametrize("how", BAD)
def test_bad_snapshot_refused_by_run(tmp_path, snapshot, how):
    s, m, msg = _bad_copy(tmp_path, snapshot, how)
    r = restore(s, m)
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stderr)
    assert "bad.state" in r.stderr or "bad.mem" in r.stderr, r.stderr
    if msg:
        assert msg.lower() in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("how", ["flipped-byte", "version", "other-memory", "missing-memory"])
def test_bad_snapshot_refused_by_api_which_stays_up(tmp_path, snapshot, how):
    first, state, mem = snapshot
    s, m, msg = _bad_copy(tmp_path, snapshot, how)
    api = Ember(tmp_path)
    try:
        st, js = api.curl("PUT", "/snapshot/load", {"snapshot_path": str(s),
                                                    "mem_file_path": str(m),
                                                    "resume_vm": True})
        assert st == 400 and set(js) == {"fault_message"}, (st, js)
        if msg:
            assert msg.lower() in js["fault_message"].lower(), js
        assert api.curl("GET", "/")[1]["state"] == "Not started"
        # the same ember then loads a good snapshot and the guest counts on
        api.ok("PUT", "/snapshot/load", {"snapshot_path": str(state), "mem_file_path": str(mem),
                                         "resume_vm": True})
        assert api.wait(timeout=30) == 0
        assert counts(first + api.stdout())[-1] == COUNT_TO
    finally:
        api.kill()


def test_missing_cpu_feature_refused_by_name(tmp_path, snapshot):
    """The guest's CPUID (section CPID: struct kvm_cpuid2 {u32 nent, u32
    padding, entries of 40 bytes: function, index, flags, eax, ebx, ecx,
    edx, padding[3]}) given AVX512F (leaf 7 EBX bit 16), which this host's
    KVM does not offer: the restore names the feature."""
    _, state, mem = snapshot
    data = bytearray(state.read_bytes())
    off, n = sections(bytes(data))[("CPID", 0)]
    nent = struct.unpack_from("<I", data, off)[0]
    for i in range(nent):
        e = off + 8 + 40 * i
        function, index = struct.unpack_from("<II", data, e)
        if function == 7 and index == 0:
            ebx = struct.unpack_from("<I", data, e + 16)[0]
            if ebx & (1 << 16):
                pytest.skip("this host offers AVX512F: no feature to take away")
            struct.pack_into("<I", data, e + 16, ebx | (1 << 16))
            break
    else:
        pytest.skip("no CPUID leaf 7 in the snapshot")
    # the header's CPUID signature (FNV-1a of the entries, at 40) follows
    struct.pack_into("<Q", data, 40, fnv1a(bytes(data[off + 8:off + 8 + 40 * nent])))
    s = tmp_path / "cpuid.state"
    s.write_bytes(reseal(bytes(data)))
    r = restore(s, mem)
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert "lacks CPU features the guest was given" in r.stderr
    assert "avx512f" in r.stderr.lower(), r.stderr


# ---- save -> restore -> save ----

OFFSETS_C = r"""
#include <stddef.h>
#include <stdio.h>
#include "vcpu/vcpu.h"
int main(void)
{
	printf("clock %zu %zu\n", offsetof(struct vm_kvm_state, clock),
	       sizeof(struct kvm_clock_data));
	printf("pit %zu %zu %zu\n", offsetof(struct vm_kvm_state, pit),
	       offsetof(struct kvm_pit_channel_state, count_load_time),
	       sizeof(struct kvm_pit_channel_state));
	printf("lapic %zu\n", offsetof(struct vcpu_state, lapic));
	printf("events %zu\n", offsetof(struct vcpu_state, events));
	printf("msrs %zu %zu\n", offsetof(struct vcpu_state, nr_msrs),
	       offsetof(struct vcpu_state, msrs));
	return 0;
}
"""


@pytest.fixture(scope="module")
def offsets(tmp_path_factory):
    """Where the fields that move by themselves sit in the records, from the
    headers themselves (a tiny program compiled here)."""
    d = tmp_path_factory.mktemp("offsets")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    (d / "o.c").write_text(OFFSETS_C)
    r = subprocess.run(["cc", "-I", root, "-o", str(d / "o"), str(d / "o.c")],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot compile the offsets helper: {r.stderr[:200]}")
    out = subprocess.run([str(d / "o")], capture_output=True, text=True).stdout.split("\n")
    return {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out if line}


def masked(data, offsets):
    """Each section's bytes with the fields that advance on their own zeroed:
    kvmclock, the PIT's count load times, the guest's TSC MSR, the LAPIC's
    timer current count (TMCCT, register 0x390)."""
    out = {}
    for (tag, index), (off, n) in sections(data).items():
        if tag == "MEMF":
            continue  # which file the memory went to: another one each time
        b = bytearray(data[off:off + n])
        if tag == "KVMS":
            c, cn = offsets["clock"]
            b[c:c + cn] = bytes(cn)
            pit, load, chan = offsets["pit"]
            for ch in range(3):
                at = pit + ch * chan + load
                b[at:at + 8] = bytes(8)
        if tag == "VCPU":
            # An exception KVM had queued but not yet delivered when the vCPU
            # parked ("pending") comes back from the restore as "injected":
            # the same exception, delivered at the next entry.  Compare the
            # two flags as one.
            ev = offsets["events"][0]
            b[ev] = 1 if (b[ev] or b[ev + 3]) else 0
            b[ev + 3] = 0
            lapic = offsets["lapic"][0]
            b[lapic + 0x390:lapic + 0x394] = bytes(4)
            nr_at, msrs = offsets["msrs"]
            for i in range(struct.unpack_from("<I", b, nr_at)[0]):
                at = msrs + 16 * i
                if struct.unpack_from("<I", b, at)[0] == 0x10:  # IA32_TSC
                    b[at + 8:at + 16] = bytes(8)
        out[(tag, index)] = bytes(b)
    return out


@pytest.mark.parametrize("vcpus", ["1", "2"])  # 2: with the irqchip (PIC, IOAPIC, PIT, LAPICs)
def test_save_restore_save_same_state(tmp_path, offsets, vcpus):
    _, a_state, mem = count_and_snapshot(tmp_path, "--vcpus", vcpus, at=50)
    b_state, b_mem = tmp_path / "b.state", tmp_path / "b.mem"
    e = Ember(tmp_path, run_args=["--restore", str(a_state), "--memory-file", str(mem),
                                  "--paused"], name="again")
    try:
        assert e.curl("GET", "/")[1]["state"] == "Paused"
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(b_state),
                                         "mem_file_path": str(b_mem)})
    finally:
        e.kill()
    a, b = a_state.read_bytes(), b_state.read_bytes()
    assert a[:48] == b[:48]  # the header up to created_ns: same memory digest, CPUID
    ma, mb = masked(a, offsets), masked(b, offsets)
    assert sorted(ma) == sorted(mb)
    differ = {k: [i for i in range(len(ma[k])) if ma[k][i] != mb[k][i]][:16]
              for k in ma if ma[k] != mb[k]}
    assert not differ, f"sections (byte offsets) that changed across save -> restore -> save: {differ}"
    assert mem.read_bytes() == b_mem.read_bytes()


# ---- a Solo5 hvt guest with a block device ----

def test_hvt_block_written_before_read_after(tmp_path):
    """blk.hvt's pause mode writes its pattern, then waits in POLL (which a
    pause interrupts); snapshot there, kill, restore onto a copy of the
    disk (--drive overrides the path): what it wrote before the snapshot it
    reads back after, from the copy."""
    hvt = os.path.join(os.path.dirname(guest("hello")), "hvt", "blk.hvt")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 1024))
    state, mem = tmp_path / "hvt.state", tmp_path / "hvt.mem"
    e = Ember(tmp_path, run_args=["--block:storage=" + str(disk), "--timeout", "60",
                                  "--kernel", hvt, "--cmdline", "pause"], name="hvt")
    try:
        e.wait_output("blk: written\n")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(state),
                                         "mem_file_path": str(mem)})
    finally:
        e.kill()
    assert "read back" not in e.stdout()
    copy = tmp_path / "copy.img"
    shutil.copy(disk, copy)
    disk.write_bytes(bytes(64 * 1024))  # the original is wiped: the copy must be read
    r = restore(state, mem, "--drive", f"storage,path={copy}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "blk: read back ok" in r.stdout
