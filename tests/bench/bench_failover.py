"""The cluster failover rows of `make bench` (imported by bench.py; also
runs alone: /usr/bin/python3 tests/bench/bench_failover.py [--trials N]).

Three emberd hosts, each in its own network namespace joined to one etcd
member by a veth pair (tests/integration/etcd_util.py), TTL 2 s, grace 0,
idle guests (halt.elf under an in-kernel irqchip: blocked in HLT, no CPU):

  * host failure -> its VMs running elsewhere: 6 VMs over 3 hosts; per
    trial the host with the most VMs is killed with SIGKILL (its embers
    die with it) and the clock runs from the kill to the last of its VMs
    seen running on a survivor by the checker (jailed embers listed every
    10 ms, never emberd's word); then it is restarted for the next trial.
    Also kill -> the survivors' "claimed" event (CLOCK_MONOTONIC, shared):
    lease expiry and detection, the rest is the VMs' start;
  * a host with 100 small VMs (16 MiB each) failing over: h0 alone claims
    them all, h1 and h2 join, h0 is killed.

Anchors: vSphere HA declares a host dead after 15 s; Nomad's defaults
~20 s; Kubernetes ~5 min 50 s; Proxmox HA ~2 min.  Goals: failover <=
TTL + 1 s at p99; 100 VMs failed over within TTL + 2 s.  It never fails
on a number: what cannot run gives a row that says why."""
import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import etcd_util  # noqa: E402

TTL = 2
GOAL_P99_S = TTL + 1.0
GOAL_100_S = TTL + 2.0
# The default vCPU capacity (4 x CPUs: 8 here) would leave 92 of 100 VMs
# unplaced; idle 16 MiB guests cost no CPU.
ROOMY = ("--capacity-vcpus", "400")


def _pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def _why_not(guests):
    if os.geteuid() != 0:
        return "needs root (jailer, namespaces)"
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    for p in (etcd_util.EMBERD, os.path.join(guests, "halt.elf")):
        if not os.path.exists(p):
            return "%s missing" % p
    return etcd_util.etcd_missing() or etcd_util.netns_missing()


_wait = etcd_util.wait_until


def _cluster(base, guests, nvms):
    c = etcd_util.Cluster(base, n_hosts=3, n_etcd=1).up()
    for i in range(nvms):
        c.write_vm("v%03d" % i, os.path.join(guests, "halt.elf"), extra_vm={"irqchip": "on"})
    return c


def _claimed_at(c, vms, t0):
    """The last survivor "claimed" event (monotonic s) for vms after t0."""
    last = None
    for vm in vms:
        ts = [e["mono_ms"] / 1000.0 for e in c.events(("claimed",))
              if e["vm"] == vm and e["mono_ms"] / 1000.0 >= t0]
        if not ts:
            return None
        last = max(last or 0, min(ts))
    return last


def _trial(c, victim, lost, timeout=60):
    """Kill victim; (kill -> all lost running elsewhere, kill -> last
    claim) in s, or None on a timeout."""
    t0 = time.monotonic()
    victim.kill9()
    ok = _wait(lambda: all(c.checker.appeared_since(t0, vm, victim.name) for vm in lost),
               timeout)
    if not ok:
        return None
    up = max(c.checker.appeared_since(t0, vm, victim.name) for vm in lost) - t0
    cl = _claimed_at(c, lost, t0)
    return up, (cl - t0) if cl else None


def _record(r, ups, claims, errors, timeout_msg):
    """File one _trial() result."""
    if r is None:
        errors.append(timeout_msg)
        return
    ups.append(r[0])
    if r[1] is not None:
        claims.append(r[1])


def failover_rows(guests, trials=20, trials100=3):
    """(rows, goals): rows [what, median, p99, n, note]; goals [goal,
    target, result, met]."""
    why = _why_not(guests)
    if why:
        return ([["failover rows skipped", "—", "—", "0", why]],
                [["failover, host kill -> VMs elsewhere, p99", "≤ %.0f s" % GOAL_P99_S,
                  "— (%s)" % why, "—"],
                 ["100 VMs failed over", "≤ %.0f s" % GOAL_100_S, "—", "—"]])
    rows, goals = [], []
    ups, claims, errors = [], [], []
    base = tempfile.mkdtemp(prefix="ember-bench-failover-", dir="/tmp")
    c = _cluster(os.path.join(base, "six"), guests, 6)
    try:
        c.start_hosts(ttl=TTL)
        names = ["v%03d" % i for i in range(6)]
        c.checker.wait(lambda r: all(n in r for n in names), 60, "6 VMs")
        time.sleep(1.2)
        for t in range(trials):
            where = c.checker.running()
            by = {}
            for vm, h in where.items():
                by.setdefault(h, []).append(vm)
            vname = max(sorted(by), key=lambda h: len(by[h]))
            victim, lost = c.host(vname), sorted(by[vname])
            _record(_trial(c, victim, lost), ups, claims, errors,
                    "trial %d: %s not running elsewhere in 60 s" % (t, lost))
            # the victim comes back (owning nothing) for the next trial
            n0 = len([e for e in victim.events() if e["kind"] == "lease"])
            victim.start(c.endpoints(c.hosts.index(victim)), ttl=TTL)
            _wait(lambda: len([e for e in victim.events() if e["kind"] == "lease"]) > n0, 30)
            c.checker.wait(lambda r: all(n in r for n in names), 60, "6 VMs")
            time.sleep(1.2)  # past the rejoined host's settle time
        if c.checker.violations:
            errors.append("a VM ran twice: %s" % (c.checker.violations[:3],))
    except AssertionError as e:
        errors.append(str(e))
    finally:
        c.close()
    note = "%d trials, TTL %d s, grace 0, 3 hosts, 6 idle VMs%s" % (
        len(ups), TTL, "; " + "; ".join(errors[:2]) if errors else "")
    if ups:
        rows.append(["host kill -9 → its VMs running elsewhere", "%.2f s" % _pct(ups, 50),
                     "%.2f s" % _pct(ups, 99), str(len(ups)), note])
    if claims:
        rows.append(["host kill -9 → survivors' claim (lease expiry + detection)",
                     "%.2f s" % _pct(claims, 50), "%.2f s" % _pct(claims, 99), str(len(claims)),
                     "the rest is the VMs' start"])
    p99 = _pct(ups, 99)
    goals.append(["failover, host kill → VMs elsewhere, p99 (TTL 2 s)", "≤ %.0f s" % GOAL_P99_S,
                  "%.2f s" % p99 if p99 else "— (%s)" % (errors[:1] or ["no trial"])[0],
                  "—" if p99 is None else ("yes" if p99 <= GOAL_P99_S else "NO")])

    big, big_claims, big_errors = [], [], []
    for t in range(trials100):
        c = _cluster(os.path.join(base, "hundred%d" % t), guests, 100)
        names = ["v%03d" % i for i in range(100)]
        try:
            h0 = c.hosts[0]
            h0.start(c.endpoints(0), *ROOMY, ttl=TTL)
            c.checker.wait(lambda r: all(r.get(n) == "h0" for n in names), 120, "100 VMs on h0")
            for i in (1, 2):
                c.hosts[i].start(c.endpoints(i), *ROOMY, ttl=TTL)
            for h in c.hosts[1:]:
                _wait(lambda h=h: any(e["kind"] == "lease" for e in h.events()), 30)
            time.sleep(1.5)
            _record(_trial(c, h0, names, timeout=120), big, big_claims, big_errors,
                    "trial %d: not all 100 running elsewhere in 120 s" % t)
            if c.checker.violations:
                big_errors.append("a VM ran twice: %s" % (c.checker.violations[:3],))
        except AssertionError as e:
            big_errors.append(str(e))
        finally:
            c.close()
    shutil.rmtree(base, ignore_errors=True)
    note = "%d trials: h0 runs all 100 (16 MiB each), h1 and h2 idle; %s" % (
        len(big), "; ".join(big_errors[:2]) if big_errors else
        "survivors' claims %s" % ", ".join("%.2f s" % x for x in big_claims))
    if big:
        rows.append(["100 VMs: host kill -9 → all 100 running elsewhere",
                     "%.2f s" % _pct(big, 50), "%.2f s" % max(big), str(len(big)), note])
    else:
        rows.append(["100 VMs failing over", "—", "—", "0", note])
    worst = max(big) if big else None
    goals.append(["100 VMs failed over (worst trial, TTL 2 s)", "≤ %.0f s" % GOAL_100_S,
                  "%.2f s" % worst if worst else "— (%s)" % (big_errors[:1] or ["no trial"])[0],
                  "—" if worst is None else ("yes" if worst <= GOAL_100_S else "NO")])
    rows.append(["anchors", "—", "—", "—", "vSphere HA declares a host dead after 15 s; Nomad "
                 "≈ 20 s; Kubernetes ≈ 5 min 50 s; Proxmox HA ≈ 2 min"])
    return rows, goals


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", default=os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                     "build", "guest"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--trials100", type=int, default=3)
    a = ap.parse_args()
    rows, goals = failover_rows(a.guests, a.trials, a.trials100)
    print(_table(["what", "median", "p99", "n", "note"], rows))
    print()
    print(_table(["goal", "target", "result", "met"], goals))
