"""Shared helpers for ember's integration tests: they run the real binary
on real KVM.  EMBER and GUESTS point at another build (e.g. make asan)."""
import itertools
import contextlib
import os
import shutil
import subprocess
import sys

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

TAP_ECHO = os.path.join(ROOT, "tests", "tools", "tap_echo.py")
ETHERTYPE = 0x88B5  # IEEE local experimental: what the test guests send


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


# ---- taps: created per test (ip tuntap; needs CAP_NET_ADMIN), named
# embt<pid><n>, removed afterwards; tap_echo.py (AF_PACKET on the host side)
# sends each test guest's frames back ----

_tap_seq = itertools.count()


def ip(*args):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True)


@pytest.fixture
def tap():
    """A fresh tap interface, up, IPv6 off (so the host sends nothing on
    it by itself); deleted afterwards."""
    if not shutil.which("ip"):
        pytest.skip("no ip(8) to create a tap")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun")
    name = f"embt{os.getpid()}{next(_tap_seq)}"[:15]
    r = ip("tuntap", "add", "dev", name, "mode", "tap")
    if r.returncode:
        pytest.skip(f"cannot create a tap (needs CAP_NET_ADMIN): {r.stderr.strip()}")
    try:
        try:
            with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                f.write("1")
        except OSError:
            pass  # no IPv6 here: nothing to silence
        r = ip("link", "set", name, "up")
        assert r.returncode == 0, r.stderr
        yield name
    finally:
        ip("link", "del", name)


@contextlib.contextmanager
def tap_echo(tap, timeout=60, prefix=()):
    """tap_echo.py on the tap for at most timeout seconds (run under
    prefix: `ip netns exec NS` for a tap in a namespace); yields the tap's
    name (skips the test if it cannot start)."""
    argv = [sys.executable, TAP_ECHO, tap, "--ethertype", hex(ETHERTYPE),
            "--timeout", str(timeout)]
    p = subprocess.Popen(list(prefix) + argv, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            pytest.skip(f"tap_echo.py did not start: {line}{p.stdout.read()}")
        yield tap
    finally:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def echo(tap):
    """tap_echo.py on the tap; yields the tap's name.  Its output is
    checked only for the frame count."""
    with tap_echo(tap) as t:
        yield t
