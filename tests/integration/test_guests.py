"""ember's own test unikernels on real KVM: one guest per behaviour."""
import os
import re

import pytest

from conftest import (EXIT_GUEST_HALTED, EXIT_TIMEOUT, EXIT_TRIPLE_FAULT, guest, needs_kvm,
                      run, run_guest)

pytestmark = needs_kvm


def test_hello():
    r = run_guest("hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Hello from ember guest"
    assert r.stderr == ""  # a clean exit is silent


def test_bench_hello_resets():
    r = run_guest("bench_hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"


def test_stats_report_boot_time():
    r = run_guest("bench_hello", "--stats")
    assert r.returncode == 0
    m = re.search(r"first output ([0-9.]+) ms", r.stderr)
    assert m and float(m.group(1)) > 0
    assert "guest reset (i8042)" in r.stderr


@pytest.mark.parametrize("status", [0, 1, 42, 255])
def test_exit_status_is_ember_exit_code(status):
    r = run_guest("exit_status", "--cmdline", f"status={status}")
    assert r.returncode == status
    assert f"exiting with {status}" in r.stdout
    if status:
        assert f"guest exited with status {status}" in r.stderr


def test_cmdline_echo():
    line = "console=ttyS0 answer=42 quoted='a b' x=" + "y" * 1500
    r = run_guest("cmdline", "--cmdline", line)
    assert r.returncode == 0, r.stderr
    assert f"cmdline: {line}\n" in r.stdout


def test_cmdline_empty():
    r = run_guest("cmdline")
    assert r.returncode == 0
    assert "cmdline: \n" in r.stdout


@pytest.mark.parametrize("mem,mib", [("16M", 16), ("64M", 64), ("256M", 256)])
def test_memprobe_sees_all_ram(mem, mib):
    r = run_guest("memprobe", "--memory", mem, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # The memory map reserves 0x9fc00-1 MiB; the guest rounds down.
    m = re.search(r"memprobe: (\d+) MiB ok", r.stdout)
    assert m, r.stdout
    assert mib - 1 <= int(m.group(1)) <= mib


def test_memprobe_above_4g_hole():
    # 3.5 GiB: RAM continues above the 32-bit MMIO hole at 4 GiB.
    r = run_guest("memprobe", "--memory", "3584M", "--dry-run")
    assert r.returncode == 0, r.stderr


def test_wild_access_outside_ram_does_not_harm_monitor():
    r = run_guest("memprobe", "--cmdline", "wild=0xd0000000", "--memory", "16M")
    # Unbacked guest-physical addresses read as all ones and drop writes.
    assert r.returncode in (0, 1), r.stderr
    assert "wild" in r.stdout


@pytest.mark.parametrize("n", [2, 4])
def test_smp_all_cpus_check_in(n):
    r = run_guest("smp", "--vcpus", str(n), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"smp: {n} of {n} cpus up" in r.stdout
    for k in range(1, n):
        assert f"cpu {k} checked in" in r.stdout


def test_triple_fault():
    r = run_guest("triple_fault")
    assert r.returncode == EXIT_TRIPLE_FAULT
    assert "about to triple fault" in r.stdout
    assert "triple fault" in r.stderr
    assert "rip=" in r.stderr  # registers dumped for the post-mortem


def test_endless_loop_is_stopped_by_timeout():
    r = run_guest("loop", "--timeout", "1")
    assert r.returncode == EXIT_TIMEOUT
    assert "looping forever" in r.stdout
    assert "timeout after 1 s" in r.stderr


def test_halt_without_interrupts_ends_the_vm():
    r = run_guest("halt")
    assert r.returncode == EXIT_GUEST_HALTED
    assert "halting" in r.stdout
    assert "halted" in r.stderr


def test_serial_to_file(tmp_path):
    out = tmp_path / "console.log"
    r = run_guest("hello", "--serial", str(out))
    assert r.returncode == 0
    assert r.stdout == ""
    assert out.read_text().strip() == "Hello from ember guest"


def test_serial_none():
    r = run_guest("hello", "--serial", "none")
    assert r.returncode == 0 and r.stdout == ""


def test_irqchip_on_for_single_vcpu():
    r = run_guest("hello", "--irqchip", "on")
    assert r.returncode == 0
    assert "Hello from ember guest" in r.stdout


def test_example_ini_runs():
    ini = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "hello.ini")
    r = run(["run", ini])
    assert r.returncode == 0, r.stderr
    assert "Hello from ember guest" in r.stdout


def test_many_vms_at_once():
    # One process per microVM: 20 concurrent guests do not disturb each other.
    import subprocess
    from conftest import EMBER
    procs = [subprocess.Popen([EMBER, "run", "--kernel", guest("exit_status"), "--cmdline",
                               f"status={i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(20)]
    for i, p in enumerate(procs):
        out, _ = p.communicate(timeout=60)
        assert p.returncode == i
        assert f"exiting with {i}".encode() in out


def test_reader_going_away_does_not_kill_the_vm():
    # ember | head: once the reader closes the pipe, output is dropped and
    # the guest still finishes with its own status (no SIGPIPE death).
    import subprocess
    from conftest import EMBER
    # cmdline.elf echoes 2000 bytes one port write at a time (emulated:
    # tens of ms), so the reader is gone long before it is done.
    p = subprocess.Popen([EMBER, "run", "--kernel", guest("cmdline"), "--cmdline", "x" * 2000],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(3)
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err


def test_verbose_names_accesses_that_hit_no_device():
    r = run_guest("memprobe", "--cmdline", "wild=0xd0000000", "--memory", "16M", "--verbose")
    assert r.returncode in (0, 1), r.stderr
    assert "unhandled read of guest address 0xd0000000" in r.stderr
    assert "unhandled write of guest address 0xd0000000" in r.stderr
