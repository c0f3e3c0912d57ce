"""Live moves between emberd hosts and maintenance mode (docs/ha.md
"Moving a VM", "Maintenance mode"), with real etcd, real KVM and real
network namespaces: three emberd hosts (etcd_util.Cluster), joined
to each other by a bridge in a namespace of their own (the migration
LAN), each listening for moves with a pre-shared key.

The checker lists the jailed embers every 10 ms (never asking emberd)
and, for a VM seen under two hosts, asks each ember (GET /) whether it
runs the VM (a migration's target is "Not started" or "Paused" until it
resumes; a source stopped for good is "Paused"): any VM running under
two hosts at once fails the test."""
import http.client
import json
import os
import re
import socket
import subprocess
import time

import pytest

import etcd_util
from conftest import EMBER, guest, needs_kvm
from test_emberd_cluster import _why_not

pytestmark = [needs_kvm, pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]

PORT = 7700
EMBERCTL = os.path.join(os.path.dirname(EMBER), "emberctl")


class _Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=0.5)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def ember_runs(pid):
    """Whether ember's own API says its VM runs (GET / "state": a fresh
    receiving ember is "Not started", a migration end that stopped or
    waits is "Paused"); True when it does not answer in time."""
    try:
        c = _Unix(f"/proc/{pid}/root/api.sock")
        c.request("GET", "/")
        js = json.loads(c.getresponse().read())
        c.close()
        return js.get("state") == "Running"  # not "Not started", not "Paused"
    except (ConnectionRefusedError, FileNotFoundError):
        # its API is closed: the process is exiting (a source after GOGO
        # closes it as it exits; a live one never refuses)
        return False
    except (OSError, ValueError, http.client.HTTPException):
        return True  # no answer in time: counted as running


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.split(None, 1)[1].strip() for line in f
                            if line.startswith(("State", "PPid")))
    except OSError:
        return "gone"


class MoveChecker(etcd_util.Checker):
    """etcd_util.Checker, counting only embers that run their VM; what
    it saw of each double is kept in seen (for the failure message)."""

    seen = []

    def _run(self):
        real = etcd_util.ember_procs

        def procs():
            ps = real()
            roots = {}
            for pid, root in ps.items():
                for h in self.hosts:
                    vm = h.vm_of_root(root)
                    if vm:
                        roots.setdefault(vm, []).append(pid)
            # only a VM seen twice needs asking (the API costs a connect)
            out = {pid: root for pid, root in ps.items()
                   if not any(pid in p and len(p) > 1 and not ember_runs(pid)
                              for p in roots.values())}
            for vm, p in roots.items():
                if len([x for x in p if x in out]) > 1:
                    self.seen.append((time.monotonic(), vm, [(x, ps[x], _state(x)) for x in p]))
            return out

        etcd_util.ember_procs = procs
        try:
            super()._run()
        finally:
            etcd_util.ember_procs = real


def lan_up(c):
    """A bridge in a namespace of its own, a veth from each host's
    namespace into it: the hosts reach each other at 10.233.X.(i+1)."""
    octet = c.net.octet
    lan = f"{c.net.ns[0]}-lan"
    etcd_util.ip("netns", "add", lan)
    c.lan = lan
    etcd_util.ip("link", "add", "br0", "type", "bridge", ns=lan)
    etcd_util.ip("link", "set", "br0", "up", ns=lan)
    addrs = []
    for i, ns in enumerate(c.net.ns):
        a, b = f"mvl{i}", f"mvh{i}"
        etcd_util.ip("link", "add", a, "type", "veth", "peer", "name", b, "netns", ns, ns=lan)
        etcd_util.ip("link", "set", a, "master", "br0", ns=lan)
        etcd_util.ip("link", "set", a, "up", ns=lan)
        addr = f"10.233.{octet}.{i + 1}"
        etcd_util.ip("addr", "add", addr + "/24", "dev", b, ns=ns)
        etcd_util.ip("link", "set", b, "up", ns=ns)
        addrs.append(addr)
    return addrs


def start_host(c, i, addrs, crash=None):
    env_was = os.environ.pop("EMBERD_TEST_CRASH", None)
    if crash:
        os.environ["EMBERD_TEST_CRASH"] = crash
    try:
        c.hosts[i].start(c.endpoints(i), "--migrate-listen", f"{addrs[i]}:{PORT}",
                         "--migrate-psk", c.psk)
    finally:
        os.environ.pop("EMBERD_TEST_CRASH", None)
        if env_was is not None:
            os.environ["EMBERD_TEST_CRASH"] = env_was


def make(tmp, crash=None):
    flags = os.statvfs(str(tmp)).f_flag
    if flags & (os.ST_NODEV | os.ST_NOEXEC):
        pytest.skip(f"{tmp} is nodev or noexec: the jails need exec and devices")
    c = etcd_util.Cluster(str(tmp), n_hosts=3)
    c.checker = MoveChecker(c.hosts)
    c.lan = None
    c.psk = os.path.join(str(tmp), "move.psk")
    with open(os.open(c.psk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("ember-migrate:" + os.urandom(32).hex() + "\n")
    try:
        c.up()
        addrs = lan_up(c)
    except Exception:
        close(c)
        raise
    c.addrs = addrs
    c.crash = crash
    return c


def close(c):
    c.close()
    if c.lan:
        etcd_util.ip("netns", "del", c.lan, check=False)


def api(h, method, path, body=None):
    cmd = ["curl", "-s", "-m", "20", "-X", method, "-w", "\n%{http_code}",
           "--unix-socket", h.sock, "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    out, _, code = r.stdout.rpartition("\n")
    try:
        return int(code or 0), json.loads(out) if out else None
    except ValueError:
        return int(code or 0), out


def wait_for(what, cond, c, timeout=60):
    v = etcd_util.wait_until(cond, timeout)
    if not v:
        pytest.fail(f"{what}: not within {timeout} s\n{c.diagnose()}")
    return v


def no_doubles(c):
    assert not c.checker.violations, \
        f"a VM ran on two hosts at once: {c.checker.violations[:5]}\n" \
        f"{c.checker.seen[:3]}\n{c.diagnose()}"


def console(h, vm):
    try:
        with open(os.path.join(h.state, "vms", vm, "console.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def counts(text):
    return [int(n) for n in re.findall(r"count (\d+)\n", text)]


def evs(c, vm, kinds):
    return [e for e in c.events(kinds) if e.get("vm") == vm]


SRC = ["src-hello", "src-sending", "src-handover", "src-txn"]
DST = ["dst-receiving", "dst-ready", "dst-owned"]


# First in the file: each makes its own cluster (the namespaces are named
# by pid), before the module's shared one exists.
@pytest.mark.parametrize("phase", SRC + DST)
def test_crash_at_each_step_leaves_one_copy(tmp_path, phase):
    c = make(tmp_path, crash=phase)
    try:
        c.write_vm("k0", guest("counter"), cmdline="spin=200000000",
                   emberd={"snapshot_interval": "1s"})
        for i in range(3):
            start_host(c, i, c.addrs, crash=phase)
        c.checker.wait(lambda r: "k0" in r, 60, "k0 running")
        src = c.host(c.checker.running()["k0"])
        dst = next(h for h in c.hosts if h is not src)
        wait_for("a first snapshot", lambda: evs(c, "k0", ["snapshot"]), c)
        st, body = api(src, "PUT", "/vms/k0/migrate", {"to": dst.name})
        assert st == 202, body
        crashed = src if phase.startswith("src") else dst
        wait_for(f"{crashed.name} aborted at {phase}", lambda: not crashed.alive(), c)
        # exactly once again within a bound: moved, or restored by failover
        # (a source that handed over is seen until it exits: wait past it)
        live = [h for h in c.hosts if h is not crashed]
        wait_for("k0 running on a live host, its ember says so", lambda: any(
            pid for pid, root in etcd_util.ember_procs().items()
            for h in live if h.vm_of_root(root) == "k0" and ember_runs(pid)), c)
        time.sleep(2)
        assert c.checker.running().get("k0") not in (None, crashed.name)
        no_doubles(c)
    finally:
        close(c)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = make(tmp_path_factory.mktemp("move"))
    try:
        c.write_vm("c0", guest("counter"), cmdline="spin=200000000")
        c.write_vm("pin", guest("halt"), extra_vm={"irqchip": "on"},
                   emberd={"hosts": "h0"})
        for i in range(3):
            start_host(c, i, c.addrs)
        c.checker.wait(lambda r: "c0" in r and "pin" in r, 60, "c0 and pin running")
        yield c
    finally:
        close(c)


def move(c, vm, to, via=None):
    src = c.host(c.checker.running()[vm])
    st, body = api(via or src, "PUT", f"/vms/{vm}/migrate", {"to": to})
    return st, body


def test_move_counter_live(cl):
    c = cl
    src = c.host(c.checker.running()["c0"])
    dst = next(h for h in c.hosts if h is not src and h.name != "h0") \
        if src.name == "h0" else c.host("h0")
    wait_for("c0 counting", lambda: len(counts(console(src, "c0"))) >= 5, c, timeout=120)
    other = next(h for h in c.hosts if h is not src and h is not dst)
    # any emberd takes the request
    r = subprocess.run([EMBERCTL, "--sock", other.sock, "migrate", "c0", dst.name, "--wait"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"c0 runs on {dst.name}" in r.stdout, r.stdout
    wait_for("c0 running on the target", lambda: c.checker.running().get("c0") == dst.name, c)
    wait_for("a moved event", lambda: evs(c, "c0", ["moved"]), c)
    n0 = len(counts(console(dst, "c0")))
    wait_for("c0 counting on the target", lambda: len(counts(console(dst, "c0"))) > n0 + 3, c)
    a = console(src, "c0")
    b = "".join(line for line in console(dst, "c0").splitlines(keepends=True)
                if not line.startswith("--- emberd:"))
    nums = counts(a + b)
    assert nums == list(range(nums[0], nums[0] + len(nums))), \
        f"count lost or repeated: {[(x, y) for x, y in zip(nums, nums[1:]) if y != x + 1][:5]}"
    ups = evs(c, "c0", ["started", "restarted", "restored", "resumed"])
    assert len(ups) == 1 and ups[0]["kind"] == "started", ups
    st, body = api(dst, "GET", "/vms/c0")
    assert st == 200 and body["state"] == "running" and body["host"] == dst.name, body
    moved = evs(c, "c0", ["moved"])[-1]
    assert "downtime" in moved["detail"], moved
    no_doubles(c)


def test_move_against_a_must_rule_is_refused(cl):
    c = cl
    st, body = api(c.hosts[1], "PUT", "/vms/pin/migrate", {"to": "h1"})
    assert st == 409, body
    assert "hosts" in body["fault_message"] and "h0" in body["fault_message"], body
    st, body = api(c.hosts[1], "PUT", "/vms/nope/migrate", {"to": "h1"})
    assert st == 404, body
    st, body = api(c.hosts[1], "PUT", "/vms/pin/migrate", {"to": 3})
    assert st == 400, body
    assert c.checker.running().get("pin") == "h0"


def test_maintenance_evacuates_live(cl):
    c = cl
    host = c.host("h0")
    for n in ("m0", "m1", "m2"):
        c.write_vm(n, guest("halt"), extra_vm={"irqchip": "on"}, emberd={"hosts": "h0,h1,h2"})
    for h in c.hosts:
        assert api(h, "PUT", "/reload")[0] == 200
    wait_for("m0..m2 running", lambda: all(n in c.checker.running() for n in ("m0", "m1", "m2")), c)
    on = [v for v, h in c.checker.running().items() if h == "h0"]
    r = subprocess.run([EMBERCTL, "--sock", c.hosts[2].sock, "host", "maintenance", "enter",
                        "h0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "h0: in maintenance" in r.stdout, (r.stdout, r.stderr)
    wait_for("GET /hosts: h0 in maintenance", lambda: {
        h["name"]: h["maintenance"] for h in api(c.hosts[1], "GET", "/hosts")[1]}["h0"], c)
    movable = [v for v in on if v != "pin"]
    wait_for("h0 emptied but for pin", lambda: not any(
        c.checker.running().get(v) == "h0" for v in movable), c, timeout=90)
    assert c.checker.running().get("pin") == "h0"
    wait_for("pin told why it stays", lambda: evs(c, "pin", ["maintenance-stays"]), c)
    for v in movable:
        assert not evs(c, v, ["restarted", "restored"]), v
        assert len(evs(c, v, ["started"])) == 1, evs(c, v, ["started"])
    st, hosts = api(c.hosts[1], "GET", "/hosts")
    assert {h["name"]: h["maintenance"] for h in hosts}["h0"] is True, hosts
    # a new VM avoids it
    c.write_vm("n0", guest("halt"), extra_vm={"irqchip": "on"})
    for h in c.hosts:
        assert api(h, "PUT", "/reload")[0] == 200
    wait_for("n0 running", lambda: "n0" in c.checker.running(), c)
    assert c.checker.running()["n0"] != "h0"
    st, body = api(c.hosts[2], "PUT", "/hosts/h0/maintenance", {"enter": False})
    assert st == 204, body
    wait_for("h0 out of maintenance", lambda: not {h["name"]: h["maintenance"] for h in
                                                    api(c.hosts[1], "GET", "/hosts")[1]}["h0"], c)
    no_doubles(c)
