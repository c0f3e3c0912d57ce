"""The balancer's rows (docs/balancing.md): build/tools/ember-balance-sim
on generated clusters of 10, 100 and 1000 hosts with 50 VMs each and a
random skew (each host at a random load in [0.1, 1.0]), default options
(level 3), a few seeds per size.  Per size: the imbalance (stddev of host
load) before and after, the moves made beside the band estimate of a
lower bound, the bytes the migrations would send, and the CPU time of one
balancing round (the first, the largest; median over seeds, and the
worst).  Then the same at 1000 hosts with rules (about 12% of the VMs in
anti-affinity, affinity, must and should rules, most of them broken at
the start) and with 10 hosts in maintenance.

Pure computation: the numbers are this machine's CPU, nothing else.
Standalone: python3 tests/bench/bench_balance.py [build/tools/ember-balance-sim] [seeds]
It never fails on a number."""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOAL_MS = 100.0  # one round at 1000 hosts x 50 VMs (the issue)
ANCHORS = ["VMware DRS: a round every 60 s (every 5 min before vSphere 7); migration "
           "threshold 1-5, default 3",
           "Proxmox VE CRS: rebalances in each HA manager round, ~10 s"]


def _table(header, rows):
    """Markdown, as bench.py's table()."""
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"] +
                     [line(r) for r in rows])


def _run(sim, args):
    try:
        r = subprocess.run([sim, "--json"] + args, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr.strip()
    except (ValueError, IndexError):
        return None, (r.stderr.strip() or "no output") + " (exit %d)" % r.returncode


def _row(sim, label, args, seeds):
    runs, errs = [], []
    for seed in range(1, seeds + 1):
        j, err = _run(sim, args + ["--seed", str(seed)])
        if j:
            runs.append(j)
        if err:
            errs.append(err)
    if not runs:
        return [label, "—", "—", "—", "—", "—", "failed: " + "; ".join(errs)[:120]], None
    med = lambda k: statistics.median(r[k] for r in runs)
    note = "%d seeds, %s rounds, %d returns" % (
        len(runs), "/".join(str(r["rounds"]) for r in runs), sum(r["returns"] for r in runs))
    if any(r["moves_after_stable"] for r in runs):
        note += ", %d moves after the first quiet round" % sum(r["moves_after_stable"]
                                                             for r in runs)
    if any(not r["stable"] for r in runs):
        note += ", NOT stable"
    if any(r["must_violations_after"] for r in runs):
        note += ", must rules left broken: %d (see notes)" % max(r["must_violations_after"]
                                                               for r in runs)
    if errs:
        note += ", checker: " + "; ".join(errs)[:120]
    return [label,
            "%.3f → %.3f" % (med("imbalance_before"), med("imbalance_after")),
            "%d (bound %d)" % (med("moves"), med("lower_bound")),
            "%.0f GiB" % med("gib_sent"),
            "%.2f ms" % med("round1_ms"),
            "%.2f ms" % max(r["max_round_ms"] for r in runs),
            note], max(r["max_round_ms"] for r in runs)


def balance_rows(sim, seeds=3):
    """(header, rows, goal rows [goal, target, result, met])."""
    header = ["cluster (level 3)", "imbalance before → after", "moves (band bound)",
              "sent", "round 1 (cpu, median)", "worst round", "note"]
    if not os.access(sim, os.X_OK):
        return header, [["balancer rows skipped: %s missing (make all)" % sim] + [""] * 6], []
    rows, worst = [], None
    for n in (10, 100, 1000):
        row, w = _row(sim, "%d hosts × 50 VMs" % n, ["--hosts", str(n)], seeds)
        rows.append(row)
        if n == 1000:
            worst = w
    rows.append(_row(sim, "1000 × 50, with rules", ["--hosts", "1000", "--rules"], seeds)[0])
    rows.append(_row(sim, "1000 × 50, 10 hosts in maintenance, rules",
                     ["--hosts", "1000", "--rules", "--maintenance", "10"], seeds)[0])
    rows.append(_row(sim, "100 × 50, ±20% noise, 100 rounds",
                     ["--hosts", "100", "--noise", "0.2", "--rounds", "100"], seeds)[0])
    goals = [["balancing round, 1000 hosts × 50 VMs", "≤ %.0f ms" % GOAL_MS,
              "—" if worst is None else "%.1f ms (worst of %d seeds)" % (worst, seeds),
              "—" if worst is None else ("yes" if worst <= GOAL_MS else "no")]]
    return header, rows, goals


def balance_lines(build_dir, seeds=3):
    """The section bench.py prints: a title, the table, the goal, the anchors."""
    table = _table
    header, rows, goals = balance_rows(os.path.join(build_dir, "tools", "ember-balance-sim"),
                                       seeds)
    return (["\nBalancing (DRS for microVMs): ember-balance-sim, generated clusters, random "
             "skew (see tests/bench/bench_balance.py, docs/balancing.md)\n",
             table(header, rows), ""] +
            [table(["goal", "target", "result", "met"], goals), ""] +
            ["- anchor: " + a for a in ANCHORS])


def main():
    sim = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build", "tools",
                                                            "ember-balance-sim")
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    header, rows, goals = balance_rows(sim, seeds)
    print(_table(header, rows))
    print()
    print(_table(["goal", "target", "result", "met"], goals))
    for a in ANCHORS:
        print("- anchor: " + a)


if __name__ == "__main__":
    main()
