"""The live balancing rows of `make bench` (imported by bench.py; also
runs alone: /usr/bin/python3 tests/bench/bench_balance_live.py [--trials N]).

Real processes: three emberd hosts in network namespaces, one etcd
member, --balance-interval 1s at level 3, --load-interval 500ms.  Per
trial two guests that burn a CPU each (loop.elf) and two idle ones are
held on h0 by a cluster rule (must-run-on h0) until load.c's EWMA shows
h0 busy in load/h0; then the rule is removed (the skew) and the clock
runs:

  * skew -> the balancer's first moves/<vm> request in etcd;
  * skew -> a spinning VM running on another host (the checker's word:
    jailed embers listed every 10 ms): the request carried out by a live
    move (the move executor, over the hosts' migration LAN with a
    pre-shared key, as tests/integration/move_util.py sets up).

Anchors: DRS runs every 5 minutes; Proxmox CRS every 10 s (ours by
default).  It never fails on a number: what cannot run gives a row that
says why."""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import etcd_util  # noqa: E402

ARGS = ("--balance-interval", "1s", "--balance-level", "3", "--load-interval", "500ms")
SPIN, IDLE = ["s0", "s1"], ["i0", "i1"]


def _why_not(guests):
    if os.geteuid() != 0:
        return "needs root (jailer, namespaces)"
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    for p in (etcd_util.EMBERD, os.path.join(guests, "loop.elf"),
              os.path.join(guests, "halt.elf")):
        if not os.path.exists(p):
            return "%s missing" % p
    return etcd_util.etcd_missing() or etcd_util.netns_missing()


def _put(c, key, value):
    import base64
    b = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    path = "/v3/kv/put" if value is not None else "/v3/kv/deleterange"
    body = {"key": b("ember/" + key)}
    if value is not None:
        body["value"] = b(value)
    etcd_util.gateway(c.etcd.members[0].local, path, body)


def _trial(base, guests):
    """(skew -> first request, skew -> a spinner elsewhere or None, note)."""
    import move_util as mv  # its migration LAN and pre-shared key
    os.makedirs(base)
    c = mv.make(base)
    try:
        _put(c, "rules/skew", json.dumps({"kind": "must-run-on", "vms": SPIN + IDLE,
                                          "hosts": ["h0"]}))
        for n in SPIN:
            c.write_vm(n, os.path.join(guests, "loop.elf"))
        for n in IDLE:
            c.write_vm(n, os.path.join(guests, "halt.elf"), extra_vm={"irqchip": "on"})
        for i, h in enumerate(c.hosts):
            h.start(c.endpoints(i), "--migrate-listen", "%s:%d" % (c.addrs[i], mv.PORT),
                    "--migrate-psk", c.psk, *ARGS)
        c.checker.wait(lambda r: all(r.get(n) == "h0" for n in SPIN + IDLE), 60, "VMs on h0")

        def busy():
            v = c.etcd.get_prefix("ember/load/h0").get("ember/load/h0")
            return v and json.loads(v).get("cpu_used_m", 0) > 500
        if not etcd_util.wait_until(busy, 60):
            return None, None, "h0's load never showed busy"
        t0 = time.monotonic()
        _put(c, "rules/skew", None)
        req = etcd_util.wait_until(lambda: c.etcd.get_prefix("ember/moves/"), 60, period=0.01)
        t_req = time.monotonic() - t0 if req else None
        moved = etcd_util.wait_until(
            lambda: any(c.checker.appeared_since(t0, n, "h0") for n in SPIN), 20)
        t_moved = (min(c.checker.appeared_since(t0, n, "h0") or 1e9 for n in SPIN) - t0
                   if moved else None)
        note = "" if moved else "requests not carried out within 20 s"
        from test_emberd_balance import lasting_doubles  # a target's first instant aside
        if lasting_doubles(c):
            note = "a VM ran twice: %s" % (lasting_doubles(c)[:2],)
        return t_req, t_moved, note
    finally:
        mv.close(c)


def balance_live_rows(guests, trials=3):
    why = _why_not(guests)
    if why:
        return [["live balancing rows skipped", "—", "—", "0", why]]
    reqs, moves, notes = [], [], []
    base = tempfile.mkdtemp(prefix="ember-bench-balance-", dir="/tmp")
    try:
        for t in range(trials):
            try:
                r, m, note = _trial(os.path.join(base, "t%d" % t), guests)
            except AssertionError as e:
                r, m, note = None, None, str(e)
            if r is not None:
                reqs.append(r)
            if m is not None:
                moves.append(m)
            if note and note not in notes:
                notes.append(note)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    what = "3 hosts, 2 CPU-burning + 2 idle guests on h0, interval 1 s, level 3"
    rows = [["skew → the balancer's first move request (moves/<vm>)",
             "%.2f s" % med(reqs) if reqs else "—", "%.2f s" % max(reqs) if reqs else "—",
             str(len(reqs)), what + ("; " + "; ".join(notes) if notes and not reqs else "")],
            ["skew → a spinning guest running on another host",
             "%.2f s" % med(moves) if moves else "—", "%.2f s" % max(moves) if moves else "—",
             str(len(moves)), "; ".join(notes) or what],
            ["anchors", "—", "—", "—", "DRS: every 5 min on 5-min averages; Proxmox CRS: "
             "every 10 s (emberd's default interval)"]]
    return rows


def balance_live_lines(guests, trials=3):
    rows = balance_live_rows(guests, trials)
    header = ["what", "median", "max", "n", "note"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return ["\nLive balancing: emberd's elected balancer after a skew, real processes (see "
            "tests/bench/bench_balance_live.py)\n", "\n".join(out)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", default=os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                     "build", "guest"))
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    print("\n".join(balance_live_lines(a.guests, a.trials)))
