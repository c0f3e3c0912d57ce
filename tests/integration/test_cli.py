"""ember's command line and its handling of bad input: each mistake gets a
message that names what is wrong and the documented exit code."""
import os

import pytest

from conftest import EXIT_CONFIG, guest, needs_kvm, run


def test_help_lists_commands():
    r = run(["--help"])
    assert r.returncode == 0
    assert "run" in r.stdout and "usage: ember" in r.stdout


@pytest.mark.parametrize("args", [["run", "--help"], ["help", "run"], ["run", "-h"]])
def test_run_help(args):
    r = run(args)
    assert r.returncode == 0
    for opt in ("--kernel", "--memory", "--vcpus", "--cmdline", "--initrd", "--timeout",
                "--dry-run"):
        assert opt in r.stdout
    assert "Exit codes" in r.stdout


def test_version():
    r = run(["version"])
    assert r.returncode == 0 and r.stdout.startswith("ember ")


def test_no_command_is_usage_error():
    r = run([])
    assert r.returncode == EXIT_CONFIG
    assert "usage" in r.stderr


def test_unknown_command():
    r = run(["frobnicate"])
    assert r.returncode == EXIT_CONFIG
    assert "unknown command 'frobnicate'" in r.stderr


def test_unknown_option():
    r = run(["run", "--kernle", "x"])
    assert r.returncode == EXIT_CONFIG
    assert "unknown option --kernle" in r.stderr


def test_option_without_value():
    r = run(["run", "--kernel"])
    assert r.returncode == EXIT_CONFIG
    assert "--kernel needs a value" in r.stderr


def test_no_kernel():
    r = run(["run"])
    assert r.returncode == EXIT_CONFIG
    assert "kernel" in r.stderr


def test_missing_kernel_file(tmp_path):
    path = tmp_path / "nope.elf"
    r = run(["run", "--kernel", str(path)])
    assert r.returncode == EXIT_CONFIG
    assert str(path) in r.stderr and "No such file" in r.stderr


def test_kernel_that_is_a_directory(tmp_path):
    r = run(["run", "--kernel", str(tmp_path)])
    assert r.returncode == EXIT_CONFIG
    assert "not a regular file" in r.stderr


def test_empty_kernel(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    r = run(["run", "--kernel", str(path)])
    assert r.returncode == EXIT_CONFIG
    assert "empty" in r.stderr


def test_kernel_not_elf_or_bzimage(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(b"#!/bin/sh\necho not a kernel\n" * 100)
    r = run(["run", "--kernel", str(path)])
    assert r.returncode == EXIT_CONFIG
    assert "not an ELF executable or a Linux bzImage" in r.stderr
    assert str(path) in r.stderr


def test_truncated_elf(tmp_path):
    data = open(guest("hello"), "rb").read()
    path = tmp_path / "trunc.elf"
    path.write_bytes(data[:40])
    r = run(["run", "--kernel", str(path)])
    assert r.returncode == EXIT_CONFIG
    assert "truncated" in r.stderr


def test_host_binary_is_refused():
    # A dynamically linked host program is an ELF, but not a kernel.
    r = run(["run", "--kernel", "/bin/true"])
    assert r.returncode == EXIT_CONFIG
    assert "/bin/true" in r.stderr


def test_memory_too_small_for_kernel():
    r = run(["run", "--kernel", guest("hello"), "--memory", "1M"])
    assert r.returncode == EXIT_CONFIG
    assert "outside guest RAM" in r.stderr and "more memory" in r.stderr


@pytest.mark.parametrize("value,msg", [("12Q", "not a size"), ("0", ""), ("-5M", ""),
                                       ("2T", "")])
def test_bad_memory(value, msg):
    r = run(["run", "--kernel", guest("hello"), "--memory", value])
    assert r.returncode == EXIT_CONFIG
    assert "memory" in r.stderr and msg in r.stderr


@pytest.mark.parametrize("value", ["0", "33", "-1", "two", "1000000000000"])
def test_bad_vcpus(value):
    r = run(["run", "--kernel", guest("hello"), "--vcpus", value])
    assert r.returncode == EXIT_CONFIG
    assert "vcpus" in r.stderr


def test_cmdline_too_long():
    r = run(["run", "--kernel", guest("hello"), "--cmdline", "x" * 3000])
    assert r.returncode == EXIT_CONFIG
    assert "cmdline" in r.stderr and "too long" in r.stderr


def test_bad_timeout():
    r = run(["run", "--kernel", guest("hello"), "--timeout", "soon"])
    assert r.returncode == EXIT_CONFIG
    assert "timeout" in r.stderr


def test_irqchip_off_with_smp():
    r = run(["run", "--kernel", guest("hello"), "--vcpus", "2", "--irqchip", "off"])
    assert r.returncode == EXIT_CONFIG
    assert "irqchip" in r.stderr


def test_dry_run_validates_without_running():
    r = run(["run", "--kernel", guest("hello"), "--dry-run"])
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stderr and "PVH" in r.stderr
    assert r.stdout == ""  # the guest never ran


def test_dry_run_still_catches_bad_kernel(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 4096)
    r = run(["run", "--kernel", str(path), "--dry-run"])
    assert r.returncode == EXIT_CONFIG


def test_unwritable_serial_file(tmp_path):
    r = run(["run", "--kernel", guest("hello"), "--serial", str(tmp_path / "no" / "dir" / "x")])
    assert r.returncode == EXIT_CONFIG
    assert "serial output" in r.stderr


def write_ini(tmp_path, text, name="vm.ini"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ini_unknown_key_names_file_and_line(tmp_path):
    ini = write_ini(tmp_path, f"[vm]\nkernel = {guest('hello')}\ncolour = blue\n")
    r = run(["run", str(ini)])
    assert r.returncode == EXIT_CONFIG
    assert f"{ini}:3:" in r.stderr and "colour" in r.stderr and "unknown key" in r.stderr


def test_ini_unknown_section(tmp_path):
    ini = write_ini(tmp_path, f"[vm]\nkernel = {guest('hello')}\n[disk]\nsize = 1G\n")
    r = run(["run", str(ini)])
    assert r.returncode == EXIT_CONFIG
    assert f"{ini}:4:" in r.stderr and "disk" in r.stderr


def test_ini_bad_value(tmp_path):
    ini = write_ini(tmp_path, f"[vm]\nkernel = {guest('hello')}\nmemory = lots\n")
    r = run(["run", str(ini)])
    assert r.returncode == EXIT_CONFIG
    assert f"{ini}:3:" in r.stderr and "memory" in r.stderr


def test_ini_malformed_line(tmp_path):
    ini = write_ini(tmp_path, f"[vm]\nkernel = {guest('hello')}\nthis is not ini\n")
    r = run(["run", str(ini)])
    assert r.returncode == EXIT_CONFIG
    assert f"{ini}:3:" in r.stderr


def test_ini_missing_file(tmp_path):
    r = run(["run", str(tmp_path / "absent.ini")])
    assert r.returncode == EXIT_CONFIG
    assert "absent.ini" in r.stderr


@needs_kvm
def test_ini_relative_kernel_path(tmp_path):
    os.symlink(guest("hello"), tmp_path / "k.elf")
    ini = write_ini(tmp_path, "[vm]\nname = rel\nkernel = k.elf\nmemory = 32M\n")
    r = run(["run", str(ini)], cwd="/")
    assert r.returncode == 0, r.stderr
    assert "Hello from ember guest" in r.stdout


@needs_kvm
def test_command_line_overrides_ini(tmp_path):
    ini = write_ini(tmp_path, f"[vm]\nkernel = {guest('exit_status')}\ncmdline = status=3\n")
    r = run(["run", str(ini), "--cmdline", "status=9"])
    assert r.returncode == 9, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--irqchip", "sometimes"], "irqchip"),
    (["--name", "bad name!"], "name"),
    (["--mem=lots"], "--mem"),
    (["--block:storage"], "expected --block:NAME=VALUE"),
    (["--block:=disk.img"], "expected --block:NAME=VALUE"),
    (["--block:bad-name!=disk.img"], "bad-name!"),
    (["--net-mac:svc=zz:00:00:00:00:01"], "mac"),
    (["--net:svc=" + "t" * 40], "longer than 15"),
    (["--net-mac:svc=02:00:00:00:00:01"], "no tap"),
])
def test_bad_option_values(args, message):
    r = run(["run", "--kernel", guest("hello")] + args)
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert message in r.stderr, r.stderr
    assert r.stdout == ""  # nothing ran


def test_double_dash_needs_a_kernel():
    r = run(["run", "--"])
    assert r.returncode == EXIT_CONFIG
    assert "-- must be followed by a kernel" in r.stderr


def test_double_dash_cmdline_too_long():
    r = run(["run", "--", guest("hello"), "x" * 9000])
    assert r.returncode == EXIT_CONFIG
    assert "-- ARGS" in r.stderr and "longer than" in r.stderr
