"""Live migration figures, scenario (b): the dirtying guest (counter.c,
16 MiB filled, 1024 pages dirtied on every line, a line every few ms)
moved between two embers on this machine over a socketpair, under a
max_bandwidth of 8 MB/s that pre-copy cannot converge under.

Rows: pre-copy with the throttle (for comparison), post-copy (converge "postcopy": the switch once rounds stop
shrinking) and post-copy at once ("mode": "postcopy-now").  Each: total
(the request to the source's end), downtime (the source's pause to the
target running, GET /migration on the target), bytes through the
stream, the faults the target served; the median of RUNS runs.

    python3 tests/bench/bench_migrate.py        # EMBER, GUESTS as for the tests

Uses the integration tests' helpers (test_api.Ember, test_migration)."""
import os
import re
import statistics
import sys
import tempfile
import pathlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from conftest import guest  # noqa: E402
from test_api import Ember  # noqa: E402
from test_migration import mig_or_none, phase_in, start, wait_for  # noqa: E402

RUNS = 3
CMDLINE = "count=1000000 spin=2000000 fill=16 dirty=1024"
BANDWIDTH = 8000000
DONE_RE = re.compile(r"total (\d+) ms, downtime ([\d.]+) ms, (\d+) rounds, (\d+) bytes")


def one(tmp, body, timeout_ms=240000):
    src = Ember(tmp, run_args=["--kernel", guest("counter"), "--cmdline", CMDLINE,
                               "--timeout", "300"], name="src")
    dst = Ember(tmp, name="dst")
    try:
        src.wait_output("count 3\n", timeout=60)
        start(src, dst, send_body=dict(body, max_bandwidth=BANDWIDTH, timeout_ms=timeout_ms))

        def ended():
            js = mig_or_none(src)
            return src.p.poll() is not None or (js and js["phase"] == "failed" and js)
        end = wait_for(ended, "the source to end", timeout=timeout_ms / 1000 + 10)
        m = DONE_RE.search(src.stderr())
        if not m:
            return None, end["error"] if isinstance(end, dict) else src.stderr()[-400:]
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target", timeout=60)
        return {"total_ms": int(m.group(1)), "downtime_ms": js["downtime_ms"],
                "rounds": int(m.group(3)), "bytes": int(m.group(4)),
                "faults": js["faults_served"]}, None
    finally:
        src.kill()
        dst.kill()


def rows():
    out = []
    # pre-copy, for comparison: one run, given 60 s (it does not converge)
    for name, body, n, tmo in (("(b) pre-copy (throttle)", {"converge": "throttle"}, 1, 60000),
                               ("(b) post-copy (converge)", {"converge": "postcopy"}, RUNS,
                                240000),
                               ("(b) post-copy at once", {"mode": "postcopy-now"}, RUNS,
                                240000)):
        runs, err = [], None
        for i in range(n):
            r, err = one(pathlib.Path(tempfile.mkdtemp(prefix="bench-mig-")), body, tmo)
            if r:
                runs.append(r)
        if not runs:
            out.append(f"{name}: failed: {err}")
            continue
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out.append(f"{name:28} total {med['total_ms']:8.0f} ms  downtime "
                   f"{med['downtime_ms']:7.2f} ms  {med['bytes'] / 1e6:7.1f} MB  "
                   f"rounds {med['rounds']:.0f}  faults {med['faults']:.0f}  ({len(runs)} runs)")
    return out


if __name__ == "__main__":
    for line in rows():
        print(line)
