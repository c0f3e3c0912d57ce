"""Same-host migration rows (docs/migration.md, "Same-host upgrade"): a
1 GiB counting guest with all of its free memory filled (`fill=1024`, ring
3) moved to a fresh ember on this host with PUT /migration/send
{"mode": "local"}: its RAM (a memfd, --memory-shared) handed over as a file
descriptor instead of copied.  ember only: QEMU has no equivalent in the
comparison (its file-backed `x-ignore-shared` is another mechanism).

Per run: the downtime the source reports (its pause -> the target's REDY,
"downtime X ms" on its stderr, as the copying migration's rows take it) and
the total as the host sees it (the send request -> the target's phase
"running", GET /migration polled every millisecond).  Median of the runs.

Standalone: python3 tests/bench/bench_migrate_local.py [build/ember] [runs].
It never fails on a number: a run that cannot be made gives a row that
says why."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from bench_snapshot import read_reply

MEM_MIB = 1024
FILL_MIB = 1024
GOAL_DOWNTIME_MS = 2.0


def _req(sock, method, path, body=None, fds=()):
    """(status, JSON or None) of one API request, fds riding on it."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(sock)
        data = json.dumps(body).encode() if body is not None else b""
        socket.send_fds(s, [("%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                             % (method, path, len(data))).encode() + data], list(fds))
        st, text = read_reply(s)
        return st, (json.loads(text) if text.strip() else None)
    finally:
        s.close()


def _start(ember, sock, args, out, err):
    p = subprocess.Popen([ember] + args + ["--api-sock", sock] if args else
                         [ember, "--api-sock", sock], stdout=out, stderr=err)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.poll() is None:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.close()
            return p
        except OSError:
            time.sleep(0.002)
    p.kill()
    raise RuntimeError("ember never served its API")


def _wait_file(path, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            if text in f.read():
                return True
        time.sleep(0.01)
    return False


def _once(ember, guest, work):
    so, se = os.path.join(work, "src.out"), os.path.join(work, "src.err")
    with open(so, "wb") as o1, open(se, "wb") as e1, \
            open(os.path.join(work, "dst.out"), "wb") as o2, \
            open(os.path.join(work, "dst.err"), "wb") as e2:
        src = _start(ember, os.path.join(work, "src.sock"),
                     ["run", "--kernel", guest, "--memory", "%dM" % MEM_MIB, "--memory-shared",
                      "--cmdline", "fill=%d spin=200000" % FILL_MIB, "--timeout", "120"], o1, e1)
        dst = _start(ember, os.path.join(work, "dst.sock"), [], o2, e2)
    try:
        if not _wait_file(so, b"count 2\n", 120):
            return {"error": "the source guest did not fill and count"}
        filled = re.search(rb"filled (\d+) MiB", open(so, "rb").read())
        a, b = socket.socketpair()
        st, js = _req(os.path.join(work, "dst.sock"), "PUT", "/migration/receive",
                      {"use_saved_paths": True}, [b.fileno()])
        t0 = time.monotonic()
        st2, js2 = _req(os.path.join(work, "src.sock"), "PUT", "/migration/send",
                        {"mode": "local"}, [a.fileno()])
        a.close()
        b.close()
        if st != 204 or st2 != 204:
            return {"error": "refused: %s %s" % (js, js2)}
        total = None
        while time.monotonic() - t0 < 30:
            st, js = _req(os.path.join(work, "dst.sock"), "GET", "/migration")
            if js["phase"] == "running":
                total = (time.monotonic() - t0) * 1000
                break
            if js["phase"] == "failed":
                return {"error": js["error"]}
            time.sleep(0.001)
        src.wait(timeout=30)
        m = re.search(rb"downtime ([\d.]+) ms", open(se, "rb").read())
        if total is None or not m:
            return {"error": "no completion seen"}
        return {"downtime_ms": float(m.group(1)), "total_ms": total,
                "filled_mib": int(filled.group(1)) if filled else None}
    finally:
        src.kill()
        dst.kill()
        src.wait()
        dst.wait()


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def local_rows(ember, guests, runs):
    """(rows, goals): rows [what, median, note]; goals [what, goal, measured, met]."""
    runs = max(runs, 10)
    guest = os.path.join(guests, "counter.elf")
    work = tempfile.mkdtemp(prefix="ember-bench-migl-")
    res, errors = [], []
    try:
        for i in range(runs):
            d = os.path.join(work, str(i))
            os.mkdir(d)
            r = _once(ember, guest, d)
            (errors if "error" in r else res).append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not res:
        return [["same-host (memfd) migration, 1 GiB", "-", "no run: %s"
                 % (errors[0]["error"] if errors else "?")]], []
    down = [r["downtime_ms"] for r in res]
    tot = [r["total_ms"] for r in res]
    note = "%d runs (%d failed), %s MiB filled; min-max %.2f-%.2f ms" % (
        len(res), len(errors), res[0]["filled_mib"], min(down), max(down))
    rows = [["same-host (memfd) migration, 1 GiB filled: downtime (source pause -> REDY)",
             "%.2f ms" % _median(down), note],
            ["same-host (memfd) migration, 1 GiB filled: total (send -> target running)",
             "%.1f ms" % _median(tot), "min-max %.1f-%.1f ms" % (min(tot), max(tot))]]
    goals = [["same-host migration downtime at 1 GiB, median", "≤ %.0f ms" % GOAL_DOWNTIME_MS,
              "%.2f ms" % _median(down), "yes" if _median(down) <= GOAL_DOWNTIME_MS else "NO"]]
    return rows, goals


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ember = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "ember")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    rows, goals = local_rows(ember, os.path.join(root, "build", "guest"), n)
    for r in rows + goals:
        print(" | ".join(r))
