"""A snapshot is untrusted input (issue: hostile input, part two).

- A crafted configuration record (a valid CRC, vcpus = 33 and no kernel)
  is refused naming the section and key, by `ember run --restore` (121)
  and by the API (400, ember stays up): restore rebuilds the record
  through the user's setters (config/import.c) before anything is
  allocated or opened.
- A crafted hvt record (a manifest of 65 entries) is refused by the
  manifest parser an ELF's note goes through.
- Host paths a snapshot names (serial output file, drive files) are not
  opened unless the loader confirms them (an override, or
  --use-saved-paths / "use_saved_paths"): a crafted snapshot pointing its
  serial output at a victim file leaves it untouched.
- A memory file is accepted only if it is the very file the snapshot
  wrote or hashes (every page) to the snapshot's: a copy loads, a copy
  with one byte changed in a page the sampled digest does not read is
  refused.
- Snapshot create refuses paths that alias (the same file, one the
  other's ".next" or temp name, hard links) and refuses to replace what
  is not a regular file (a FIFO, a device node, a symlink), leaving each
  as it was; a diff with no base to build on is refused.
"""
import os
import stat
import struct
import time

import pytest

from conftest import EXIT_CONFIG, EXIT_TIMEOUT, guest, needs_kvm, run
from test_api import Ember
from test_snapshot import build, hvt_snapshot, parse

pytestmark = needs_kvm

MiB = 1 << 20


def unsqueeze(blob):
    """CONF's zero-run encoding (vm_snapshot.c): {u32 literal, u32 zeros}
    then the literal bytes, repeated."""
    out, i = bytearray(), 0
    while i < len(blob):
        lit, zero = struct.unpack_from("<II", blob, i)
        i += 8
        out += blob[i:i + lit] + bytes(zero)
        i += lit
    return out


def squeeze(raw):
    """The simplest valid encoding: one literal run."""
    return struct.pack("<II", len(raw), 0) + bytes(raw)


def with_section(data, tag, change):
    """The state file with section tag's data passed through change,
    sections and CRC rebuilt (what a crafted, well-sealed file holds)."""
    _, secs = parse(data)
    return build(data[:64], [(t, i, change(d) if t == tag else d) for t, i, d in secs])


def with_conf(data, change):
    def f(blob):
        raw = unsqueeze(blob)
        change(raw)
        return squeeze(raw)
    return with_section(data, "CONF", f)


def put_str(raw, old, new):
    """Overwrite the NUL-terminated string old in the raw configuration."""
    at = raw.find(old.encode() + b"\0")
    assert at > 0, old
    raw[at:at + len(old) + 1] = bytes(len(old) + 1)
    raw[at:at + len(new) + 1] = new.encode() + b"\0"


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    """A counting guest with a drive and its serial output in a file,
    snapshotted while it counts."""
    d = tmp_path_factory.mktemp("hostile")
    disk = d / "disk.img"
    disk.write_bytes(bytes(MiB))
    serial = d / "serial.out"
    e = Ember(d, run_args=["--kernel", guest("counter"), "--cmdline", "count=100000000",
                           "--timeout", "120", "--drive", f"d0,path={disk}",
                           "--serial", str(serial)], name="src")
    s, m = d / "vm.state", d / "vm.mem"
    try:
        deadline = time.monotonic() + 30
        while "count 20\n" not in serial.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(s), "mem_file_path": str(m)})
    finally:
        e.kill()
    return {"dir": d, "state": s, "mem": m, "disk": disk, "serial": str(serial),
            "kernel": guest("counter")}


def restore(state, mem, *extra, limit=2):
    return run(["run", "--restore", str(state), "--memory-file", str(mem), "--timeout",
                str(limit)] + list(extra), timeout=60)


def api_load(tmp_path, body, name="api"):
    """(status, json, alive, state) of one fresh API ember's load."""
    api = Ember(tmp_path, name=name)
    try:
        st, js = api.curl("PUT", "/snapshot/load", body)
        alive = api.p.poll() is None
        state = api.curl("GET", "/")[1]["state"] if alive else None
        return st, js, alive, state
    finally:
        api.kill()


def test_layout_as_assumed(snap):
    """The offsets these tests write: vcpus right after name[65]."""
    _, secs = parse(snap["state"].read_bytes())
    raw = unsqueeze(dict(((t, i), d) for t, i, d in secs)[("CONF", 0)])
    assert struct.unpack_from("<I", raw, 68)[0] == 1
    assert raw.find(snap["kernel"].encode() + b"\0") > 0


def test_crafted_vcpus_without_kernel_refused(snap, tmp_path):
    def craft(raw):
        struct.pack_into("<I", raw, 68, 33)
        put_str(raw, snap["kernel"], "")
    bad = tmp_path / "bad.state"
    bad.write_bytes(with_conf(snap["state"].read_bytes(), craft))
    r = restore(bad, snap["mem"], "--use-saved-paths")
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stderr)
    assert "section CONF 0: [vm] vcpus" in r.stderr and "must be 1..32" in r.stderr, r.stderr
    st, js, alive, state = api_load(tmp_path, {"snapshot_path": str(bad),
                                               "mem_file_path": str(snap["mem"]),
                                               "use_saved_paths": True})
    assert st == 400 and "section CONF 0: [vm] vcpus" in js["fault_message"], js
    assert alive and state == "Not started"


@pytest.mark.parametrize("how,words", [
    ("drive-count", "at most 63"),
    ("name", "[vm] name"),
    ("unterminated", "not terminated"),
])
def test_crafted_configuration_refused(snap, tmp_path, how, words):
    def craft(raw):
        if how == "drive-count":
            # struct cfg_block: name[65], path[4096], two bools, the sector size (u32), then the
            # 8-aligned rate (6 x u64); nr_blocks follows blocks[63].
            at = raw.find(b"d0\0")
            assert at > 0
            size = (65 + 4096 + 2 + 7) // 8 * 8 + 48
            nr = at + 63 * size
            assert struct.unpack_from("<I", raw, nr)[0] == 1, "nr_blocks where assumed"
            struct.pack_into("<I", raw, nr, 64)
        elif how == "name":
            raw[0:6] = b"../x\0\0"
        else:
            raw[0:65] = b"n" * 65
    bad = tmp_path / "bad.state"
    bad.write_bytes(with_conf(snap["state"].read_bytes(), craft))
    r = restore(bad, snap["mem"], "--use-saved-paths")
    assert r.returncode == EXIT_CONFIG and words in r.stderr, (r.returncode, r.stderr)


def test_saved_serial_path_not_opened_unconfirmed(snap, tmp_path):
    """The crafted snapshot sends its serial output to a victim file."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    before = victim.stat()
    bad = tmp_path / "bad.state"
    bad.write_bytes(with_conf(snap["state"].read_bytes(),
                              lambda raw: put_str(raw, snap["serial"], str(victim))))
    r = restore(bad, snap["mem"], "--drive", f"d0,path={snap['disk']}")
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stderr)
    assert f"serial output ({victim})" in r.stderr and "--use-saved-paths" in r.stderr
    st, js, alive, _ = api_load(tmp_path, {"snapshot_path": str(bad),
                                           "mem_file_path": str(snap["mem"]),
                                           "drive_overrides": [{"drive_id": "d0",
                                                                "path_on_host": str(snap["disk"])}]})
    assert st == 400 and f"serial output ({victim})" in js["fault_message"], js
    assert "use_saved_paths" in js["fault_message"] and alive
    # --serial overrides it: the guest runs, the victim is untouched
    out = tmp_path / "mine.out"
    r = restore(bad, snap["mem"], "--drive", f"d0,path={snap['disk']}", "--serial", str(out))
    assert r.returncode == EXIT_TIMEOUT, (r.returncode, r.stderr)
    assert "count " in out.read_text()
    assert victim.read_text() == "precious\n" and victim.stat().st_mtime_ns == before.st_mtime_ns


def test_saved_drive_path_needs_confirmation(snap, tmp_path):
    state, mem = snap["state"], snap["mem"]
    r = restore(state, mem, "--serial", "none")
    assert r.returncode == EXIT_CONFIG
    assert f'drive "d0" ({snap["disk"]})' in r.stderr and "--drive ID,path=FILE" in r.stderr
    copy = tmp_path / "copy.img"
    copy.write_bytes(snap["disk"].read_bytes())
    for extra in (["--drive", f"d0,path={copy}", "--serial", "none"],
                  ["--use-saved-paths", "--serial", "none"]):
        r = restore(state, mem, *extra)
        assert r.returncode == EXIT_TIMEOUT, (extra, r.returncode, r.stderr)
    base = {"snapshot_path": str(state), "mem_file_path": str(mem)}
    st, js, alive, state_ = api_load(tmp_path, base, name="a")
    assert st == 400 and 'drive "d0"' in js["fault_message"] and alive, js
    assert state_ == "Not started"
    for n, extra in enumerate(({"drive_overrides": [{"drive_id": "d0", "path_on_host": str(copy)}],
                                "use_saved_paths": False},
                               {"use_saved_paths": True})):
        # the serial file is still the snapshot's: confirmed only by
        # use_saved_paths; with the drive alone it is refused
        st, js, alive, _ = api_load(tmp_path, {**base, **extra}, name=f"b{n}")
        if extra.get("use_saved_paths"):
            assert st == 204, js
        else:
            assert st == 400 and "serial output" in js["fault_message"], js
    st, js, _, _ = api_load(tmp_path, {**base, "drive_overrides": [{"drive_id": "nope",
                                                                   "path_on_host": "x"}]},
                            name="c")
    assert st == 400 and 'no drive "nope"' in js["fault_message"], js


def test_memory_copy_loads_and_altered_copy_refused(snap, tmp_path):
    """A copy (another inode) is checked page by page: whole, it loads;
    one byte changed in a page the sampled digest never reads, refused."""
    copy = tmp_path / "copy.mem"
    copy.write_bytes(snap["mem"].read_bytes())
    r = restore(snap["state"], copy, "--use-saved-paths", "--serial", "none")
    assert r.returncode == EXIT_TIMEOUT, r.stderr
    # page 116: between the digest's first 64 KiB (pages 0-15) and its
    # second sampled page (16 + 16367 / 60 = 288)
    with open(copy, "r+b") as f:
        f.seek(116 * 4096 + 100)
        b = f.read(1)
        f.seek(116 * 4096 + 100)
        f.write(bytes([b[0] ^ 0x5A]))
    r = restore(snap["state"], copy, "--use-saved-paths", "--serial", "none")
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert f"memory file {copy} does not belong to state file" in r.stderr
    assert "do not hash to the snapshot's" in r.stderr


def test_hvt_manifest_of_65_entries_refused(tmp_path):
    s, m = tmp_path / "h.state", tmp_path / "h.mem"
    img = hvt_snapshot(tmp_path, s, m)
    bad = tmp_path / "bad.state"
    bad.write_bytes(with_section(s.read_bytes(), "HVTG",
                                 lambda d: struct.pack("<I", 65) + d[4:]))
    r = restore(bad, m, "--block:storage=" + str(img))
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stderr)
    assert "section HVTG 0: manifest: 65 entries (1..64 allowed)" in r.stderr, r.stderr
    # the good one still loads (the same override confirms the disk)
    r = restore(s, m, "--block:storage=" + str(img), limit=30)
    assert r.returncode == 0 and "blk: read back ok" in r.stdout, r.stdout + r.stderr


@pytest.fixture
def paused(tmp_path):
    e = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline", "count=100000000",
                                  "--timeout", "120", "--serial", "none", "--track-dirty"],
              name="p")
    e.ok("PATCH", "/vm", {"state": "Paused"})
    yield e
    e.kill()


def test_create_refuses_aliased_and_odd_paths(paused, tmp_path):
    e, d = paused, tmp_path
    pid = e.p.pid
    s, m = d / "s.state", d / "s.mem"
    e.ok("PUT", "/snapshot/create", {"snapshot_path": str(s), "mem_file_path": str(m)})
    good = s.read_bytes(), m.read_bytes()

    def refused(state, mem, words):
        msg = e.fault("PUT", "/snapshot/create", {"snapshot_path": str(state),
                                                  "mem_file_path": str(mem)})
        assert words in msg, msg
        assert (s.read_bytes(), m.read_bytes()) == good, "a refused create changed files"

    refused(s, s, "name the same file")
    refused(m.parent / (m.name + ".next"), m, "name the same file")
    refused(s, d / f"s.state.tmp-{pid}", "name the same file")
    (d / "sub").mkdir()
    refused(d / "sub" / ".." / "s.state", s, "name the same file")
    link = d / "hard.mem"
    os.link(s, link)
    refused(s, link, "are one file (hard links)")
    fifo = d / "fifo"
    os.mkfifo(fifo)
    refused(fifo, d / "x.mem", "is a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    dev = d / "null"
    os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    refused(d / "y.state", dev, "is a device")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)
    victim = d / "victim"
    victim.write_text("precious\n")
    sym = d / "sym.state"
    sym.symlink_to(victim)
    refused(sym, d / "z.mem", "is a symbolic link")
    assert victim.read_text() == "precious\n" and sym.is_symlink()
    refused(d / "nodir" / "a.state", d / "a.mem", "does not exist")
    refused(d, d / "a.mem", "is a folder")
    # nothing was left behind; a good create still works
    left = sorted(p.name for p in d.iterdir())
    assert not [n for n in left if ".tmp-" in n or n.endswith(".next")], left
    e.ok("PUT", "/snapshot/create", {"snapshot_path": str(d / "t.state"),
                                     "mem_file_path": str(d / "t.mem")})
    assert e.curl("GET", "/")[1]["state"] == "Paused"


def test_diff_needs_a_base(tmp_path):
    e = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline", "count=100000000",
                                  "--timeout", "120", "--serial", "none", "--track-dirty"],
              name="d")
    try:
        e.ok("PATCH", "/vm", {"state": "Paused"})
        body = {"snapshot_path": str(tmp_path / "d.state"),
                "mem_file_path": str(tmp_path / "d.mem"), "snapshot_type": "Diff"}
        msg = e.fault("PUT", "/snapshot/create", body)
        assert "needs a base" in msg, msg
        e.ok("PUT", "/snapshot/create", {"snapshot_path": str(tmp_path / "f.state"),
                                         "mem_file_path": str(tmp_path / "f.mem")})
        e.ok("PATCH", "/vm", {"state": "Resumed"})  # the guest dirties pages
        time.sleep(0.3)
        e.ok("PATCH", "/vm", {"state": "Paused"})
        e.ok("PUT", "/snapshot/create", body)
    finally:
        e.kill()
    r = run(["snapshot", "merge", str(tmp_path / "f.mem"), str(tmp_path / "d.mem")])
    assert r.returncode == 0, r.stderr
    r = restore(tmp_path / "d.state", tmp_path / "f.mem")
    assert r.returncode == EXIT_TIMEOUT, r.stderr


@pytest.mark.parametrize("which", ["state", "memory"])
def test_fifo_snapshot_paths_refused(snap, tmp_path, which):
    """A FIFO where a state or memory file should be is refused at once
    (the open does not wait for a writer), by run, the API and merge."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    state = fifo if which == "state" else snap["state"]
    mem = fifo if which == "memory" else snap["mem"]
    r = run(["run", "--restore", str(state), "--memory-file", str(mem), "--use-saved-paths",
             "--serial", "none"], timeout=30)
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stderr)
    assert str(fifo) in r.stderr and "not a regular file" in r.stderr, r.stderr
    st, js, alive, state_ = api_load(tmp_path, {"snapshot_path": str(state),
                                                "mem_file_path": str(mem),
                                                "use_saved_paths": True})
    assert st == 400 and str(fifo) in js["fault_message"], js
    assert alive and state_ == "Not started"
    r = run(["snapshot", "merge", str(snap["mem"]) if which == "state" else str(fifo),
             str(fifo) if which == "state" else str(snap["mem"])], timeout=30)
    assert r.returncode != 0 and "a FIFO, not a regular file" in r.stderr, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_use_saved_paths_only_with_restore():
    r = run(["run", "--kernel", guest("hello"), "--use-saved-paths"], timeout=30)
    assert r.returncode == EXIT_CONFIG
    assert "--use-saved-paths go with --restore STATE" in r.stderr, r.stderr
