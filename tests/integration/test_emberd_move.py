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
import os
import re
import subprocess
import time

import pytest

import etcd_util
from conftest import guest, needs_kvm
from move_util import EMBERCTL, api, close, ember_runs, make, start_host
from test_emberd_cluster import _why_not

pytestmark = [needs_kvm, pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]



def cluster(tmp, crash=None):
    flags = os.statvfs(str(tmp)).f_flag
    if flags & (os.ST_NODEV | os.ST_NOEXEC):
        pytest.skip(f"{tmp} is nodev or noexec: the jails need exec and devices")
    return make(tmp, crash)


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
    c = cluster(tmp_path, crash=phase)
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
        if phase == "dst-receiving":
            # failed before the hand-over: abandoned cleanly, the source runs on
            wait_for("move-failed", lambda: evs(c, "k0", ["move-failed"]), c)
            assert c.checker.running().get("k0") == src.name
            assert not evs(c, "k0", ["restarted", "restored"]), evs(c, "k0", None)
        # exactly once again within a bound: moved, or restored by failover
        # (a source that handed over is seen until it exits: wait past it)
        live = [h for h in c.hosts if h is not crashed]

        def runs():
            return any(pid for pid, root in etcd_util.ember_procs().items()
                       for h in live if h.vm_of_root(root) == "k0" and ember_runs(pid, False))

        wait_for("k0 running on a live host, its ember says so", runs, c)
        time.sleep(2)
        wait_for("k0 still running on a live host", runs, c)
        assert c.checker.running().get("k0") not in (None, crashed.name)
        no_doubles(c)
    finally:
        close(c)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = cluster(tmp_path_factory.mktemp("move"))
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


def test_maintenance_keeps_anti_affinity(cl):
    """Two anti-affine VMs (anti_affinity = g) that may run only on h0 and
    h1, one on each: h0's maintenance places through the same rules as
    failover and the balancer, so its one cannot go to h1 (the other is
    there) nor h2 (not allowed): it stays, and says why (event, STATUS
    reason, GET /hosts, emberctl); the two never share a host."""
    c = cl
    for n in ("a0", "a1"):
        c.write_vm(n, guest("halt"), extra_vm={"irqchip": "on"},
                   emberd={"hosts": "h0,h1", "anti_affinity": "g"})
    for h in c.hosts:
        assert api(h, "PUT", "/reload")[0] == 200
    wait_for("a0, a1 running", lambda: all(n in c.checker.running() for n in ("a0", "a1")), c)
    run = c.checker.running()
    assert {run["a0"], run["a1"]} == {"h0", "h1"}, run
    stay, other = ("a0", "a1") if run["a0"] == "h0" else ("a1", "a0")
    h0 = c.host("h0")
    st, body = api(c.hosts[1], "PUT", "/hosts/h0/maintenance", {"enter": True})
    assert st == 204, body
    try:
        ev = wait_for(f"{stay} told why it stays", lambda: evs(c, stay, ["maintenance-stays"]), c)
        assert "anti_affinity g" in ev[-1]["detail"], ev

        def reason():
            st, body = api(h0, "GET", f"/vms/{stay}")
            r = body.get("reason") if st == 200 else None
            return r if r and r.startswith("stays on h0") else None
        why = wait_for(f"{stay}'s status says why", reason, c)
        assert "anti_affinity g" in why and body_state(h0, stay) == "running", why

        def stays():
            hosts = api(c.hosts[2], "GET", "/hosts")[1]
            return {h["name"]: h.get("stays") or {} for h in hosts}["h0"].get(stay)
        assert "anti_affinity g" in wait_for("GET /hosts lists it", stays, c)
        r = subprocess.run([EMBERCTL, "--sock", c.hosts[2].sock, "host", "maintenance",
                            "status", "h0"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and f"{stay} stays:" in r.stdout, (r.stdout, r.stderr)
        # the rest of h0 leaves meanwhile; the pair never shares a host
        wait_for("h0 emptied but for pin and " + stay, lambda: all(
            h != "h0" or v in ("pin", stay) for v, h in c.checker.running().items()), c,
            timeout=90)
        run = c.checker.running()
        assert run.get(stay) == "h0" and run.get(other) == "h1", run
        assert not evs(c, stay, ["moved"]) and not evs(c, other, ["moved"])
    finally:
        st, body = api(c.hosts[2], "PUT", "/hosts/h0/maintenance", {"enter": False})
    assert st == 204, body
    wait_for("its reason cleared after exit", lambda: reason() is None, c)
    # nor may a user's move put them together: the same rules, the same model
    st, body = api(c.hosts[2], "PUT", f"/vms/{stay}/migrate", {"to": "h1"})
    assert st == 409 and "anti_affinity g" in body["fault_message"], body
    assert c.checker.running().get(stay) == "h0"
    no_doubles(c)


def body_state(h, vm):
    return api(h, "GET", f"/vms/{vm}")[1].get("state")
