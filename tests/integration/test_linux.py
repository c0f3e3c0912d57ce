"""Debian's cloud kernel on ember, with a busybox initramfs: the bzImage
through the Linux 64-bit boot protocol (1 vCPU), and the vmlinux ELF
inside it through its PVH entry note (2 vCPUs).  Both find their CPUs and
the IOAPIC in ember's ACPI tables (Debian builds without MP-table parsing).

tests/linux/fetch-kernel.sh downloads the kernel package (not installed)
into tests/linux/cache/ once.  EMBER_LINUX_DIR picks where the bzImage,
vmlinux and initramfs go (default tests/linux/cache/out).

What these machines show: /dev/kvm here is backed by an emulator that
cannot emulate some instructions the kernel runs early (lock cmpxchg16b in
SLUB right after "Memory: ...K available"), so the vCPU stops with KVM's
"instruction emulation failed" and ember exits 125 (EXIT_KVM_ERROR).  How
long that takes depends on the machine and on what else runs on it: the
bzImage first decompresses itself (emulated: up to 150 s before its first
line) and stops after "Memory:" at about 130 s on an idle 2-core machine,
up to 230 s on a busy one (another Linux boot beside it); the vmlinux
after 20-80 s.  On a host
with a full KVM the guest reaches the initramfs, prints
"ember-initramfs: hello" and reboots: exit 0.

So the tests assert what the kernel printed, however the run ended: the
proof points below, in the kernel's order, up to the furthest one it
printed.  A full boot must print them all; the emulator's stop must come
after "Memory:"; a run that --timeout ended (a slow or busy machine) must
at least be past the e820 map, and everything it did print must be right
and in order.  The boots run one after another: on 2 cores, a second
emulated boot beside one only slows both down.
"""
import os
import re
import shutil
import subprocess
import warnings

import pytest

from conftest import EMBER, EXIT_CONFIG, EXIT_KVM_ERROR, EXIT_TIMEOUT, ROOT, needs_kvm, run

FETCH = os.path.join(ROOT, "tests", "linux", "fetch-kernel.sh")
LINUX_DIR = os.path.abspath(os.environ.get("EMBER_LINUX_DIR",
                                           os.path.join(ROOT, "tests", "linux", "cache", "out")))
MEMORY = "256M"
CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 reboot=k"
# The guest's own limit per image: time for the emulated boot to reach
# its stop after "Memory:" on a busy machine (the slowest seen: 226 s and
# 77 s), within the suite's budget (at worst 10 minutes for the three
# boots; the rest of the suite takes 3).  The harness's limit only
# catches a hang.
GUEST_TIMEOUT = {"bzImage": 300, "vmlinux": 150, "nopvh": 150}
HARNESS_MARGIN = 60


@pytest.fixture(scope="session")
def linux():
    """Paths of bzImage, vmlinux, initramfs and the kernel release."""
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        pytest.skip("fetch-kernel.sh needs Debian's apt-get and dpkg")
    if os.geteuid() != 0:
        pytest.skip("fetch-kernel.sh runs apt-get download as root")
    r = subprocess.run([FETCH, LINUX_DIR], capture_output=True, text=True, timeout=900)
    if r.returncode == 2:
        pytest.skip("cannot download Debian's cloud kernel: " + r.stderr.strip())
    assert r.returncode == 0, f"fetch-kernel.sh failed:\n{r.stdout}\n{r.stderr}"
    with open(os.path.join(LINUX_DIR, "kernel-release")) as f:
        release = f.read().strip()
    return {
        "bzImage": os.path.join(LINUX_DIR, "bzImage"),
        "vmlinux": os.path.join(LINUX_DIR, "vmlinux"),
        "initramfs": os.path.join(LINUX_DIR, "initramfs.cpio.gz"),
        "release": release,
    }


def boot(linux, image, *extra):
    if not os.path.exists(EMBER):
        pytest.fail(f"{EMBER} missing: run make build/ember")
    return run(["run", "--kernel", linux[image], "--initrd", linux["initramfs"],
                "--memory", MEMORY, "--cmdline", CMDLINE,
                "--timeout", str(GUEST_TIMEOUT[image])] + list(extra),
               timeout=GUEST_TIMEOUT[image] + HARNESS_MARGIN)


def proof_points(linux, vcpus):
    """What the kernel prints, in its order, as (name, marker, check):
    marker finds the line (a regex on the text after the printk time),
    check(line) says it is right.  Early ones prove the zero page or PVH
    start info (cmdline pointer, e820 table, initrd fields); the ACPI ones
    boot_acpi() (the kernel, built without CONFIG_X86_MPPARSE, finds the
    RSDP, every table, the MADT's CPUs and IOAPIC)."""
    size = os.path.getsize(linux["initramfs"])

    def ramdisk(line):
        # page-aligned start, its size rounded up to a page, in low RAM
        m = re.search(r"RAMDISK: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]", line)
        if not m:
            return False
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        return (start % 4096 == 0 and start >= 0x1000000 and end < 0x10000000
                and end + 1 == (start + size + 4095) // 4096 * 4096)

    def exact(text):
        return lambda line: line == text

    def e820(rng, kind):
        text = f"BIOS-e820: [mem {rng}] {kind}"
        return (text, "^" + re.escape(text) + "$", exact(text))

    def table(sig, addr):
        return (f"ACPI {sig}", rf"^ACPI: {sig} 0x",
                lambda l: re.match(rf"ACPI: {sig} 0x00000000000{addr} [0-9A-F]{{6}} "
                                   rf"\(v0\d EMBER ", l) is not None)

    smp = f"smpboot: Allowing {vcpus} CPUs, 0 hotplug CPUs"
    ioapic = f"IOAPIC[0]: apic_id {vcpus}, version 17, address 0xfec00000, GSI 0-23"
    return [
        ("Linux version", r"^Linux version ",
         lambda l: l.startswith(f"Linux version {linux['release']} ")),
        ("Command line", r"^Command line: ", exact(f"Command line: {CMDLINE}")),
        ("e820 map", r"^BIOS-provided physical RAM map:$", lambda l: True),
        # boot_e820(): RAM below the EBDA, EBDA..1 MiB reserved, RAM to 256 MiB
        e820("0x0000000000000000-0x000000000009fbff", "usable"),
        e820("0x000000000009fc00-0x00000000000fffff", "reserved"),
        e820("0x0000000000100000-0x000000000fffffff", "usable"),
        ("earlyprintk", r"earlyser0", lambda l: "bootconsole [earlyser0] enabled" in l),
        ("KVM", r"^Hypervisor detected: ", exact("Hypervisor detected: KVM")),
        ("RAMDISK", r"^RAMDISK: ", ramdisk),
        ("ACPI RSDP", r"^ACPI: RSDP ", exact("ACPI: RSDP 0x00000000000E0000 000024 (v02 EMBER )")),
        table("XSDT", "E0040"), table("FACP", "E0100"), table("DSDT", "E1000"),
        table("APIC", "E0280"),
        # the IOAPIC's id is nr_cpus, as in the MP table
        ("IOAPIC", r"^IOAPIC\[0\]: ", exact(ioapic)),
        ("MADT", r"^ACPI: Using ACPI \(MADT\)",
         exact("ACPI: Using ACPI (MADT) for SMP configuration information")),
        ("smpboot", r"^smpboot: Allowing ", exact(smp)),
        ("Kernel command line", r"^Kernel command line: ",
         exact(f"Kernel command line: {CMDLINE}")),
        ("Memory", r"^Memory: \d+K/\d+K available", lambda l: True),
        ("initramfs", r"^ember-initramfs: hello", lambda l: True),
    ]


# The first proof points come within seconds of the kernel's first line:
# any boot must get past them (the last e820 entry), however it ended.
EARLY = "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"
PRINTK_TIME = re.compile(r"^\[\s*\d+\.\d+\] ")


def check_boot(r, linux, vcpus):
    """The console against the proof points, up to the furthest one the
    kernel printed, and the ending against how far it got."""
    out = r.stdout
    text = out if out.endswith("\n") else out[:out.rfind("\n") + 1]  # a cut last line
    lines = [PRINTK_TIME.sub("", l.rstrip("\r")) for l in text.splitlines()]
    points = proof_points(linux, vcpus)
    names = [p[0] for p in points]
    at = [next((i for i, l in enumerate(lines) if re.search(marker, l)), None)
          for _, marker, _ in points]
    reached = max((k for k, i in enumerate(at) if i is not None), default=-1)
    why = (f"exit {r.returncode}; stderr:\n{r.stderr[-3000:]}\nstdout tail:\n{out[-3000:]}")

    # The ending says how far the boot must have got.
    if "ember-initramfs: hello" in out:
        assert r.returncode == 0, why  # reboot -f: i8042 reset
        need = len(points) - 1
    elif r.returncode == EXIT_KVM_ERROR:
        assert "instruction emulation failed" in r.stderr, why
        need = names.index("Memory")  # it stops after mm_init, not before
    elif r.returncode == EXIT_TIMEOUT:
        assert "timeout after" in r.stderr, why
        need = names.index(EARLY)
    else:
        pytest.fail("neither a full boot nor the emulator's stop nor a timeout: " + why)
    assert reached >= need, (f"the boot stopped before \"{names[need]}\"; the furthest "
                             f"proof point: \"{names[reached] if reached >= 0 else 'none'}\""
                             f"\n{why}")

    # Everything up to there: present, in the kernel's order, and right.
    last = -1
    for k in range(reached + 1):
        name, _, check = points[k]
        assert at[k] is not None, f"\"{name}\" missing, but the kernel printed " \
            f"\"{names[reached]}\" after it\n{why}"
        assert at[k] > last, f"\"{name}\" out of order\n{why}"
        assert check(lines[at[k]]), f"{name}: {lines[at[k]]!r}"
        last = at[k]
    assert at[1] - at[0] < 12, "Command line: far from Linux version"
    for bad in ("A valid RSDP was not found", "Invalid checksum", "Incorrect checksum"):
        assert bad not in out, bad
    if reached < len(points) - 1 and r.returncode == EXIT_TIMEOUT:
        warnings.warn(f"{os.path.basename(r.args[3])}: --timeout ended the boot after "
                      f"\"{names[reached]}\" ({reached + 1} of {len(points)} proof points "
                      "checked): a slow or busy machine")


@needs_kvm
@pytest.mark.parametrize("image,vcpus", [("bzImage", 1), ("vmlinux", 2)])
def test_linux_boots(linux, image, vcpus):
    # Debian's vmlinux carries a PVH note, so it boots through PVH (the
    # RSDP reaches it in hvm_start_info), the bzImage through the zero page.
    r = boot(linux, image, "--vcpus", str(vcpus))
    check_boot(r, linux, vcpus)


def test_bzimage_too_little_memory(linux):
    """16 MiB cannot hold the kernel at 16 MiB: a user error, said plainly."""
    r = run(["run", "--kernel", linux["bzImage"], "--memory", "16M", "--timeout", "5"],
            timeout=60)
    assert r.returncode == EXIT_CONFIG
    assert re.search(r"kernel needs 0x[0-9a-f]+ bytes at 0x1000000 but the guest has only "
                     r"16 MiB", r.stderr), r.stderr
    assert r.stdout == ""


def test_vmlinux_extracted_from_bzimage(linux):
    with open(linux["vmlinux"], "rb") as f:
        assert f.read(4) == b"\x7fELF"
    with open(linux["bzImage"], "rb") as f:
        hdr = f.read(0x210)
    assert hdr[0x202:0x206] == b"HdrS"


def strip_pvh_note(src, dst):
    """Copy a vmlinux with its Xen PHYS32_ENTRY note renamed (type 18 ->
    0x7ff0), so ember must take the Linux 64-bit boot protocol."""
    import struct
    data = bytearray(open(src, "rb").read())
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    found = 0
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            name = bytes(data[off + 12:off + 12 + namesz])
            if name == b"Xen\0" and ntype == 18:
                struct.pack_into("<I", data, off + 8, 0x7FF0)
                found += 1
            off += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    open(dst, "wb").write(data)
    return found


def test_vmlinux_through_linux_64bit_protocol(linux, tmp_path):
    # The same vmlinux without its PVH note: e_entry, zero page, identity
    # page tables, the MP table and ACPI through acpi_rsdp_addr.
    img = tmp_path / "vmlinux-nopvh"
    if not strip_pvh_note(linux["vmlinux"], img):
        pytest.skip("this vmlinux has no PVH note: the PVH case already covers it")
    r = run(["run", "--kernel", str(img), "--memory", MEMORY, "--dry-run"])
    assert r.returncode == 0 and "Linux 64-bit kernel" in r.stderr, r.stderr
    linux = dict(linux, nopvh=str(img))
    r = boot(linux, "nopvh")
    check_boot(r, linux, 1)
