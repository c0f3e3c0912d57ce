"""The drop phase (docs/jail.md): each role's seccomp allowlist, seen
through a test-only probe that links jail/, and ember itself with its
filters on: /proc/PID/status of a running VM, and every guest kind still
running.

SECCOMP_PROBE points at another probe build (default: beside EMBER, in
tools/)."""
import os
import signal
import subprocess
import time

import pytest

from conftest import (EMBER, EXIT_CONFIG, EXIT_GUEST_HALTED, EXIT_TIMEOUT, EXIT_TRIPLE_FAULT,
                      guest, needs_kvm, run_guest)

PROBE = os.path.abspath(os.environ.get(
    "SECCOMP_PROBE", os.path.join(os.path.dirname(EMBER), "tools", "seccomp_probe")))
ROLES = ("vmm", "vcpu", "api", "mig")


@pytest.fixture(scope="module")
def kills():
    """Whether ENFORCE kills in this build (sanitizer builds only log)."""
    if not os.path.exists(PROBE):
        pytest.fail(f"{PROBE} missing: run make")
    return subprocess.run([PROBE, "--kills"]).returncode == 0


def probe(role, mode, action, *pre):
    return subprocess.run([PROBE, *pre, role, mode, action], capture_output=True, text=True,
                          timeout=30)


def assert_killed(r, action, kills):
    assert f"{action}: calling\n" in r.stdout, r.stderr
    if kills:
        assert r.returncode == -signal.SIGSYS, (r.returncode, r.stdout, r.stderr)
        assert "survived" not in r.stdout
    else:
        assert r.returncode == 0 and f"{action}: survived" in r.stdout


def assert_survived(r, action):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == f"{action}: calling\n{action}: survived\n"


# (action, roles that may do it); every other role dies of SIGSYS.
CASES = [
    ("allowed", ROLES),                  # write, read, futex, the role's exit
    ("forbidden", ()),                   # getppid: in no list
    ("open", ()),                        # nothing opens files after the drop
    ("ioctl", ()),                       # TCGETS: an ioctl, but not a KVM request
    ("kvm-ioctl", ("vmm", "vcpu")),      # KVM_RUN (on a bad fd: EBADF)
    ("kvm-memslot", ("vmm",)),           # KVM_SET_USER_MEMORY_REGION: vm_track_dirty
    ("kvm-create", ()),                  # KVM_CREATE_VCPU: building is before the drop
    ("kick", ("vmm", "vcpu")),           # tgkill(self, SIGUSR1): vcpu_kick
    ("signal", ()),                      # tgkill(self, SIGTERM)
    ("clone-fork", ()),                  # clone without CLONE_VM: a fork
    ("clone-vm", ("vmm",)),              # the teardown child's clone(CLONE_VM)
    ("x32", ()),                         # the x32 ABI: a foreign architecture
    ("madvise", ("vcpu", "api", "mig")), # MADV_DONTNEED: a thread's exit
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action,allowed", CASES, ids=[c[0] for c in CASES])
def test_enforce(kills, role, action, allowed):
    r = probe(role, "enforce", action)
    if role in allowed:
        assert_survived(r, action)
    else:
        assert_killed(r, action, kills)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("mode", ["log", "off"])
def test_log_and_off_let_it_through(role, mode):
    assert_survived(probe(role, mode, "forbidden"), "forbidden")
    assert_survived(probe(role, mode, "open"), "open")


def logged_getppids():
    """Audit records (type 1326) of the probe's getppid (110) in dmesg."""
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        pytest.skip("no dmesg")
    if not log:
        pytest.skip("the kernel log is not readable here")
    return sum(1 for line in log.splitlines() if "type=1326" in line and
               'comm="seccomp_probe"' in line and " syscall=110 " in line and
               "code=0x7ffc0000" in line)  # SECCOMP_RET_LOG


def test_log_mode_reaches_the_kernel_log():
    before = logged_getppids()
    assert_survived(probe("vcpu", "log", "forbidden"), "forbidden")
    time.sleep(0.2)
    if logged_getppids() == before:
        pytest.skip("no new audit record: auditd takes them, or the kernel rate-limits")


def status_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_probe_status_after_the_drop(kills):
    p = subprocess.Popen([PROBE, "--drop-caps", "vmm", "enforce", "wait"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "wait: calling\n"
        st = status_of(p.pid)
        assert st["Seccomp"] == "2"
        assert st["NoNewPrivs"] == "1"
        if os.geteuid() == 0:
            assert st["CapEff"] == "0000000000000000"
            assert st["CapPrm"] == "0000000000000000"
            assert st["CapBnd"] == "0000000000000000"
    finally:
        p.stdin.close()
        assert p.wait(timeout=10) == 0


# ember itself, with its filters: the lead's integration of jail/
# (vm_run's drop phase, --seccomp, --no-seccomp).

def ember_status(*args, vcpus=1, filtered=True):
    """Start a looping guest; once it prints (vCPU 0 runs, so the main
    thread has its filter) and, when filtered, every vCPU thread has
    loaded its own, return (process, main status, each thread's status)."""
    p = subprocess.Popen([EMBER, "run", "--kernel", guest("loop"), "--timeout", "30",
                          "--vcpus", str(vcpus), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "looping forever\n"
    end = time.time() + 10
    while True:
        tasks = {t: status_of(f"{p.pid}/task/{t}") for t in os.listdir(f"/proc/{p.pid}/task")}
        # KVM's own workers (kvm-nx-lpage-recovery) live in the thread
        # group too; ember's threads are the ones named ember
        mine = {t: s for t, s in tasks.items() if s["Name"] == "ember"}
        ready = len(mine) == vcpus and all(s["Seccomp"] != "0" for s in mine.values())
        if not filtered or ready or time.time() > end:
            return p, status_of(p.pid), mine
        time.sleep(0.01)


def stop(p):
    p.kill()
    p.wait()


@needs_kvm
@pytest.mark.parametrize("vcpus", [1, 2])
def test_running_vm_is_dropped(vcpus):
    p, st, tasks = ember_status(vcpus=vcpus)
    try:
        assert st["Seccomp"] == "2"
        assert st["NoNewPrivs"] == "1"
        assert st["CapEff"] == "0000000000000000"
        assert st["CapPrm"] == "0000000000000000"
        assert st["CapInh"] == "0000000000000000"
        assert st["CapAmb"] == "0000000000000000"
        if os.geteuid() == 0:  # an unprivileged ember cannot empty it
            assert st["CapBnd"] == "0000000000000000"
        assert len(tasks) == vcpus
        for t, s in tasks.items():  # every vCPU thread, each its own filter
            assert s["Seccomp"] == "2", t
            assert s["Seccomp_filters"] == "1", t
            assert s["NoNewPrivs"] == "1", t
            assert s["CapEff"] == "0000000000000000", t
    finally:
        stop(p)


@needs_kvm
def test_seccomp_log_mode():
    p, st, _ = ember_status("--seccomp=log")
    try:
        assert st["Seccomp"] == "2"  # a filter, whose default is to log
        assert st["CapEff"] == "0000000000000000"
    finally:
        stop(p)


@needs_kvm
@pytest.mark.parametrize("flag", [("--seccomp", "off"), ("--no-seccomp",)])
def test_seccomp_off_still_drops_capabilities(flag):
    p, st, _ = ember_status(*flag, filtered=False)
    try:
        assert st["Seccomp"] == "0"
        assert st["NoNewPrivs"] == "1"
        assert st["CapEff"] == "0000000000000000"
    finally:
        stop(p)


def test_seccomp_bad_mode():
    r = subprocess.run([EMBER, "run", "--kernel", "x.elf", "--seccomp=kill"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == EXIT_CONFIG
    assert '--seccomp: "kill" is not enforce, log or off' in r.stderr


# Every guest kind still runs with the filters on (the default), down to
# the paths that only run after a failure (the register dump).
GUESTS = [
    ("hello", [], 0, "Hello from ember guest\n"),
    ("smp", ["--vcpus", "4"], 0, "smp: 4 of 4 cpus up\n"),
    ("exit_status", ["--cmdline", "status=7"], 7, "exiting with 7"),
    ("triple_fault", [], EXIT_TRIPLE_FAULT, "about to triple fault"),
    ("halt", [], EXIT_GUEST_HALTED, ""),
    ("loop", ["--timeout", "0.3"], EXIT_TIMEOUT, "looping forever"),
    ("loop", ["--timeout", "0.3", "--vcpus", "2"], EXIT_TIMEOUT, "looping forever"),
    ("cpuid", [], 0, "cpuid:"),
    ("memprobe", [], 0, "memprobe:"),
    ("cmdline", ["--cmdline", "a=b"], 0, "cmdline: a=b"),
]


@needs_kvm
@pytest.mark.parametrize("name,args,code,out", GUESTS,
                         ids=[f"{g[0]}{'-' + '-'.join(g[1]) if g[1] else ''}" for g in GUESTS])
def test_guests_run_with_filters(name, args, code, out):
    r = run_guest(name, *args)
    assert r.returncode != -signal.SIGSYS, "a filter killed ember: " + r.stderr
    assert r.returncode == code, r.stdout + r.stderr
    assert out in r.stdout
    if name == "triple_fault":  # vcpu_dump's ioctls pass the filter
        assert "rip=" in r.stderr and "cr0=" in r.stderr
