"""Shared helpers for ember's integration tests: they run the real binary
on real KVM.  EMBER and GUESTS point at another build (e.g. make asan)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMBER = os.path.abspath(os.environ.get("EMBER", os.path.join(ROOT, "build", "ember")))
GUESTS = os.path.abspath(os.environ.get("GUESTS", os.path.join(ROOT, "build", "guest")))

# ember's documented exit codes (README.md, "Exit codes")
EXIT_CONFIG = 121
EXIT_HOST = 122
EXIT_TRIPLE_FAULT = 123
EXIT_TIMEOUT = 124
EXIT_KVM_ERROR = 125
EXIT_GUEST_HALTED = 126
EXIT_GUEST_FAULT = 120


def kvm_usable():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError as e:
        return False, f"/dev/kvm unusable: {e.strerror}"
    os.close(fd)
    return True, ""


needs_kvm = pytest.mark.skipif(not kvm_usable()[0], reason=kvm_usable()[1] or "no KVM")


def guest(name):
    path = os.path.join(GUESTS, name + ".elf")
    if not os.path.exists(path):
        pytest.fail(f"test guest {path} missing: run make guests")
    return path


def run(args, timeout=60, **kw):
    """Run ember with args; a hang fails the test instead of the suite."""
    try:
        return subprocess.run([EMBER] + list(args), capture_output=True, text=True,
                              timeout=timeout, errors="replace", **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"ember {' '.join(args)} did not finish in {timeout} s "
                    f"(stdout: {e.stdout!r})")


def run_guest(name, *args, timeout=60):
    return run(["run", "--kernel", guest(name)] + list(args), timeout=timeout)
