"""ember-jailer end to end, as root: a jailed guest runs as the given uid,
chrooted, in its cgroups and namespaces; every refused input is a clear
error that leaves nothing behind (docs/jail.md).

EMBER_JAILER points at another jailer build; the chroot base is a fresh
directory per test (EMBER_JAIL_BASE moves it, e.g. when /tmp is nodev)."""
import fcntl
import os
import shutil
import signal
import stat
import struct
import subprocess
import time
import uuid

import pytest

from conftest import EMBER, EXIT_TIMEOUT, guest, needs_kvm, run

JAILER = os.path.abspath(os.environ.get("EMBER_JAILER",
                                        os.path.join(os.path.dirname(EMBER), "ember-jailer")))
EXEC_NAME = os.path.basename(EMBER)
UID, GID = 123, 100
EXIT_USAGE = 121
# a parent cgroup of our own, so nothing here touches another's
PARENT = f"ember-test-{os.getpid()}"


def has_interp(path):
    """True if the ELF at path is dynamically linked (has PT_INTERP)."""
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    if data[:4] != b"\x7fELF":
        return True
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3
               for i in range(phnum))


def skip_reason():
    if os.geteuid() != 0:
        return "the jailer needs root"
    if not os.path.exists(EMBER):
        return f"{EMBER} missing: run make"
    if has_interp(EMBER):
        return f"{EMBER} is dynamically linked (a sanitizer build); a jail needs a static one"
    return None


pytestmark = [needs_kvm, pytest.mark.skipif(skip_reason() is not None,
                                            reason=skip_reason() or "")]


@pytest.fixture(scope="module", autouse=True)
def jailer_built():
    if not os.path.exists(JAILER):
        pytest.fail(f"{JAILER} missing: run make")


def v1_mount(controller):
    """The v1 hierarchy holding controller, from /proc/mounts."""
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            if fstype == "cgroup" and controller in opts.split(","):
                return mnt
    return None


needs_v1 = pytest.mark.skipif(not all(v1_mount(c) for c in ("cpu", "pids", "cpuset")),
                              reason="no cgroup v1 cpu/pids/cpuset hierarchies here")


@pytest.fixture
def base(tmp_path):
    """A chroot base on a filesystem that allows exec and device nodes."""
    root = os.environ.get("EMBER_JAIL_BASE")
    path = os.path.join(root, uuid.uuid4().hex[:8]) if root else str(tmp_path / "jails")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    flags = os.statvfs(parent).f_flag
    if flags & (os.ST_NODEV | os.ST_NOEXEC):
        pytest.skip(f"{parent} is nodev or noexec: set EMBER_JAIL_BASE")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def snapshot(base):
    """Every path under base, and every cgroup (a directory) under ours."""
    seen = set()
    tops = [(base, True)] + [(os.path.join(v1_mount(c), PARENT), False)
                             for c in ("cpu", "pids", "cpuset", "memory") if v1_mount(c)]
    for top, files_too in tops:
        if os.path.exists(top):
            seen.add(top)
        for d, dirs, files in os.walk(top):
            seen.update(os.path.join(d, n) for n in dirs + (files if files_too else []))
    return seen


class Jail:
    def __init__(self, base, guests=("loop",)):
        self.base = base
        self.id = "t-" + uuid.uuid4().hex[:12]
        self.dir = os.path.join(base, EXEC_NAME, self.id)
        self.root = os.path.join(self.dir, "root")
        os.makedirs(self.root)
        for g in guests:  # staged by the caller, as with Firecracker's jailer
            shutil.copy(guest(g), os.path.join(self.root, g + ".elf"))
        self.cgroups = []

    def argv(self, *opts, uid=UID, gid=GID, ember=("run", "--kernel", "/loop.elf",
                                                   "--timeout", "20")):
        return ([JAILER, "--id", self.id, "--exec-file", EMBER, "--uid", str(uid),
                 "--gid", str(gid), "--chroot-base-dir", self.base] + list(opts) +
                ["--"] + list(ember))

    def run(self, *opts, timeout=60, **kw):
        return subprocess.run(self.argv(*opts, **kw), capture_output=True, text=True,
                              timeout=timeout)

    def popen(self, *opts, **kw):
        return subprocess.Popen(self.argv(*opts, **kw), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def cleanup(self):
        """docs/jail.md, "Cleanup": once the lock is free, the cgroups and
        the directory go."""
        lock = os.path.join(self.dir, "jail.lock")
        if os.path.exists(lock):
            with open(lock) as f:
                for _ in range(200):
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        time.sleep(0.02)
                else:
                    raise AssertionError(f"{lock} still held")
        for c in self.cgroups:
            path = os.path.join(v1_mount(c), PARENT, self.id)
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a zombie not reaped yet
                    time.sleep(0.02)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def jail(base):
    j = Jail(base)
    yield j
    j.cleanup()


@pytest.fixture(scope="module", autouse=True)
def parent_cgroups():
    yield
    for c in ("cpu", "pids", "cpuset", "memory"):
        m = v1_mount(c)
        if m and os.path.isdir(os.path.join(m, PARENT)):
            os.rmdir(os.path.join(m, PARENT))


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def wait_for_ember(pid, timeout=10):
    """Until pid has exec'd the jailed ember (its comm changes)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == EXEC_NAME:
                    return status(pid)
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never became {EXEC_NAME}")


def read_pidfile(j, timeout=10):
    path = os.path.join(j.root, EXEC_NAME + ".pid")
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} never written")


def test_hello_runs_jailed(base):
    j = Jail(base, guests=("hello",))
    try:
        r = j.run(ember=("run", "--kernel", "/hello.elf"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == "Hello from ember guest\n"
        assert r.stderr == ""
        # the jail as documented: the copy, the devices, the lock
        assert os.path.isfile(os.path.join(j.root, EXEC_NAME))
        for dev, (major, minor) in {"dev/kvm": (10, 232), "dev/net/tun": (10, 200),
                                    "dev/urandom": (1, 9)}.items():
            st = os.lstat(os.path.join(j.root, dev))
            assert stat.S_ISCHR(st.st_mode)
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
            assert (st.st_uid, st.st_gid) == (UID, GID)
            assert stat.S_IMODE(st.st_mode) == 0o600
        assert os.stat(j.root).st_uid == UID
    finally:
        j.cleanup()


def test_cpuid_cache_reaches_the_jail(base):
    # ember (outside) writes the host's cache; the jailer copies it in, as
    # ember cannot check it from inside (no /proc, no /sys).
    assert run(["run", "--kernel", guest("hello")]).returncode == 0
    j = Jail(base, guests=("hello",))
    try:
        r = j.run(ember=("run", "--kernel", "/hello.elf", "--stats"))
        assert r.returncode == 0, r.stderr
        assert "cpuid cached" in r.stderr
        assert os.path.isfile(os.path.join(j.root, "run", "ember", "supported-cpuid"))
    finally:
        j.cleanup()


def test_exec_in_place(jail):
    """No --daemonize, no --new-pid-ns: the jailer becomes ember (same pid)."""
    p = jail.popen()
    try:
        st = wait_for_ember(p.pid)
        assert st["Uid"].split() == [str(UID)] * 4
        assert st["Gid"].split() == [str(GID)] * 4
        assert st["Groups"].strip() == ""
        assert st["NoNewPrivs"] == "1"
        assert st["CapEff"] == "0000000000000000"
        assert st["CapPrm"] == "0000000000000000"
        assert st["CapBnd"] == "0000000000000000"
        assert st["CapAmb"] == "0000000000000000"
        # chrooted: its / is the jail's root, and nothing else is there
        assert os.stat(f"/proc/{p.pid}/root/{EXEC_NAME}").st_ino == \
            os.stat(os.path.join(jail.root, EXEC_NAME)).st_ino
        # run/ember: the host's CPUID cache, when it has a valid one
        extra = ["run"] if os.path.isdir(os.path.join(jail.root, "run")) else []
        assert sorted(os.listdir(f"/proc/{p.pid}/root")) == \
            sorted(["dev", EXEC_NAME, "loop.elf"] + extra)
        # its own mount namespace; our pid namespace (none was asked for)
        assert os.readlink(f"/proc/{p.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert os.readlink(f"/proc/{p.pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
        # nothing of ours reached it: no environment, the lock, stdio
        with open(f"/proc/{p.pid}/environ", "rb") as f:
            assert f.read() == b""
        with open(os.path.join(jail.dir, "jail.lock")) as f:
            assert int(f.read()) == p.pid
        limits = open(f"/proc/{p.pid}/limits").read()
        assert any(l.startswith("Max open files") and l.split()[3:5] == ["2048", "2048"]
                   for l in limits.splitlines())
    finally:
        p.kill()
        p.wait()


def test_guest_exit_status_passes_through(jail):
    r = jail.run(ember=("run", "--kernel", "/loop.elf", "--timeout", "0.3"))
    assert r.returncode == EXIT_TIMEOUT, r.stderr
    assert "looping forever" in r.stdout


def test_new_pid_ns(jail):
    p = jail.popen("--new-pid-ns")
    try:
        pid = read_pidfile(jail)
        st = wait_for_ember(pid)
        assert st["NSpid"].split() == [str(pid), "1"]  # pid 1 inside
        assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert st["Uid"].split()[0] == str(UID)
        with open(os.path.join(jail.dir, "jail.lock")) as f:
            assert int(f.read()) == pid
        # the waiting jailer passes a stop on (SIGKILL: pid 1 ignores SIGTERM)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 128 + signal.SIGKILL
    finally:
        p.kill()
        p.wait()
        try:
            os.kill(read_pidfile(jail, timeout=0), signal.SIGKILL)
        except (AssertionError, ProcessLookupError):
            pass


def test_new_pid_ns_status_passes_through(jail):
    r = jail.run("--new-pid-ns", ember=("run", "--kernel", "/loop.elf", "--timeout", "0.3"))
    assert r.returncode == EXIT_TIMEOUT, r.stderr
    assert "looping forever" in r.stdout


def test_daemonize_new_pid_ns(jail):
    r = jail.run("--daemonize", "--new-pid-ns",
                 ember=("run", "--kernel", "/loop.elf", "--timeout", "1"))
    assert r.returncode == 0, r.stderr  # at once, the VM runs on
    assert r.stdout == "" and r.stderr == ""
    pid = read_pidfile(jail)
    st = wait_for_ember(pid)
    assert st["NSsid"].split()[-1] == "1"  # its own session
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    end = time.time() + 10
    while os.path.exists(f"/proc/{pid}") and status(pid)["State"][0] != "Z":
        assert time.time() < end, "the daemonized VM did not stop at its timeout"
        time.sleep(0.05)


@needs_v1
def test_cgroups_v1(jail):
    jail.cgroups = ["cpu", "pids", "cpuset"]
    p = jail.popen("--parent-cgroup", PARENT, "--cgroup", "cpu.shares=512",
                   "--cgroup", "pids.max=32", "--cgroup", "cpuset.cpus=0")
    try:
        wait_for_ember(p.pid)
        with open(f"/proc/{p.pid}/cgroup") as f:
            mine = {line.split(":")[1]: line.split(":")[2].strip() for line in f}
        for c in ("cpu", "pids", "cpuset"):
            assert mine[c] == f"/{PARENT}/{jail.id}"
        d = lambda c: os.path.join(v1_mount(c), PARENT, jail.id)
        assert open(os.path.join(d("cpu"), "cpu.shares")).read().strip() == "512"
        assert open(os.path.join(d("pids"), "pids.max")).read().strip() == "32"
        assert open(os.path.join(d("cpuset"), "cpuset.cpus")).read().strip() == "0"
        # a new cpuset got its memory nodes from its parent, or nothing could join it
        assert open(os.path.join(d("cpuset"), "cpuset.mems")).read().strip() != ""
    finally:
        p.kill()
        p.wait()


@needs_v1
def test_new_pid_ns_cgroups_hold_only_the_vm(jail):
    """The waiting jailer leaves the jail's cgroups: only ember counts."""
    jail.cgroups = ["pids"]
    p = jail.popen("--new-pid-ns", "--parent-cgroup", PARENT, "--cgroup", "pids.max=8")
    try:
        pid = read_pidfile(jail)
        wait_for_ember(pid)
        leaf = os.path.join(v1_mount("pids"), PARENT, jail.id)
        with open(os.path.join(leaf, "cgroup.procs")) as f:
            assert [int(x) for x in f.read().split()] == [pid]
        with open(f"/proc/{p.pid}/cgroup") as f:
            assert f"pids:/{PARENT}/{jail.id}" not in f.read()
    finally:
        p.send_signal(signal.SIGTERM)  # forwarded to ember as SIGKILL
        p.wait(timeout=10)


def test_memory_cgroup_under_our_own(jail):
    """memory v1 where this test already lives (never above it)."""
    m = v1_mount("memory")
    if not m:
        pytest.skip("no cgroup v1 memory hierarchy")
    with open("/proc/self/cgroup") as f:
        here = next(l.split(":")[2].strip() for l in f if "memory" in l.split(":")[1].split(","))
    parent = (here.strip("/") + "/" if here.strip("/") else "") + PARENT
    p = jail.popen("--parent-cgroup", parent, "--cgroup", "memory.limit_in_bytes=512M")
    try:
        wait_for_ember(p.pid)
        with open(f"/proc/{p.pid}/cgroup") as f:
            assert f"memory:/{parent}/{jail.id}\n" in f.read()
        leaf = os.path.join(m, parent, jail.id)
        assert int(open(os.path.join(leaf, "memory.limit_in_bytes")).read()) == 512 << 20
    finally:
        p.kill()
        p.wait()
        for d in (os.path.join(m, parent, jail.id), os.path.join(m, parent)):
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def test_netns(jail):
    if not shutil.which("ip"):
        pytest.skip("no ip(8)")
    name = f"ember-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns = f"/var/run/netns/{name}"
        p = jail.popen("--netns", ns)
        try:
            wait_for_ember(p.pid)
            assert os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(ns).st_ino
        finally:
            p.kill()
            p.wait()
    finally:
        subprocess.run(["ip", "netns", "del", name])


def test_uid_gid_by_name(jail):
    p = jail.popen(uid="nobody", gid="nogroup")
    try:
        st = wait_for_ember(p.pid)
        assert st["Uid"].split()[0] == "65534"
        assert st["Gid"].split()[0] == "65534"
        assert os.stat(os.path.join(jail.root, "dev/kvm")).st_uid == 65534
    finally:
        p.kill()
        p.wait()


def test_resource_limits(jail):
    p = jail.popen("--resource-limit", "no-file=64", "--resource-limit", "fsize=1048576")
    try:
        wait_for_ember(p.pid)
        limits = {l[:26].strip(): l[26:].split()[:2]
                  for l in open(f"/proc/{p.pid}/limits").read().splitlines()[1:]}
        assert limits["Max open files"] == ["64", "64"]
        assert limits["Max file size"] == ["1048576", "1048576"]
    finally:
        p.kill()
        p.wait()


def test_live_id_refused(base):
    j = Jail(base)
    p = j.popen()
    try:
        wait_for_ember(p.pid)
        before = snapshot(base)
        r = j.run(ember=("run", "--kernel", "/loop.elf"))
        assert r.returncode == EXIT_USAGE
        assert f"--id {j.id}: a jail with this id is running (pid {p.pid}" in r.stderr
        assert snapshot(base) == before
        assert p.poll() is None  # the live one is untouched
        with open(f"/proc/{p.pid}/comm") as f:
            assert f.read().strip() == EXEC_NAME
    finally:
        p.kill()
        p.wait()
        j.cleanup()


def test_dead_jail_is_reused(jail):
    """A finished jail's leftovers do not block its id (Firecracker: a
    directory that exists is used as it is)."""
    for _ in range(2):
        r = jail.run(ember=("run", "--kernel", "/loop.elf", "--timeout", "0.2"))
        assert r.returncode == EXIT_TIMEOUT, r.stderr
        time.sleep(0.1)  # the teardown child holds the lock a moment longer


BAD = [
    ("bad-id", ["--id", "bad_id"], '--id "bad_id": use 1 to 64 characters'),
    ("id-too-long", ["--id", "x" * 65], "use 1 to 64 characters"),
    ("empty-id", ["--id", ""], '--id "": use 1 to 64'),
    ("missing-exec", ["--exec-file", "/nonexistent/ember"],
     "--exec-file /nonexistent/ember: No such file or directory"),
    ("dynamic-exec", ["--exec-file", "/bin/true"], "dynamically linked"),
    ("not-elf-exec", ["--exec-file", "/etc/hostname"], "not an ELF file"),
    ("unknown-uid", ["--uid", "no-such-user-x"], '--uid "no-such-user-x": no such user'),
    ("unknown-gid", ["--gid", "no-such-group-x"], '--gid "no-such-group-x": no such group'),
    ("bad-uid", ["--uid", "-5"], '--uid "-5": not an id'),
    ("no-cgroup-file", ["--parent-cgroup", PARENT, "--cgroup", "cpu.no_such_file=1"],
     "--cgroup cpu.no_such_file: no such file in"),
    ("bad-cgroup-value", ["--parent-cgroup", PARENT, "--cgroup", "pids.max=lots"],
     "--cgroup pids.max=lots: the kernel refused the value"),
    ("late-bad-cgroup", ["--parent-cgroup", PARENT, "--cgroup", "cpu.shares=100",
                         "--cgroup", "pids.max=lots"], "the kernel refused the value"),
    ("unknown-controller", ["--cgroup", "blkio.weight=100"], "CONTROLLER one of"),
    ("missing-netns", ["--netns", "/nonexistent/netns"],
     "--netns /nonexistent/netns: No such file or directory"),
    ("not-a-netns", ["--netns", "/etc/hostname"], "not a network namespace"),
    ("bad-rlimit", ["--resource-limit", "nofile=3"], "expected no-file=N or fsize=N"),
    ("bad-cgroup-version", ["--cgroup-version", "3"], "1 or 2"),
    ("unknown-option", ["--seccomp-level", "2"], "unknown option --seccomp-level"),
]


@pytest.mark.parametrize("case,opts,message", BAD, ids=[b[0] for b in BAD])
def test_refused_inputs_leave_nothing(base, case, opts, message):
    if "cgroup" in case and not v1_mount("cpu"):
        pytest.skip("no cgroup v1 here")
    os.makedirs(base, exist_ok=True)
    before = snapshot(base)
    jid = "t-" + uuid.uuid4().hex[:12]
    # each option once: a case's own value replaces the default one
    given = {"--id": jid, "--exec-file": EMBER, "--uid": str(UID), "--gid": str(GID),
             "--chroot-base-dir": base}
    argv = [JAILER] + [x for k, v in given.items() if k not in opts for x in (k, v)] + \
        opts + ["--", "run", "--kernel", "/loop.elf"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert r.stderr.startswith("ember-jailer: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr
    assert r.stdout == ""
    assert snapshot(base) == before
    for c in ("cpu", "pids"):
        if v1_mount(c):
            assert not os.path.exists(os.path.join(v1_mount(c), PARENT, jid))


def test_missing_required_options():
    r = subprocess.run([JAILER, "--id", "x"], capture_output=True, text=True)
    assert r.returncode == EXIT_USAGE
    assert "ember-jailer: --exec-file is required" in r.stderr
    r = subprocess.run([JAILER, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "--chroot-base-dir" in r.stdout and "--new-pid-ns" in r.stdout


def test_default_chroot_base():
    """Without --chroot-base-dir the jail lives in /srv/jailer."""
    made = [d for d in ("/srv/jailer", f"/srv/jailer/{EXEC_NAME}") if not os.path.exists(d)]
    j = Jail("/srv/jailer", guests=("hello",))
    try:
        argv = [a for a in j.argv(ember=("run", "--kernel", "/hello.elf"))]
        i = argv.index("--chroot-base-dir")
        del argv[i:i + 2]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "Hello from ember guest\n"
        assert os.path.isfile(f"/srv/jailer/{EXEC_NAME}/{j.id}/root/{EXEC_NAME}")
    finally:
        j.cleanup()
        for d in reversed(made):
            os.rmdir(d)


def test_static_ember_runs_in_empty_chroot(tmp_path):
    """The copy in a jail sees nothing but the jail: no loader, no
    libraries, no /proc, no /sys."""
    root = tmp_path / "empty"
    (root / "dev").mkdir(parents=True)
    shutil.copy(EMBER, root / "ember")
    shutil.copy(guest("hello"), root / "hello.elf")
    os.mknod(root / "dev" / "kvm", stat.S_IFCHR | 0o600, os.makedev(10, 232))
    assert sorted(os.listdir(root)) == ["dev", "ember", "hello.elf"]
    chroot = shutil.which("chroot") or pytest.skip("no chroot(8)")
    r = subprocess.run([chroot, str(root), "/ember", "run", "--kernel", "/hello.elf"],
                       capture_output=True, text=True, timeout=60, env={})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello from ember guest\n"
