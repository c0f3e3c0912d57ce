"""Snapshots, the issue's remaining checks, where test_snapshot_files.py
leaves them loose:

- a kill -9 at each step of writing a snapshot (strace-injected at the
  syscall's entry, so the syscall itself never runs): which snapshot must
  come back (A before the state file's rename, B after it), what the kill
  left on disk, and that the restored guest counts on from exactly that
  snapshot's number; where B's memory was left under "<mem>.next", a
  second restore still loads once the first moved it into place;
- a Solo5 hvt guest (no irqchip, an hvt block device) through save ->
  restore -> save: identical state, the same memory, and the second
  snapshot still reads back from its disk what the first run wrote;
- one snapshot loaded four times at once by both ways in (`ember run
  --restore`, with and without --memory-copy, and PUT /snapshot/load):
  four independent guests, and the snapshot's files unchanged after;
- every bad snapshot refused by `ember run --restore` (121) and by one
  fresh `ember --api-sock` (400 + fault_message, still "Not started" after
  each, then a good load counts on): truncations at several cuts, bad
  magic, unknown flags, a wrong section count, a duplicate or missing
  section, another vCPU count, a damaged CPUID section, CPU features this
  host lacks (named), and memory from another snapshot of the same VM or
  of another size.

The state file (snapshot/snapshot.h): a 64-byte header (magic, u32
version @8, arch @12, nr_vcpus @16, flags @20, u64 mem_size @24,
mem_digest @32, cpuid_sig @40, created_ns @48, u32 nr_sections @56),
sections {u32 tag, u32 index, u64 len, data zero-padded to 8}, a CRC-32
(zlib's) of all before it."""
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import zlib

import pytest

from conftest import EMBER, EXIT_CONFIG, GUESTS, guest, needs_kvm, run
from test_api import Ember
from test_snapshot_files import fnv1a, masked, offsets, reseal  # noqa: F401 (fixture)

pytestmark = needs_kvm

COUNT = 400  # the counting guest's last line
# Its pause between lines (loop iterations; the default 2,000,000 is ~0.7 ms
# here): ten times the default leaves seconds between a test seeing line 20
# and the guest's end at COUNT, so a slow or busy machine's latency between
# the two cannot let the guest finish before the test pauses it.
SPIN = 20000000


def parse(data):
    """(header dict, [(tag, index, bytes)...]) of a state file, checking
    what a reader must: magic, CRC, sections ending at the trailer, and
    the header's section count."""
    assert data[:8] == b"EMBRSNAP"
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    assert crc == zlib.crc32(data[:-4]) & 0xFFFFFFFF, "CRC trailer"
    names = ("version", "arch", "nr_vcpus", "flags", "mem_size", "mem_digest", "cpuid_sig",
             "created_ns", "nr_sections", "reserved")
    hdr = dict(zip(names, struct.unpack_from("<4I4Q2I", data, 8)))
    secs, off = [], 64
    while off < len(data) - 4:
        tag, index, n = struct.unpack_from("<4sIQ", data, off)
        secs.append((tag.decode(), index, data[off + 16:off + 16 + n]))
        assert not any(data[off + 16 + n:off + 16 + ((n + 7) & ~7)]), "padding is zero"
        off += 16 + ((n + 7) & ~7)
    assert off == len(data) - 4 and len(secs) == hdr["nr_sections"]
    return hdr, secs


def build(hdr_bytes, secs):
    """A state file from a header's bytes and sections, nr_sections and
    CRC made to match (what a writer bug, not a torn write, would give)."""
    body = b"".join(struct.pack("<4sIQ", t.encode(), i, len(d)) + d + bytes(-len(d) % 8)
                    for t, i, d in secs)
    h = hdr_bytes[:56] + struct.pack("<I", len(secs)) + hdr_bytes[60:64]
    return reseal(h + body + b"\0\0\0\0")


def last_count(text):
    nums = re.findall(r"count (\d+)\n", text)
    return int(nums[-1]) if nums else 0


def counts_on(before, after):
    """The output up to a snapshot joined with a restore's output counts
    1..COUNT, no line lost or repeated (a pause may fall inside a line:
    the restore prints the rest of it), and the restore printed a line."""
    nums = [int(n) for n in re.findall(r"count (\d+)\n", before + after)]
    bad = [(i + 1, n) for i, n in enumerate(nums) if n != i + 1]
    assert not bad, f"first out of order (want, got): {bad[:3]}; restored: {after[:120]!r}"
    assert nums[-1:] == [COUNT] and re.search(r"count \d+\n", after), after[-120:]


def restore(state, mem, *extra, limit=30):
    return run(["run", "--restore", str(state), "--memory-file", str(mem), "--timeout",
                str(limit)] + list(extra), timeout=60)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two snapshots of one counting guest, A then (resumed) B, to other
    paths: {"a": (state, mem, out), "b": (state, mem, out)}, out the
    guest's output up to each."""
    d = tmp_path_factory.mktemp("two")
    e = Ember(d, run_args=["--kernel", guest("counter"), "--cmdline", f"count={COUNT} spin={SPIN}",
                           "--timeout", "60"], name="two")
    out = {}
    try:
        for name, at in (("a", 30), ("b", 80)):
            e.wait_output(f"count {at}\n")
            e.ok("PATCH", "/vm", {"state": "Paused"})
            s, m = d / f"{name}.state", d / f"{name}.mem"
            e.ok("PUT", "/snapshot/create", {"snapshot_path": str(s), "mem_file_path": str(m)})
            out[name] = (s, m, e.stdout())
            e.ok("PATCH", "/vm", {"state": "Resumed"})
    finally:
        e.kill()
    return out


# ---- a kill at each step of writing snapshot B over snapshot A ----

# The vmm thread's syscalls for one snapshot (strace of PUT /snapshot/create):
#   openat(<mem>.next.tmp-PID)  pwrite64...  fsync#1  rename#1 -> <mem>.next
#   openat(dir) fsync#2(dir)  openat(<state>.tmp-PID)  write#1..3  fsync#3
#   rename#2 -> <state> (the commit)  fsync#4(dir)  rename#3 <mem>.next -> <mem>
#   fsync#5(dir)
# strace counts per thread; the kill lands at the syscall's entry.
KILL_STEPS = [
    # syscall, n, snapshot that must load, what the kill leaves beside the pair
    ("openat", 1, "A", set()),                          # nothing of B yet
    ("pwrite64", 2, "A", {"mem.tmp"}),                  # B's memory half written
    ("fsync", 1, "A", {"mem.tmp"}),                     # ... written, not synced
    ("rename", 1, "A", {"mem.tmp"}),                    # ... synced, not renamed
    ("fsync", 2, "A", {"mem.next"}),                    # B's memory whole, no state
    ("write", 2, "A", {"mem.next", "state.tmp"}),       # B's state half written
    ("rename", 2, "A", {"mem.next", "state.tmp"}),      # ... whole, not committed
    ("fsync", 4, "B", {"mem.next"}),                    # committed; memory under .next
    ("rename", 3, "B", {"mem.next"}),                   # ... folder synced
    ("fsync", 5, "B", set()),                           # B whole, folder not synced
]


def leftovers(d):
    kinds = set()
    for p in os.listdir(d):
        if re.fullmatch(r"vm\.mem\.next\.tmp-\d+", p):
            kinds.add("mem.tmp")
        elif p == "vm.mem.next":
            kinds.add("mem.next")
        elif re.fullmatch(r"vm\.state\.tmp-\d+", p):
            kinds.add("state.tmp")
    return kinds


def traced(pid, timeout=5):
    """Wait until every thread of pid has a tracer (strace attached)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tids = os.listdir(f"/proc/{pid}/task")
        tracers = []
        for t in tids:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                tracers += [ln.split()[1] for ln in f if ln.startswith("TracerPid:")]
        if tracers and all(t != "0" for t in tracers):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("syscall,when,which,left", KILL_STEPS,
                         ids=[f"{s}-{n}" for s, n, _, _ in KILL_STEPS])
def test_kill_at_each_step_of_writing(tmp_path, syscall, when, which, left):
    if not shutil.which("strace"):
        pytest.skip("no strace to inject the kill")
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    body = {"snapshot_path": str(state), "mem_file_path": str(mem)}
    e = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline", f"count={COUNT} spin={SPIN}",
                                  "--timeout", "60"], name="victim")
    tr = None
    try:
        e.wait_output("count 20\n")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", body)
        out = {"A": e.stdout()}
        a_bytes = state.read_bytes()
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        e.wait_output(f"count {last_count(out['A']) + 30}\n")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        out["B"] = e.stdout()
        tr = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(e.p.pid),
                               "-e", f"trace={syscall}",
                               "-e", f"inject={syscall}:signal=KILL:when={when}"],
                              stderr=subprocess.PIPE, text=True)
        if not traced(e.p.pid) or tr.poll() is not None:
            tr.kill()
            pytest.skip(f"strace cannot attach here: {tr.communicate()[1].strip()[:200]}")
        e.curl("PUT", "/snapshot/create", body)  # no answer: ember dies in it
        rc = e.wait(timeout=10)
        tr.wait(timeout=10)
    finally:
        if tr and tr.poll() is None:
            tr.kill()
            tr.wait()
        e.kill()
    assert rc == -signal.SIGKILL, f"strace's kill at {syscall} #{when} did not land (rc {rc})"
    assert leftovers(tmp_path) == left, sorted(os.listdir(tmp_path))
    assert (state.read_bytes() == a_bytes) == (which == "A")
    for attempt in range(2 if "mem.next" in left and which == "B" else 1):
        r = restore(state, mem)
        assert r.returncode == 0, r.stderr
        counts_on(out[which], r.stdout)
    if which == "B":  # the first restore finished the move
        assert not (tmp_path / "vm.mem.next").exists()


# ---- an hvt guest with a block device: save -> restore -> save ----

def hvt_snapshot(tmp_path, state, mem):
    """blk.hvt `pause` on a fresh disk, snapshotted in POLL after it wrote
    ("blk: written"); returns the disk image's path."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(64 * 1024))
    blk = os.path.join(GUESTS, "hvt", "blk.hvt")
    e = Ember(tmp_path, run_args=["--block:storage=" + str(img), "--timeout", "60", "--kernel",
                                  blk, "--cmdline", "pause"], name="first")
    try:
        e.wait_output("blk: written\n")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(state), "mem_file_path": str(mem)})
    finally:
        e.kill()
    return img


def test_hvt_save_restore_save_and_read_back(tmp_path, offsets):
    """blk.hvt `pause` writes its pattern to the disk, says "blk: written"
    and waits in POLL: snapshot A there, kill; restore A paused (the same
    disk, no override) and snapshot B at once; A and B hold the same state
    (hvt: no irqchip, an HVTG record), the same memory; B restored reads
    back what the first run wrote."""
    a_s, a_m, b_s, b_m = (tmp_path / n for n in ("a.state", "a.mem", "b.state", "b.mem"))
    img = hvt_snapshot(tmp_path, a_s, a_m)
    # No --timeout: an override is recorded in CONF, which must not move.
    e = Ember(tmp_path, run_args=["--restore", str(a_s), "--memory-file", str(a_m), "--paused",
                                  "--use-saved-paths"],
              name="again")
    try:
        assert e.curl("GET", "/")[1]["state"] == "Paused"
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(b_s), "mem_file_path": str(b_m)})
    finally:
        e.kill()
    assert e.stdout() == "", "a paused restore ran the guest"
    a, b = a_s.read_bytes(), b_s.read_bytes()
    (ha, sa), (hb, sb) = parse(a), parse(b)
    assert {t for t, _, _ in sa} >= {"CONF", "CPID", "KVMS", "VCPU", "UART", "HVTG", "MEMF",
                                     "MEMH"}
    # The header moves only in created_ns (and the CRC, which covers it).
    assert {**ha, "created_ns": 0} == {**hb, "created_ns": 0}, (ha, hb)
    assert ha["version"] == 3 and ha["nr_vcpus"] == 1 and ha["flags"] == 0
    assert [(t, i) for t, i, _ in sa] == [(t, i) for t, i, _ in sb], "section order"
    ka = dict(((t, i), d) for t, i, d in sa)
    assert struct.unpack_from("<I", ka[("KVMS", 0)], 0)[0] == 0, "an hvt VM has no irqchip"
    ma, mb = masked(a, offsets), masked(b, offsets)
    differ = {k: [i for i in range(len(ma[k])) if ma[k][i] != mb[k][i]][:16]
              for k in ma if ma[k] != mb[k]}
    assert not differ, f"sections (byte offsets) changed by save -> restore -> save: {differ}"
    assert sha(a_m) == sha(b_m)
    r = restore(b_s, b_m, "--use-saved-paths")
    assert r.returncode == 0 and "blk: read back ok" in r.stdout, r.stdout + r.stderr
    assert "blk: written" not in r.stdout  # it went on from B, it did not start over


# ---- one snapshot, four guests at once, by both ways in ----

def test_four_at_once_cli_and_api(tmp_path, two):
    state, mem, first = two["b"]
    before = sha(state), sha(mem)
    procs = []
    for i, extra in enumerate([[], ["--memory-copy"]]):
        with open(tmp_path / f"cli{i}", "wb") as out:
            procs.append(subprocess.Popen([EMBER, "run", "--restore", str(state), "--memory-file",
                                           str(mem), "--timeout", "30"] + extra, stdout=out,
                                          stderr=subprocess.PIPE))
    apis = [Ember(tmp_path, name=f"api{i}") for i in range(2)]
    try:
        for a in apis:
            a.ok("PUT", "/snapshot/load", {"snapshot_path": str(state), "mem_file_path": str(mem),
                                           "resume_vm": True})
        for p in procs:
            assert p.wait(timeout=60) == 0, p.stderr.read()
        for a in apis:
            assert a.wait(timeout=60) == 0, a.stderr()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for a in apis:
            a.kill()
    for text in [(tmp_path / f"cli{i}").read_text() for i in range(2)] + \
            [a.stdout() for a in apis]:
        counts_on(first, text)
    assert (sha(state), sha(mem)) == before, "a restored guest wrote to the snapshot's files"


# ---- bad snapshots ----

# CPU features to claim for the guest: the first one this host lacks
# (/proc/cpuinfo) is used; (leaf, subleaf, register offset in a
# kvm_cpuid_entry2 {function, index, flags, eax, ebx, ecx, edx}, bit, name).
FEATURES = [(0x80000001, 0, 20, 6, "sse4a"), (0x80000001, 0, 20, 11, "xop"),
            (0x80000001, 0, 20, 16, "fma4"), (7, 0, 16, 2, "sgx"), (7, 0, 16, 4, "hle"),
            (7, 0, 16, 14, "mpx"), (7, 0, 16, 16, "avx512f"), (1, 0, 20, 6, "smx")]


def host_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def with_features(data, want=2):
    """The state file with up to want features the host lacks given to the
    guest (the header's CPUID signature, FNV-1a of the entries, made to
    match): (bytes, names), or (None, []) when none can be added."""
    hdr, secs = parse(data)
    cpid = bytearray(next(d for t, _, d in secs if t == "CPID"))
    nent, flags, names = struct.unpack_from("<I", cpid)[0], host_flags(), []
    for leaf, sub, reg, bit, name in FEATURES:
        if name in flags or len(names) == want:
            continue
        for i in range(nent):
            e = 8 + 40 * i
            fn, idx = struct.unpack_from("<II", cpid, e)
            if fn == leaf and idx == sub:
                v = struct.unpack_from("<I", cpid, e + reg)[0]
                if not v & (1 << bit):
                    struct.pack_into("<I", cpid, e + reg, v | (1 << bit))
                    names.append(name)
                break
    if not names:
        return None, []
    h = data[:40] + struct.pack("<Q", fnv1a(bytes(cpid[8:8 + 40 * nent]))) + data[48:64]
    return build(h, [(t, i, bytes(cpid) if t == "CPID" else d) for t, i, d in secs]), names


def damage(how, state, mem, d):
    """A damaged copy of a snapshot in d: (state, mem, [words the refusal
    must hold]).  Both file names are unique to the case."""
    data = state.read_bytes()
    hdr, secs = parse(data)
    s, m = d / f"{how}.state", mem
    words = []
    if how.startswith("cut-"):
        at = {"cut-0": 0, "cut-64": 64, "cut-67": 67, "cut-68": 68,
              "cut-mid": len(data) // 2, "cut-trailer": len(data) - 1}[how]
        data = data[:at]
        words = [f"short file: {at} bytes"] if at < 68 else ["CRC mismatch", "truncated"]
    elif how == "resealed-cut":  # a section's length runs past the end, CRC right
        data = reseal(data[:len(data) // 2] + b"\0\0\0\0")
        words = ["run past the end"]
    elif how == "magic":
        data = b"EMBRSNAQ" + data[8:]
        words = ["not an ember state file"]
    elif how == "version":
        data = reseal(data[:8] + struct.pack("<I", 7) + data[12:])
        words = ["format version 7, this ember reads 3"]
    elif how == "arch":
        data = reseal(data[:12] + struct.pack("<I", 3) + data[16:])
        words = ["architecture 3"]
    elif how == "flags":
        data = reseal(data[:20] + struct.pack("<I", 0x80) + data[24:])
        words = ["unknown flags 0x80"]
    elif how == "section-count":
        data = reseal(data[:56] + struct.pack("<I", hdr["nr_sections"] + 1) + data[60:])
        words = [f"holds {hdr['nr_sections']} sections, its header says "
                 f"{hdr['nr_sections'] + 1}"]
    elif how == "duplicate":
        data = build(data, secs + [next(x for x in secs if x[0] == "UART")])
        words = ["section UART/0 appears twice"]
    elif how == "no-kvms":
        data = build(data, [x for x in secs if x[0] != "KVMS"])
        words = ["section KVMS 0 is missing"]
    elif how == "vcpu-short":
        data = build(data, [(t, i, x[:-8] if t == "VCPU" else x) for t, i, x in secs])
        words = ["section VCPU 0 is of another size"]
    elif how == "vcpus":
        data = reseal(data[:16] + struct.pack("<I", 2) + data[20:])
        words = ["the snapshot has 2 vCPUs"]
    elif how == "cpuid-damaged":  # an entry changed, the signature not
        data = build(data, [(t, i, x[:12] + bytes([x[12] ^ 1]) + x[13:] if t == "CPID" else x)
                            for t, i, x in secs])
        words = ["CPUID section is missing or damaged"]
    elif how == "cpu-features":
        data, names = with_features(data)
        if data is None:
            pytest.skip("this host has every feature we know how to claim")
        words = ["this host lacks CPU features the guest was given: " + ", ".join(names)]
    elif how == "memory-short":
        m = d / f"{how}.mem"
        shutil.copy(mem, m)
        os.truncate(m, os.path.getsize(m) - 4096)
        words = [f"memory file {m}: its size is not the snapshot's"]
    elif how == "memory-missing":
        m = d / "none.mem"
        words = [f"memory file {m}: No such file or directory"]
    else:
        raise AssertionError(how)
    s.write_bytes(data)
    if not any(str(p) in w for w in words for p in (s, m)):
        words.insert(0, str(s))  # the refusal names the state file
    return s, m, words


BAD = ["cut-0", "cut-64", "cut-67", "cut-68", "cut-mid", "cut-trailer", "resealed-cut",
       "magic", "version", "arch", "flags", "section-count", "duplicate", "no-kvms",
       "vcpu-short", "vcpus", "cpuid-damaged", "cpu-features", "memory-short",
       "memory-missing"]


@pytest.mark.parametrize("how", BAD)
def test_bad_snapshot_refused_by_run(tmp_path, two, how):
    state, mem, _ = two["b"]
    s, m, words = damage(how, state, mem, tmp_path)
    r = restore(s, m)
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stdout[-200:], r.stderr)
    for w in words:
        assert w in r.stderr, r.stderr
    assert "count" not in r.stdout


def test_bad_snapshots_refused_by_one_api_that_then_loads(tmp_path, two):
    """One fresh ember refuses every bad snapshot in turn (400, a reason
    naming the file, still "Not started"), then loads the good one."""
    state, mem, first = two["b"]
    api = Ember(tmp_path)
    try:
        for how in BAD:
            try:
                s, m, words = damage(how, state, mem, tmp_path)
            except pytest.skip.Exception:
                continue
            st, js = api.curl("PUT", "/snapshot/load", {"snapshot_path": str(s),
                                                        "mem_file_path": str(m),
                                                        "resume_vm": True})
            assert st == 400 and set(js or {}) == {"fault_message"}, (how, st, js)
            for w in words:
                assert w in js["fault_message"], (how, js)
            assert api.p.poll() is None, f"ember died refusing {how}"
            assert api.curl("GET", "/")[1]["state"] == "Not started", how
        api.ok("PUT", "/snapshot/load", {"snapshot_path": str(state), "mem_file_path": str(mem),
                                         "resume_vm": True})
        assert api.wait(timeout=30) == 0, api.stderr()
        counts_on(first, api.stdout())
    finally:
        api.kill()


# snap_mem_digest() samples the first 64 KiB, the last page and 60 pages
# spread over RAM: two snapshots of one 64 MiB counting guest differ only
# in two pages (its data and stack near 1 MiB) that it does not sample, so
# B's state with A's memory loads and runs.
@pytest.mark.parametrize("state_of,mem_of", [("b", "a"), ("a", "b")])
def test_memory_of_another_snapshot_refused_by_run(two, state_of, mem_of):
    s, m = two[state_of][0], two[mem_of][1]
    r = restore(s, m, limit=2)  # loaded, the mismatched guest may run anywhere
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stdout[-100:], r.stderr)
    assert f"memory file {m} does not belong to state file {s}" in r.stderr, r.stderr


def test_memory_of_another_snapshot_refused_by_api(tmp_path, two):
    s, m = two["b"][0], two["a"][1]
    api = Ember(tmp_path)
    try:
        st, js = api.curl("PUT", "/snapshot/load", {"snapshot_path": str(s),
                                                    "mem_file_path": str(m)})
        assert st == 400, (st, js)
        assert f"memory file {m} does not belong to state file {s}" in js["fault_message"], js
        assert api.curl("GET", "/")[1]["state"] == "Not started"
    finally:
        api.kill()
