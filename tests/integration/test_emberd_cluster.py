"""emberd's cluster mode (docs/ha.md "Cluster") with real etcd, real KVM
and real network namespaces: three emberd "hosts", each in its own
namespace joined to etcd by a veth pair (etcd_util.Cluster), sharing one
VM folder and one snapshot folder.  A checker thread lists the jailed
embers every 10 ms (never asking emberd) and the tests fail if any VM
ever runs under two hosts at once.

Kill -9 a host: its VMs run on the others, each exactly once, and the
counting guests resume from their snapshots; partition a host: it fences
(stops its VMs) before the survivors claim them; kill the etcd leader
during a failover; etcd down when emberd starts; "hosts" and
"avoid_hosts" kept through a failover."""
import os
import re
import time

import pytest

import etcd_util
from conftest import EMBER, guest, needs_kvm

TTL = 2


def _why_not():
    for why in (etcd_util.etcd_missing(),):
        if why:
            return why
    if os.geteuid() != 0:
        return "emberd needs root (ember-jailer, bind mounts, namespaces)"
    for b in (etcd_util.EMBERD, EMBER, os.path.join(os.path.dirname(EMBER), "ember-jailer")):
        if not os.path.exists(b):
            return f"{b} missing: run make all"
    return etcd_util.netns_missing()


pytestmark = [needs_kvm, pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]


@pytest.fixture
def make_cluster(tmp_path):
    made = []

    def make(n_etcd=1, start_etcd=True):
        flags = os.statvfs(str(tmp_path)).f_flag
        if flags & (os.ST_NODEV | os.ST_NOEXEC):
            pytest.skip(f"{tmp_path} is nodev or noexec: the jails need exec and devices")
        c = etcd_util.Cluster(str(tmp_path), n_hosts=3, n_etcd=n_etcd)
        made.append(c)
        return c.up(start_etcd=start_etcd)

    yield make
    for c in made:
        c.close()


def halt_vm(c, name, **emberd):
    """An idle guest: cli; hlt under an in-kernel irqchip blocks, cheaply."""
    c.write_vm(name, guest("halt"), extra_vm={"irqchip": "on"}, emberd=emberd or None)


def counter_vm(c, name):
    """A counting guest, snapshotted every second (no drives: resuming it
    loses nothing, so a failover restores it)."""
    c.write_vm(name, guest("counter"), cmdline="spin=200000000",
               emberd={"snapshot_interval": "1s"})


def placed(c, names, timeout=60, not_on=None):
    """Wait until each of names runs on exactly one host (not not_on):
    {vm: host}."""
    try:
        return c.checker.wait(lambda r: all(n in r and r[n] != not_on for n in names),
                              timeout, f"{names} running" + (f" off {not_on}" if not_on else ""))
    except AssertionError as e:
        pytest.fail(f"{e}\n{c.diagnose()}")


def no_doubles(c):
    assert not c.checker.violations, \
        f"a VM ran on two hosts at once: {c.checker.violations[:5]}\n{c.diagnose()}"


def counts(path):
    try:
        with open(path, errors="replace") as f:
            return [int(m) for m in re.findall(r"count (\d+)", f.read())]
    except FileNotFoundError:
        return []


def wait_for(what, cond, timeout=60, c=None):
    v = etcd_util.wait_until(cond, timeout)
    if not v:
        pytest.fail(f"{what}: not within {timeout} s" + (f"\n{c.diagnose()}" if c else ""))
    return v


def six_idle(c):
    """Six idle VMs over the three hosts: (names, {vm: host}, the host
    that runs v0)."""
    names = [f"v{i}" for i in range(6)]
    for n in names:
        halt_vm(c, n)
    c.start_hosts()
    where = placed(c, names)
    return names, where, c.host(where["v0"])


def test_kill9_host_vms_run_elsewhere_exactly_once(make_cluster):
    c = make_cluster()
    names = ["c0", "c1", "c2", "v0", "v1", "v2"]
    for n in names[:3]:
        counter_vm(c, n)
    for n in names[3:]:
        halt_vm(c, n)
    c.start_hosts()
    where = placed(c, names)
    # spread over the hosts (placement by free capacity, deterministic)
    assert len(set(where.values())) == 3, where
    victim = c.host(where["c0"])
    lost = sorted(v for v, h in where.items() if h == victim.name)
    # one of its VMs stopped by the user: a survivor claims it, leaves it down
    off = next((v for v in lost if v.startswith("v")), None)
    if off:
        st, body = victim.api("PUT", f"/vms/{off}/stop")
        assert st == 204, body
        wait_for(f"{off} stopped", lambda: off not in c.checker.running(), c=c)
        wait_for(f"state/{off} = stopped", lambda: c.etcd.get_prefix("ember/state/").get(
            f"ember/state/{off}") == "stopped", c=c)
        lost.remove(off)
    # each of its counters has a committed snapshot to resume from
    for vm in (v for v in lost if v.startswith("c")):
        wait_for(f"{vm}'s first snapshot",
                 lambda vm=vm: any(e["kind"] == "snapshot" and e["vm"] == vm
                                   for e in victim.events()), c=c)
    before = {vm: max(counts(os.path.join(victim.state, "vms", vm, "console.log")) or [0])
              for vm in lost}
    victim.kill9()
    now = placed(c, lost, not_on=victim.name)
    for vm in lost:
        assert now[vm] != victim.name, now
    no_doubles(c)
    # nothing of the dead host's runs any more
    assert not any(h == victim.name for h in c.checker.running().values())
    for vm in lost:
        new = c.host(now[vm])
        ups = wait_for(f"{vm} up on {new.name}", lambda vm=vm, new=new: [
            e for e in new.events() if e["vm"] == vm and e["kind"] in etcd_util.UP_KINDS], c=c)
        claims = [e for e in new.events() if e["vm"] == vm and e["kind"] == "claimed"]
        assert claims and f"from {victim.name}" in claims[0]["detail"], claims
        if vm.startswith("c"):
            assert ups[0]["kind"] == "restored", ups
            log = os.path.join(new.state, "vms", vm, "console.log")
            got = wait_for(f"{vm} counting on {new.name}", lambda log=log: counts(log), c=c)
            # resumed from a snapshot taken before the kill: it counts on
            # from where that snapshot was, never from 1
            assert 1 < got[0] <= before[vm] + 1, (vm, got[:3], before[vm])
    # GET /hosts on a survivor: the dead host is shown dead, owning nothing
    survivor = next(h for h in c.hosts if h is not victim)

    def hosts():
        st, body = survivor.api("GET", "/hosts")
        assert st == 200, body
        return {h["name"]: h for h in body}

    wait_for("the dead host shown dead", lambda: not hosts().get(victim.name, {"alive": 1})["alive"],
             c=c)
    hs = hosts()
    assert all(hs[h.name]["alive"] for h in c.hosts if h is not victim), hs
    assert hs[victim.name]["vms"] == 0, hs
    wait_for("every VM owned by a live host",
             lambda: sum(h["vms"] for h in hosts().values()) == len(names), c=c)
    if off:
        claimer = wait_for(f"{off} claimed by a survivor", lambda: next(
            (h for h in c.hosts if h is not victim and any(
                e["kind"] == "claimed" and e["vm"] == off for e in h.events())), None), c=c)
        st, body = claimer.api("GET", f"/vms/{off}")
        assert st == 200 and body["state"] == "stopped", body
    # the survivors keep running them; still exactly once
    time.sleep(1)
    assert all(v in c.checker.running() for v in names if v != off)
    assert off not in c.checker.running()
    assert not any((off, h.name) in c.checker.first_on for h in c.hosts if h is not victim)
    no_doubles(c)


def test_partition_fences_before_survivors_start(make_cluster):
    c = make_cluster()
    names, where, victim = six_idle(c)
    i = c.hosts.index(victim)
    lost = sorted(v for v, h in where.items() if h == victim.name)
    c.net.partition(i)
    now = placed(c, lost, not_on=victim.name)
    assert all(now[v] != victim.name for v in lost), now
    no_doubles(c)
    # the partitioned host stopped each VM before any survivor claimed it
    fenced = {e["vm"]: e["mono_ms"] for e in victim.events() if e["kind"] == "fenced"}
    assert set(lost) <= set(fenced), (lost, fenced, c.diagnose())
    for vm in lost:
        claim = [e for h in c.hosts if h is not victim for e in h.events()
                 if e["vm"] == vm and e["kind"] == "claimed"]
        assert claim, vm
        assert fenced[vm] < claim[-1]["mono_ms"], (vm, fenced[vm], claim)
    assert "FENCED" in victim.stderr()
    # healed: the host joins again, unfenced; its former VMs stay where
    # they went, still once each
    c.net.heal(i)
    wait_for("the healed host unfenced", lambda: any(
        e["kind"] == "unfenced" for e in victim.events()), timeout=60, c=c)
    time.sleep(2)
    assert all(v in c.checker.running() for v in names), c.checker.running()
    no_doubles(c)


def test_etcd_leader_killed_during_failover(make_cluster):
    c = make_cluster(n_etcd=3)
    names, _, victim = six_idle(c)
    leader = c.etcd.leader()
    victim.kill9()
    leader.kill9()
    placed(c, names, timeout=90, not_on=victim.name)
    assert all(h != victim.name for h in c.checker.running().values())
    no_doubles(c)
    time.sleep(2)
    assert all(v in c.checker.running() for v in names), c.checker.running()
    no_doubles(c)


def test_etcd_down_at_start(make_cluster):
    c = make_cluster(start_etcd=False)
    names = [f"v{i}" for i in range(3)]
    for n in names:
        halt_vm(c, n)
    c.start_hosts()
    for h in c.hosts:
        wait_for(f"{h.name} reports etcd unreachable", lambda h=h: any(
            e["kind"] == "etcd-unreachable" for e in h.events()), c=c)
        st, body = h.api("GET", "/status")
        assert st == 200 and body["etcd"] == "unreachable", body
    time.sleep(1)
    assert c.checker.running() == {}, "a VM started before this host owned it"
    assert all(h.alive() for h in c.hosts)
    c.etcd.start()
    placed(c, names)
    no_doubles(c)
    for h in c.hosts:
        wait_for(f"{h.name}: etcd ok", lambda h=h: h.api("GET", "/status")[1]["etcd"] == "ok",
                 c=c)


def test_must_and_avoid_through_failover(make_cluster):
    c = make_cluster()
    halt_vm(c, "pin", hosts="h0")
    halt_vm(c, "shy", avoid_hosts="h1,h2")
    halt_vm(c, "pair", hosts="h0,h2")
    halt_vm(c, "free")
    c.start_hosts()
    where = placed(c, ["pin", "shy", "pair", "free"])
    assert where["pin"] == "h0" and where["shy"] == "h0" and where["pair"] in ("h0", "h2")
    c.host("h0").kill9()
    placed(c, ["pair", "free"], not_on="h0")
    survivor = c.host("h1")

    def state(vm):
        st, body = survivor.api("GET", f"/vms/{vm}")
        assert st == 200, body
        return body

    wait_for("pin unplaced", lambda: state("pin")["state"] == "unplaced", c=c)
    assert state("pin")["reason"] == "hosts = h0: h0 is down", state("pin")
    wait_for("shy unplaced", lambda: state("shy")["state"] == "unplaced", c=c)
    assert "avoid" in state("shy")["reason"], state("shy")
    time.sleep(1)
    running = c.checker.running()
    assert "pin" not in running and "shy" not in running, running
    assert running["pair"] == "h2", running
    # the rules held at every scan: nothing ran where it may not
    seen = set(c.checker.first_on)
    assert not {("pin", "h1"), ("pin", "h2"), ("shy", "h1"), ("shy", "h2"),
                ("pair", "h1")} & seen, seen
    no_doubles(c)


def test_claim_lost_stops_the_vm(make_cluster):
    """An owner key deleted under a running VM (an operator's etcdctl, a
    bug elsewhere): its host stops it at once ("claim-lost"), and it is
    claimed again by the normal rule, never running twice."""
    c = make_cluster()
    halt_vm(c, "solo")
    c.start_hosts()
    first = placed(c, ["solo"])["solo"]
    owner = c.host(first)
    token = [e for e in owner.events() if e["kind"] == "claimed" and e["vm"] == "solo"][-1]
    r = etcd_util.subprocess.run(["etcdctl", "--endpoints", c.etcd.members[0].local, "del",
                                  "ember/owner/solo"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "1", r
    wait_for("claim-lost on the owner", lambda: any(
        e["kind"] == "claim-lost" and e["vm"] == "solo" for e in owner.events()), c=c)
    # claimed again (a new token), and running once
    wait_for("claimed again", lambda: any(
        e["kind"] == "claimed" and e["vm"] == "solo" and e["seq"] != token["seq"]
        for h in c.hosts for e in h.events() if e["host"] != first or e["seq"] > token["seq"]),
        c=c)
    placed(c, ["solo"])
    no_doubles(c)


def test_sigterm_hands_vms_over(make_cluster):
    """A host shut down cleanly suspends its VMs (snapshots committed by
    token) and revokes its lease: the others resume them at once, without
    waiting out the TTL, each exactly once."""
    c = make_cluster()
    names = ["c0", "c1", "c2"]
    for n in names:
        counter_vm(c, n)
    c.start_hosts()
    where = placed(c, names)
    leaving = c.host(where["c0"])
    lost = sorted(v for v, h in where.items() if h == leaving.name)
    leaving.proc.send_signal(etcd_util.signal.SIGTERM)
    assert leaving.proc.wait(60) == 0, leaving.stderr()
    for vm in lost:
        assert any(e["kind"] == "suspended" and e["vm"] == vm for e in leaving.events())
    now = placed(c, lost, not_on=leaving.name)
    for vm in lost:
        new = c.host(now[vm])
        ups = wait_for(f"{vm} up on {new.name}", lambda vm=vm, new=new: [
            e for e in new.events() if e["vm"] == vm and e["kind"] in etcd_util.UP_KINDS], c=c)
        assert ups[0]["kind"] == "restored", ups
    no_doubles(c)
