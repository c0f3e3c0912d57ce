"""ember-jailer against hostile input (docs/jail.md, "Paths in a jail"):
a reused jail whose last tenant replaced, in turn, each path the jailer
touches with a symlink to the host, a FIFO, a file or a directory; FIFOs
as --exec-file and --netns; uid or gid 0; an option given twice.  Each
case ends in a refusal that names the path and leaves everything as it
was, or in a correct run; a folder outside the jail (the "host") stays
byte for byte the same, and the jailer never hangs.  Root only."""
import os
import shutil
import stat
import subprocess
import time
import uuid

import pytest

from conftest import run
from test_jail import (EMBER, EXEC_NAME, EXIT_USAGE, GID, JAILER, UID, Jail, base,  # noqa: F401
                       guest, jailer_built, needs_kvm, skip_reason)

pytestmark = [needs_kvm, pytest.mark.skipif(skip_reason() is not None,
                                            reason=skip_reason() or "")]

HELLO = "Hello from ember guest\n"
TIMEOUT = 30  # seconds: a hung jailer fails its case, not the suite

# What the jailer touches in <base>/<exec name>/<id>, and whether it must
# be a directory (walked into) or is a file the jailer makes (replaced).
TARGETS = [
    ("exec-dir", "..", "dir"),  # <base>/<exec name>
    ("id-dir", ".", "dir"),     # <base>/<exec name>/<id>
    ("lock", "jail.lock", "lock"),
    ("root", "root", "dir"),
    ("run", "root/run", "dir"),
    ("run-ember", "root/run/ember", "dir"),
    ("cpuid", "root/run/ember/supported-cpuid", "file"),
    ("dev", "root/dev", "dir"),
    ("dev-net", "root/dev/net", "dir"),
    ("kvm", "root/dev/kvm", "file"),
    ("tun", "root/dev/net/tun", "file"),
    ("urandom", "root/dev/urandom", "file"),
    ("exec-copy", f"root/{EXEC_NAME}", "file"),
    ("pid-file", f"root/{EXEC_NAME}.pid", "file"),
]
KINDS = {  # what is put there -> how the jailer names it
    "link-dir": "a symbolic link",      # to the host folder
    "link-file": "a symbolic link",     # to the host's sentinel file
    "link-missing": "a symbolic link",  # to a name the host folder lacks
    "fifo": "a FIFO",
    "file": "a regular file",
    "dir": "a directory",
}


def expected(role, kind):
    """What a refusal says after the path, or None for a correct run."""
    what = KINDS[kind]
    link = " (ember-jailer follows no link in a jail)" if kind.startswith("link") else ""
    if role == "dir":
        return None if kind == "dir" else f"is {what}, not a directory{link}"
    if role == "lock":  # opened, never replaced: it may hold a live jail's lock
        return None if kind == "file" else f"is {what}, not a regular file{link}"
    return "is a directory, where the jail needs a file of its own" if kind == "dir" else None


CASES = [(t, k) for t in TARGETS for k in KINDS if not (t[2] == "dir" and k == "dir")]


def tree(top):
    """Everything under top, top included, as it is on disk: kind, mode,
    owner, size, mtime, a file's bytes, a link's target.  Never follows."""
    out = {}
    for d, dirs, files in os.walk(top):
        for path in [d] + [os.path.join(d, n) for n in dirs + files]:
            st = os.lstat(path)
            item = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                    st.st_gid, st.st_size, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    item += (f.read(),)
            elif stat.S_ISLNK(st.st_mode):
                item += (os.readlink(path),)
            out[os.path.relpath(path, top)] = item
    return out


@pytest.fixture(scope="module", autouse=True)
def cpuid_cache():
    """ember (outside a jail) writes the host's CPUID cache, so the jailer
    copies it into root/run/ember/ as well."""
    assert run(["run", "--kernel", guest("hello")]).returncode == 0


@pytest.fixture
def host(tmp_path):
    """A folder outside the jail, where a symlink leads: a sentinel file
    and a subfolder, with old times so a change would show."""
    h = tmp_path / "host"
    (h / "sub").mkdir(parents=True)
    (h / "sentinel").write_bytes(b"sentinel " + uuid.uuid4().hex.encode() + b"\n")
    (h / "sub" / "inner").write_bytes(b"inner\n")
    for p in (h / "sub" / "inner", h / "sentinel", h / "sub", h):
        os.utime(p, ns=(10**18, 10**18))
    return str(h)


def jailer(j, *opts, ember=("run", "--kernel", "/hello.elf")):
    try:
        return subprocess.run(j.argv("--new-pid-ns", *opts, ember=ember), capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ember-jailer hung ({TIMEOUT} s)")


def plant(path, kind, host):
    """Replace path (whatever it is) with kind."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    if kind == "link-dir":
        os.symlink(host, path)
    elif kind == "link-file":
        os.symlink(os.path.join(host, "sentinel"), path)
    elif kind == "link-missing":
        os.symlink(os.path.join(host, "made-by-the-jailer"), path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "file":
        with open(path, "w") as f:
            f.write("left by the last tenant\n")
    else:
        os.mkdir(path)
        with open(os.path.join(path, "keep"), "w") as f:
            f.write("left by the last tenant\n")


@pytest.mark.parametrize("target,kind", CASES, ids=[f"{t[0]}-{k}" for t, k in CASES])
def test_reused_jail(base, host, target, kind):
    name, rel, role = target
    j = Jail(base, guests=("hello",))
    try:
        r = jailer(j)  # the last tenant's jail, as the jailer left it
        assert r.returncode == 0 and r.stdout == HELLO, r.stderr
        path = os.path.normpath(os.path.join(j.dir, rel))
        if name == "cpuid" and not os.path.exists(path):
            pytest.skip("this host's CPUID cache is not valid: the jailer copies none")
        assert os.path.lexists(path), path
        plant(path, kind, host)
        host_before, jail_before = tree(host), tree(base)

        r = jailer(j)  # fails the case if it hangs
        assert tree(host) == host_before, "the host folder changed"
        assert not os.path.lexists(os.path.join(host, "made-by-the-jailer"))
        message = expected(role, kind)
        if message:
            assert r.returncode == EXIT_USAGE, (r.returncode, r.stderr)
            assert r.stderr == f"ember-jailer: {path}: {message}\n"
            assert r.stdout == ""
            assert tree(base) == jail_before, "a refused jail changed"
        else:
            assert r.returncode == 0, r.stderr
            assert r.stdout == HELLO and r.stderr == ""
            st = os.lstat(path)
            if rel.startswith("root/dev/"):
                assert stat.S_ISCHR(st.st_mode)
                assert (st.st_uid, st.st_gid) == (UID, GID)
            elif role == "dir":
                assert stat.S_ISDIR(st.st_mode)
            else:
                assert stat.S_ISREG(st.st_mode)
            if rel == f"root/{EXEC_NAME}":
                assert st.st_size == os.path.getsize(EMBER)
    finally:
        # what Jail.cleanup can take: it flocks the lock and rmtree()s the
        # jail's folder, and would open a FIFO at either
        for p, kind in ((os.path.join(j.dir, "jail.lock"), "file"), (j.dir, "dir")):
            if os.path.lexists(p) and stat.S_IFMT(os.lstat(p).st_mode) != \
                    (stat.S_IFREG if kind == "file" else stat.S_IFDIR):
                plant(p, kind, host)
        j.cleanup()


def test_fresh_jail_under_a_linked_base(tmp_path, host):
    """The chroot base itself is the operator's: a symlink there is
    followed (as the operator set it up); below it nothing is."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "jails"
    link.symlink_to(real)
    j = Jail(str(link), guests=("hello",))
    try:
        r = jailer(j)
        assert r.returncode == 0 and r.stdout == HELLO, r.stderr
        assert os.path.isfile(real / EXEC_NAME / j.id / "root" / EXEC_NAME)
    finally:
        j.cleanup()


def argv(base, *opts, **over):
    """The jailer's arguments with each option once; over replaces a
    default (None drops it)."""
    given = {"--id": "t-" + uuid.uuid4().hex[:12], "--exec-file": EMBER, "--uid": str(UID),
             "--gid": str(GID), "--chroot-base-dir": base}
    given.update({"--" + k.replace("_", "-"): v for k, v in over.items()})
    return [JAILER] + [x for k, v in given.items() if v is not None for x in (k, v)] + \
        list(opts) + ["--", "run", "--kernel", "/hello.elf"]


def refused(base, args, message):
    os.makedirs(base, exist_ok=True)
    before = tree(base)
    start = time.monotonic()
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ember-jailer hung ({TIMEOUT} s)")
    assert time.monotonic() - start < 5
    assert r.returncode == EXIT_USAGE, r.stderr
    assert r.stderr == f"ember-jailer: {message}\n"
    assert r.stdout == ""
    assert tree(base) == before


ROOT_IDS = [
    ("uid-0", {"uid": "0"}, '--uid "0": uid 0 is root; the jail needs an unprivileged uid'),
    ("uid-00", {"uid": "00"}, '--uid "00": uid 0 is root; the jail needs an unprivileged uid'),
    ("uid-root", {"uid": "root"},
     '--uid "root": resolves to uid 0 (root); the jail needs an unprivileged uid'),
    ("gid-0", {"gid": "0"},
     '--gid "0": gid 0 is root\'s group; the jail needs an unprivileged gid'),
    ("gid-root", {"gid": "root"},
     '--gid "root": resolves to gid 0 (root); the jail needs an unprivileged gid'),
]


@pytest.mark.parametrize("over,message", [c[1:] for c in ROOT_IDS], ids=[c[0] for c in ROOT_IDS])
def test_root_ids_refused(base, over, message):
    refused(base, argv(base, **over), message)


TWICE = [
    ("id", ["--id", "t-again"], None),
    ("exec-file", ["--exec-file", EMBER], None),
    ("uid", ["--uid", str(UID)], None),
    ("gid", ["--gid=100"], None),
    ("chroot-base-dir", ["--chroot-base-dir", "/srv/jailer"], None),
    ("netns", ["--netns", "/a", "--netns", "/b"], '--netns given twice ("/a", then "/b")'),
    ("cgroup-version", ["--cgroup-version", "1", "--cgroup-version", "2"],
     '--cgroup-version given twice ("1", then "2")'),
    ("parent-cgroup", ["--parent-cgroup", "a", "--parent-cgroup=a"],
     '--parent-cgroup given twice ("a", then "a")'),
    ("daemonize", ["--daemonize", "--daemonize"], "--daemonize given twice"),
    ("new-pid-ns", ["--new-pid-ns", "--new-pid-ns"], "--new-pid-ns given twice"),
    ("cgroup-file", ["--cgroup", "pids.max=10", "--cgroup", "pids.max=20"],
     '--cgroup pids.max given twice ("10", then "20")'),
    ("resource-limit", ["--resource-limit", "fsize=1", "--resource-limit", "fsize=2"],
     "--resource-limit fsize given twice"),
]


@pytest.mark.parametrize("opts,message", [c[1:] for c in TWICE], ids=[c[0] for c in TWICE])
def test_option_twice_refused(base, opts, message):
    args = argv(base, *opts)
    if message is None:  # a default option again: the message quotes both values
        opt = opts[0].split("=")[0]
        first = args[args.index(opt) + 1]
        again = opts[1] if len(opts) > 1 else opts[0].split("=", 1)[1]
        message = f'{opt} given twice ("{first}", then "{again}")'
    refused(base, args, message)


def test_repeatable_options_still_repeat(base):
    """--cgroup and --resource-limit name several files and limits."""
    j = Jail(base, guests=("hello",))
    try:
        r = jailer(j, "--resource-limit", "no-file=64", "--resource-limit", "fsize=1048576")
        assert r.returncode == 0 and r.stdout == HELLO, r.stderr
    finally:
        j.cleanup()


@pytest.fixture
def fifo(tmp_path):
    path = str(tmp_path / "a-fifo")
    os.mkfifo(path)
    return path


def test_exec_file_fifo(base, fifo):
    refused(base, argv(base, exec_file=fifo),
            f"--exec-file {fifo}: is a FIFO, not a regular file")


def test_exec_file_link_to_fifo(base, fifo, tmp_path):
    link = str(tmp_path / "ember")
    os.symlink(fifo, link)
    refused(base, argv(base, exec_file=link),
            f"--exec-file {link}: is a FIFO, not a regular file")


def test_exec_file_directory(base, tmp_path):
    d = str(tmp_path / "ember")
    os.mkdir(d)
    refused(base, argv(base, exec_file=d), f"--exec-file {d}: is a directory, not a regular file")


def test_netns_fifo(base, fifo):
    refused(base, argv(base, "--netns", fifo),
            f"--netns {fifo}: is a FIFO, not a network namespace")


def test_netns_device_not_opened(base):
    refused(base, argv(base, "--netns", "/dev/null"),
            "--netns /dev/null: is a character device, not a network namespace")
