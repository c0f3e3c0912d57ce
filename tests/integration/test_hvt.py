"""Solo5 hvt unikernels on ember (as solo5-hvt): boot state, hypercalls,
block and net devices, the manifest, bad arguments, and the ELF notes of
the test guests themselves.  Guests: tests/guest/hvt/ (README there), built
to GUESTS/hvt/NAME.hvt by make guests.

Net tests use conftest's tap and echo fixtures: net.hvt's frames are
echoed by tests/tools/tap_echo.py."""
import os
import re
import struct
import time

import pytest

from conftest import (EXIT_CONFIG, EXIT_GUEST_FAULT, EXIT_TIMEOUT,
                      EXIT_TRIPLE_FAULT, GUESTS, ip, needs_kvm, run)

MIB = 1 << 20


def hvt(name):
    path = os.path.join(GUESTS, "hvt", name + ".hvt")
    if not os.path.exists(path):
        pytest.fail(f"hvt test guest {path} missing: run make guests")
    return path


def field(out, key):
    """Integer value of key=N (decimal or 0x hex) in the guest's output."""
    m = re.search(rf"\b{key}=(0x[0-9a-f]+|\d+)", out)
    assert m, f"no {key}= in {out!r}"
    return int(m.group(1), 0)


def pattern(off, n):
    """blk.hvt's pattern bytes for disk offsets off..off+n-1."""
    return bytes(((o & 0xFF) ^ ((o >> 8) * 0x1D) ^ 0xA5) & 0xFF for o in range(off, off + n))


def disk(tmp_path, size, name="disk.img", head=b""):
    path = tmp_path / name
    path.write_bytes(head + bytes(size - len(head)))
    return str(path)


# ---- the guests' ELF files (no KVM needed) ----

def elf_phdrs(data):
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1  # ELF64 LSB
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    e_entry, e_phoff = struct.unpack_from("<QQ", data, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    assert (e_type, e_machine, e_phentsize) == (2, 62, 56)  # ET_EXEC, EM_X86_64
    ph = []
    for i in range(e_phnum):
        (p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
         p_align) = struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * 56)
        ph.append(dict(type=p_type, flags=p_flags, offset=p_offset, vaddr=p_vaddr,
                       paddr=p_paddr, filesz=p_filesz, memsz=p_memsz, align=p_align))
    return e_entry, ph


def solo5_notes(data):
    """{type: descriptor} of the Solo5 notes, read as solo5-hvt does: the
    first note of each PT_NOTE."""
    notes = {}
    for p in elf_phdrs(data)[1]:
        if p["type"] != 4:  # PT_NOTE
            continue
        namesz, descsz, ntype = struct.unpack_from("<III", data, p["offset"])
        name = data[p["offset"] + 12:p["offset"] + 12 + namesz]
        assert p["filesz"] >= 20 + descsz
        if name == b"Solo5\0":
            notes[ntype] = data[p["offset"] + 20:p["offset"] + 20 + descsz]
    return notes


ABI1, MFT1 = 0x31494241, 0x3154464D
MANIFESTS = {
    "hello": [], "walltime": [], "halt": [], "abi_v1": [], "wrong_target": [], "solo5_layout": [],
    "poll": [("service", 2)], "net": [("service", 2)], "blk": [("storage", 1)],
    "badptr": [("storage", 1)], "devices": [("disk0", 1), ("net0", 2), ("disk1", 1)],
}


@pytest.mark.parametrize("name", sorted(MANIFESTS) + ["no_mft"])
def test_guest_elf_layout(name):
    # As solo5-hvt's loader wants: ET_EXEC at >= 1 MiB, physical =
    # virtual, page-aligned non-overlapping PT_LOADs, none both W and X.
    data = open(hvt(name), "rb").read()
    entry, ph = elf_phdrs(data)
    loads = [p for p in ph if p["type"] == 1]
    assert entry >= MIB and loads
    end = 0
    for p in loads:
        assert p["vaddr"] == p["paddr"] >= MIB and p["vaddr"] % 4096 == 0
        assert p["vaddr"] >= end and p["filesz"] > 0
        assert (p["flags"] & 3) != 3, "W+X segment"
        end = p["vaddr"] + p["memsz"]
    assert any(p["vaddr"] <= entry < p["vaddr"] + p["memsz"] and p["flags"] & 1 for p in loads)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_guest_notes(name):
    notes = solo5_notes(open(hvt(name), "rb").read())
    target, version = {"abi_v1": (1, 1), "wrong_target": (2, 2)}.get(name, (1, 2))
    assert notes[ABI1] == struct.pack("<IIII", target, version, 0, 0)

    # MFT1: 4 bytes of padding (struct mft 8-aligned at note offset 24),
    # then version 1, entries, 104-byte entries; e[0] reserved.
    desc, devs = notes[MFT1], MANIFESTS[name]
    n = len(devs) + 1
    assert len(desc) == 4 + 8 + 104 * n
    pad, version, entries = struct.unpack_from("<III", desc, 0)
    assert (pad, version, entries) == (0, 1, n)
    for i, (dev_name, dev_type) in enumerate([("", 1 << 30)] + devs):
        e = desc[12 + 104 * i:12 + 104 * (i + 1)]
        assert e[:68].rstrip(b"\0") == dev_name.encode() and e[67] == 0
        assert struct.unpack_from("<I", e, 68)[0] == dev_type
        assert e[72:] == bytes(32)  # device fields, backing word, attached: 0


def test_solo5_layout_has_interp_and_openbsd_note():
    data = open(hvt("solo5_layout"), "rb").read()
    _, ph = elf_phdrs(data)
    assert ph[0]["type"] == 3  # PT_INTERP, as Solo5's linker script
    interp = data[ph[0]["offset"]:ph[0]["offset"] + ph[0]["filesz"]]
    assert interp.rstrip(b"\0") == b"/nonexistent/solo5/"
    notes = [p for p in ph if p["type"] == 4]
    assert data[notes[0]["offset"] + 12:notes[0]["offset"] + 20] == b"OpenBSD\0"


def test_no_mft_has_no_manifest_note():
    notes = solo5_notes(open(hvt("no_mft"), "rb").read())
    assert ABI1 in notes and MFT1 not in notes


# ---- boot ----

@needs_kvm
def test_hello_solo5_spelling():
    r = run(["run", "--mem=64", "--", hvt("hello"), "foo", "bar=baz"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hello from hvt guest\n")
    assert "cmdline: foo bar=baz\n" in r.stdout
    assert r.stderr == ""  # a clean halt is silent
    mem = field(r.stdout, "mem_size")
    assert mem == 64 * MIB
    assert field(r.stdout, "rdi") == 0x10000  # the boot info
    assert field(r.stdout, "rsp") == mem - 8
    assert field(r.stdout, "if") == 0
    assert field(r.stdout, "cpu_cycle_freq") > 0
    # The monitor's own copy of the manifest: just the reserved entry.
    assert "mft: version=1 entries=1 e0.type=0x40000000" in r.stdout
    mft, cmd = field(r.stdout, "mft"), field(r.stdout, "cmdline")
    assert 0x10000 <= mft < mem and 0x10000 <= cmd < mem


@needs_kvm
def test_real_solo5_layout_runs():
    # PT_INTERP and the OpenBSD note, as every Solo5 >= 0.6 binary has.
    r = run(["run", "--", hvt("solo5_layout"), "x"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hello from hvt guest\ncmdline: x\n")


@needs_kvm
def test_hello_kernel_and_cmdline_options():
    r = run(["run", "--kernel", hvt("hello"), "--cmdline", "a b  c"])
    assert r.returncode == 0, r.stderr
    assert "cmdline: a b  c\n" in r.stdout


@needs_kvm
def test_hello_empty_cmdline():
    r = run(["run", "--", hvt("hello")])
    assert r.returncode == 0, r.stderr
    assert "cmdline: \n" in r.stdout


@needs_kvm
def test_longest_cmdline():
    # HVT_CMDLINE_SIZE is 8192 including the NUL.
    line = "x" * 8191
    r = run(["run", "--kernel", hvt("hello"), "--cmdline", line])
    assert r.returncode == 0, r.stderr
    assert f"cmdline: {line}\n" in r.stdout
    r = run(["run", "--kernel", hvt("hello"), "--cmdline", line + "x"])
    assert r.returncode == EXIT_CONFIG
    assert "cmdline" in r.stderr and "too long" in r.stderr
    assert r.stdout == ""


@needs_kvm
@pytest.mark.parametrize("opts,mib", [(["--mem=64"], 64), (["--mem=65"], 64),
                                      (["--mem=128"], 128), (["--memory", "96M"], 96),
                                      ([], 64)])
def test_memory_size_rounded_to_2m(opts, mib):
    r = run(["run"] + opts + ["--", hvt("hello")])
    assert r.returncode == 0, r.stderr
    mem = field(r.stdout, "mem_size")
    assert mem == mib * MIB
    assert field(r.stdout, "rsp") == mem - 8


@needs_kvm
def test_kernel_end_covers_the_image():
    path = hvt("hello")
    _, ph = elf_phdrs(open(path, "rb").read())
    image_end = max(p["vaddr"] + p["memsz"] for p in ph if p["type"] == 1)
    r = run(["run", "--", path])
    assert r.returncode == 0, r.stderr
    assert image_end <= field(r.stdout, "kernel_end") < field(r.stdout, "mem_size")


@needs_kvm
def test_dry_run_names_hvt():
    r = run(["run", "--dry-run", "--", hvt("hello")])
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stderr and "hvt" in r.stderr
    assert r.stdout == ""


@needs_kvm
@pytest.mark.parametrize("name,says", [("abi_v1", r"version 1\b"),
                                       ("wrong_target", r"spt|target 2\b"),
                                       ("no_mft", r"manifest")])
def test_unsupported_unikernel_refused(name, says):
    r = run(["run", "--", hvt(name)])
    assert r.returncode == EXIT_CONFIG, r.stdout + r.stderr
    assert re.search(says, r.stderr), r.stderr
    assert hvt(name) in r.stderr
    assert r.stdout == ""  # the guest never ran


# ---- time ----

@needs_kvm
def test_walltime():
    before = time.time_ns()
    r = run(["run", "--", hvt("walltime")])
    after = time.time_ns()
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("walltime: forward", "walltime: plausible"):
        assert line in r.stdout
    assert field(r.stdout, "cpu_cycle_freq") > 0
    t1, t2 = field(r.stdout, "t1"), field(r.stdout, "t2")
    # WALLTIME is the host's realtime clock.
    assert before - 10**9 <= t1 < t2 <= after + 10**9


@needs_kvm
def test_poll_times_out(tap):
    r = run(["run", f"--net:service={tap}", "--", hvt("poll"), "timeout_ms=200"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "poll: timeout ok" in r.stdout
    ms = [int(m) for m in re.findall(r"ret=\d+ ready_set=0x0 elapsed_ms=(\d+)", r.stdout)]
    assert ms and 195 <= ms[0] <= 1200
    assert field(r.stdout.split("zero timeout")[1], "elapsed_ms") < 100


@needs_kvm
def test_poll_wait_ends_at_timeout_option(tap):
    # A guest blocked in POLL (60 s) still stops at --timeout.
    t0 = time.monotonic()
    r = run(["run", "--timeout", "1", f"--net:service={tap}", "--", hvt("poll"),
             "timeout_ms=60000"], timeout=30)
    assert r.returncode == EXIT_TIMEOUT, r.stdout + r.stderr
    assert time.monotonic() - t0 < 10
    assert "poll: timeout ok" not in r.stdout


# ---- block ----

@needs_kvm
def test_blk_pattern_and_bad_requests(tmp_path):
    size = 256 * 1024
    img = disk(tmp_path, size)
    r = run(["run", "--mem=64", f"--block:storage={img}", "--", hvt("blk")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"capacity={size} block_size=512" in r.stdout
    assert "blk: pattern ok" in r.stdout
    for what in ("read at offset=capacity", "read at unaligned offset 100",
                 "read of unaligned length 100", "oversized read (capacity + 1 block)",
                 "read straddling the end", "read on handle 0 (reserved)",
                 "read on handle 63 (no such entry)", "write at offset=capacity"):
        assert f"blk: {what}: EINVAL\n" in r.stdout
    assert "blk: all ok" in r.stdout
    data = open(img, "rb").read()
    assert len(data) == size
    assert data[:4096] == pattern(0, 4096)
    assert data[size - 512:] == pattern(size - 512, 512)
    assert data[4096:size - 512] == bytes(size - 4096 - 512)  # nothing else written


@needs_kvm
def test_blk_persists_across_runs(tmp_path):
    img = disk(tmp_path, 64 * 1024)
    r = run(["run", f"--block:storage={img}", "--", hvt("blk")])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["run", f"--block:storage={img}", "--", hvt("blk"), "read"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"sector0: {pattern(0, 16).hex()}\n" in r.stdout


@needs_kvm
def test_blk_reads_host_data(tmp_path):
    head = os.urandom(16)
    img = disk(tmp_path, 4096, head=head)
    r = run(["run", f"--block:storage={img}", "--", hvt("blk"), "read"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"sector0: {head.hex()}\n" in r.stdout


@needs_kvm
def test_blk_ini_form(tmp_path):
    img = disk(tmp_path, 64 * 1024, head=b"from the ini....")
    ini = tmp_path / "vm.ini"
    ini.write_text(f"[vm]\nkernel = {hvt('blk')}\nmemory = 64M\ncmdline = read\n\n"
                   f"[block.storage]\npath = {img}\n")
    r = run(["run", str(ini)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"sector0: {b'from the ini....'.hex()}\n" in r.stdout


@needs_kvm
def test_blk_image_not_multiple_of_512_refused(tmp_path):
    img = tmp_path / "odd.img"
    img.write_bytes(bytes(1000))
    r = run(["run", f"--block:storage={img}", "--", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert str(img) in r.stderr and "1000" in r.stderr and "512" in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_blk_missing_image_refused(tmp_path):
    img = tmp_path / "nope.img"
    r = run(["run", f"--block:storage={img}", "--", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert str(img) in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_manifest_device_left_unattached():
    r = run(["run", "--", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert "storage" in r.stderr and "--block:storage=" in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_device_not_in_manifest(tmp_path):
    img = disk(tmp_path, 4096)
    r = run(["run", f"--block:storage={img}", "--", hvt("hello")])
    assert r.returncode == EXIT_CONFIG
    assert "storage" in r.stderr and "manifest" in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_device_of_the_wrong_kind(tmp_path):
    # "storage" is a block device in blk.hvt's manifest, not a net device.
    r = run(["run", "--net:storage=embtnonexist0", "--", hvt("blk")])
    assert r.returncode == EXIT_CONFIG
    assert "storage" in r.stderr
    assert r.stdout == ""


# ---- net ----

@needs_kvm
def test_net_echo(echo):
    r = run(["run", "--mem=64", f"--net:service={echo}",
             "--net-mac:service=02:00:00:00:00:01", "--", hvt("net"), "count=4"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mac=02:00:00:00:00:01 mtu=1500" in r.stdout
    assert "net: empty read: AGAIN" in r.stdout
    assert "net: oversized write (MTU + 15): EINVAL" in r.stdout
    assert "net: 4 of 4 echoed" in r.stdout


@needs_kvm
def test_net_ini_form(tmp_path, echo):
    ini = tmp_path / "vm.ini"
    ini.write_text(f"[vm]\nkernel = {hvt('net')}\ncmdline = count=2\n\n"
                   f"[net.service]\ntap = {echo}\nmac = 02:00:00:00:00:07\n")
    r = run(["run", str(ini)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mac=02:00:00:00:00:07" in r.stdout
    assert "net: 2 of 2 echoed" in r.stdout


@needs_kvm
def test_net_missing_tap_refused():
    # As solo5-hvt: the tap must exist (TUNSETIFF would create it).
    name = f"embtx{os.getpid()}"[:15]
    r = run(["run", f"--net:service={name}", "--", hvt("net")])
    assert r.returncode == EXIT_CONFIG, r.stdout + r.stderr
    assert name in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_net_tap_down_refused(tap):
    # As solo5-hvt: a tap that is down is refused (ENETDOWN).
    assert ip("link", "set", tap, "down").returncode == 0
    r = run(["run", f"--net:service={tap}", "--", hvt("net")])
    assert r.returncode == EXIT_CONFIG, r.stdout + r.stderr
    assert tap in r.stderr
    assert r.stdout == ""


@needs_kvm
def test_devices_handles_are_manifest_indexes(tmp_path, tap):
    d0 = disk(tmp_path, 64 * 1024, "d0.img", head=b"DISK-ZERO-......")
    d1 = disk(tmp_path, 128 * 1024, "d1.img", head=b"disk-one-.......")
    r = run(["run", f"--block:disk1={d1}", f"--net:net0={tap}", f"--block:disk0={d0}",
             "--", hvt("devices")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mft: version=1 entries=4" in r.stdout
    assert "dev 0 '' type=0x40000000 attached=0" in r.stdout
    assert "dev 1 disk0 block attached=1 capacity=65536 block_size=512" in r.stdout
    assert "dev 3 disk1 block attached=1 capacity=131072 block_size=512" in r.stdout
    m = re.search(r"dev 2 net0 net attached=1 mac=([0-9a-f:]{17}) mtu=(\d+)", r.stdout)
    assert m, r.stdout
    first = int(m.group(1)[:2], 16)
    assert first & 1 == 0 and first & 2 == 2  # generated: unicast, locally administered
    assert f"disk0: {b'DISK-ZERO-......'.hex()}" in r.stdout
    assert f"disk1: {b'disk-one-.......'.hex()}" in r.stdout
    assert "devices: all ok" in r.stdout


# ---- halt ----

@needs_kvm
@pytest.mark.parametrize("status", [0, 1, 42, 255])
def test_halt_status_is_exit_code(status):
    r = run(["run", "--", hvt("halt"), f"status={status}"])
    assert r.returncode == status, r.stderr
    assert f"halting with {status}\n" in r.stdout


@needs_kvm
def test_halt_without_cookie():
    r = run(["run", "--", hvt("halt"), "status=5", "cookie=none"])
    assert r.returncode == 5, r.stderr
    assert "halting with 5" in r.stdout


# ---- bad hypercall arguments ----

MEM = 64 * MIB
BADPTR = [
    # case, hypercall named in the message, address named in it
    ("puts", "PUTS", 0xD0000000),
    ("puts_end", "PUTS", MEM - 8),
    ("puts_len", "PUTS", None),
    ("puts_wrap", "PUTS", None),
    ("blkread", "BLOCK_READ", MEM - 256),
    ("blkwrite", "BLOCK_WRITE", 0xD0000000),
    ("arg", "PUTS", 0xD0000000),
    ("arg_end", "PUTS", MEM - 8),
    ("arg_top", "PUTS", 0xFFFFFFF8),
    ("halt_cookie", "HALT", 0xD0000000),
    ("halt_cookie_end", "HALT", MEM - 256),
]


@needs_kvm
@pytest.mark.parametrize("case,call,addr", BADPTR, ids=[b[0] for b in BADPTR])
def test_bad_hypercall_argument_stops_guest(tmp_path, case, call, addr):
    img = disk(tmp_path, 4096)
    r = run(["run", "--mem=64", f"--block:storage={img}", "--", hvt("badptr"), case])
    assert f"about to {case}\n" in r.stdout
    assert f"badptr: {case} returned" not in r.stdout, "the bad call was accepted"
    assert r.returncode == EXIT_GUEST_FAULT, r.stdout + r.stderr
    assert call in r.stderr, r.stderr
    if addr is not None:
        assert hex(addr) in r.stderr.lower(), r.stderr


@needs_kvm
def test_hypercall_port_needs_32bit_out(tmp_path):
    img = disk(tmp_path, 4096)
    r = run(["run", f"--block:storage={img}", "--", hvt("badptr"), "short_out"])
    assert "about to short_out" in r.stdout
    assert r.returncode == EXIT_GUEST_FAULT, r.stdout + r.stderr
    assert "0x502" in r.stderr


@needs_kvm
def test_low_64k_unmapped(tmp_path):
    # Nothing below 0x10000 is mapped and there is no IDT: a read of 0x1000
    # page-faults into a triple fault.
    img = disk(tmp_path, 4096)
    r = run(["run", f"--block:storage={img}", "--", hvt("badptr"), "low"])
    assert "about to low" in r.stdout
    assert "read " not in r.stdout
    assert r.returncode == EXIT_TRIPLE_FAULT, r.stdout + r.stderr
