"""The emberd live-move rows of `make bench` (imported by bench.py; also
runs alone: python3 tests/bench/bench_move.py [--trials N]).

Two emberd hosts, each in its own network namespace, etcd in the root
one and a bridge between the hosts (tests/integration/move_util.py),
moves authenticated with a pre-shared key.  One idle guest (halt.elf,
blocked in HLT) and one busy one (counter.elf, counting flat out) are
moved back and forth with `emberctl migrate VM HOST --wait`:

  * total: from the request to emberctl seeing the VM run on the target
    (etcd round trips, the target's jail staged and its ember started,
    the copy, the ownership transaction, the polls on both sides);
  * downtime and the VMM's total: ember's own figures, carried by GOGO
    and reported in the target's "moved" event.

It never fails on a number: what cannot run gives a row that says why."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import etcd_util  # noqa: E402
import move_util  # noqa: E402


def _med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def _why_not(guests):
    if os.geteuid() != 0:
        return "needs root (jailer, namespaces)"
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    for p in (etcd_util.EMBERD, move_util.EMBERCTL, os.path.join(guests, "halt.elf"),
              os.path.join(guests, "counter.elf")):
        if not os.path.exists(p):
            return "%s missing" % p
    return etcd_util.etcd_missing() or etcd_util.netns_missing()


def _moved(h, vm, n0):
    evs = [e for e in h.events() if e.get("vm") == vm and e["kind"] == "moved"]
    return evs[n0:]


def move_rows(guests, trials=5):
    """rows [what, median total, median downtime, median VMM total, n, note]."""
    why = _why_not(guests)
    if why:
        return [["move rows skipped", "—", "—", "—", "0", why]]
    base = tempfile.mkdtemp(prefix="ember-bench-move-", dir="/tmp")
    rows = []
    c = move_util.make(base, n_hosts=2)
    try:
        c.write_vm("idle", os.path.join(guests, "halt.elf"), extra_vm={"irqchip": "on"},
                   memory="64M")
        c.write_vm("busy", os.path.join(guests, "counter.elf"), cmdline="spin=2000000",
                   memory="64M")
        for i in range(2):
            move_util.start_host(c, i, c.addrs)
        c.checker.wait(lambda r: "idle" in r and "busy" in r, 60, "both VMs")
        for vm, what in (("idle", "idle 64 MiB guest"), ("busy", "busy counting 64 MiB guest")):
            totals, downs, vmm, errors = [], [], [], []
            for _ in range(trials):
                src = c.host(c.checker.running()[vm])
                dst = next(h for h in c.hosts if h is not src)
                n0 = len(_moved(dst, vm, 0))
                t0 = time.monotonic()
                try:
                    r = subprocess.run([move_util.EMBERCTL, "--sock", src.sock, "migrate",
                                        vm, dst.name, "--wait"], capture_output=True,
                                       text=True, timeout=60)
                except subprocess.TimeoutExpired:
                    errors.append("%s not on %s in 60 s" % (vm, dst.name))
                    if os.environ.get("BENCH_MOVE_DEBUG"):
                        print(c.diagnose(), file=sys.stderr)
                    break
                t = time.monotonic() - t0
                if r.returncode:
                    errors.append(r.stderr.strip()[:120])
                    continue
                ev = etcd_util.wait_until(lambda: _moved(dst, vm, n0), 30)
                m = re.search(r"downtime ([\d.]+) ms, total (\d+) ms",
                              ev[0]["detail"] if ev else "")
                totals.append(t * 1000)
                if m:
                    downs.append(float(m.group(1)))
                    vmm.append(float(m.group(2)))
                c.checker.wait(lambda r, d=dst.name: r.get(vm) == d, 30, vm + " on target")
            note = "between 2 netns hosts, PSK TLS; total: emberctl's request to running there"
            if c.checker.violations:
                errors.append("ran twice: %s" % (c.checker.violations[:2],))
            if errors:
                note += "; " + "; ".join(errors[:2])
            fmt = lambda x: "%.1f ms" % x if x is not None else "—"  # noqa: E731
            rows.append([what, fmt(_med(totals)), fmt(_med(downs)), fmt(_med(vmm)),
                         str(len(totals)), note])
    except AssertionError as e:
        rows.append(["move rows failed", "—", "—", "—", "0", str(e)[:200]])
    finally:
        move_util.close(c)
        shutil.rmtree(base, ignore_errors=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", default=os.path.join(etcd_util.BUILD, "guest"))
    ap.add_argument("--trials", type=int, default=5)
    a = ap.parse_args()
    for r in move_rows(a.guests, a.trials):
        print(" | ".join(r))


if __name__ == "__main__":
    main()
