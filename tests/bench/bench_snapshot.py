"""The snapshot rows of `make bench` (imported by bench.py).

A 256 MiB guest (tests/guest/counter.c with fill=250: 250 MiB of it
written with a non-zero pattern before it counts) under
`ember run --api-sock`:

  * full snapshot: PATCH /vm Paused, then PUT /snapshot/create timed by
    this module's own unix-socket HTTP client from the request's first
    byte sent to the reply's last byte read (so the pause is outside it),
    the files written to a tmpfs (/dev/shm) and to the build dir's file
    system; the state and memory file sizes, the memory file's both
    apparent and on disk (st_blocks * 512: zero pages stay holes);
  * diff snapshot: the same guest with `dirty=655` (1% of 65536 pages: one
    byte into each of 655 pages spread over the filled area after each
    count line) under --track-dirty: a full snapshot, then per run the
    guest counts on for two lines and a Diff one is taken;
  * restore: `ember run --restore` of the full tmpfs snapshot, exec -> the
    first byte of guest output (the counter's next line, written right
    after resume: spin=1000 keeps its pause between lines ~µs), timed by
    build/bench/spawn; and ember's --stats "vcpus started" (vm_build ->
    vCPUs running); MAP_PRIVATE (default) and --memory-copy;
  * restore beside a cold boot: the counter (256 MiB, spin=1000, no fill)
    snapshotted to tmpfs, then rounds that each run, in shuffled order,
    its restore and a cold boot of the same guest (`ember run --kernel
    counter.elf --memory 256M --cmdline spin=1000`), both with the same
    flags (--timeout 0.02 --stats): exec -> first guest output of each,
    and the ratio of the medians;
  * streams (bench_stream.py): a stream snapshot into a pipe and a load
    from one, beside `cat` of the same bytes;
  * restores per second: K restores with C at a time, each SIGKILLed (and
    reaped) as soon as its first output line is read, on 2 CPUs
    (sched_setaffinity when the machine has more).

It never fails on a number: a missing guest or a refused request gives a
row that says why."""
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from bench_stream import stream_rows

MEM_MIB = 256
FILL_MIB = 250
DIRTY_PAGES = 655  # 1% of the 65536 pages of 256 MiB
RATE_K = 200
RATE_CONC = (2, 4, 8)

GOAL_RESTORE_MS = 1.0
GOAL_RESTORE_VS_BOOT = 1.5  # restore -> first output <= 1.5x a cold boot's
GOAL_FULL_MS = 100.0
GOAL_DIFF_MS = 5.0
GOAL_RATE = 300.0

STATS_RE = re.compile(r"ember: stats: vcpus started ([\d.]+) ms(?:, first output ([\d.]+) ms)?")


# ------------------------------------------------------------ statistics

def _pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    i = int(k)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (k - i)


def _summ(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"med": _pct(xs, 50), "p10": _pct(xs, 10), "p90": _pct(xs, 90), "n": len(xs)}


def _ms(v):
    return "—" if v is None else ("%.3f ms" % v if v < 10 else "%.1f ms" % v)


def _row(what, xs, unit, note=""):
    """[what, median, p10–p90, n, note] for samples xs in unit (ms, MiB, KiB, n)."""
    s = _summ(xs)
    if s is None:
        return [what, "—", "—", "0", note]
    if unit == "ms":
        f = "%.3f" if s["p90"] < 10 else "%.1f"
        med = _ms(s["med"])
    else:
        f = "%.1f" if unit in ("MiB", "KiB") else "%.0f"
        med = (f + " %s") % (s["med"], unit)
    return [what, med, (f + "–" + f) % (s["p10"], s["p90"]), str(s["n"]), note]


def _skip(what, why):
    return [what, "—", "—", "0", why]


# ------------------------------------------------------------- the API

def _http(sock_path, method, path, body=None, timeout=120):
    """(status, reply body, seconds from the request's send to the whole
    reply read).  The connect is outside the window."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        data = json.dumps(body).encode() if body is not None else b""
        req = ("%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (method, path, len(data))).encode() + data
        t0 = time.monotonic()
        s.sendall(req)
        st, body = read_reply(s)
        return st, body, time.monotonic() - t0
    finally:
        s.close()


def read_reply(s):
    """(status, body) of one HTTP/1.1 reply on socket s (0 when it had no
    status line)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    want = int(m.group(1)) if m else 0
    while len(rest) < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    st = re.match(rb"HTTP/1\.[01] (\d+)", head)
    return (int(st.group(1)) if st else 0), rest.decode(errors="replace")


class _Guest:
    """The counter under `ember run --api-sock`, its output in a file."""

    def __init__(self, ember, kernel, cmdline, tmp, name, extra=()):
        self.sock = os.path.join(tmp, name + ".sock")
        self.out = os.path.join(tmp, name + ".out")
        self.err = os.path.join(tmp, name + ".err")
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.p = subprocess.Popen(
                [ember, "run", "--memory", "%dM" % MEM_MIB, "--kernel", kernel, "--cmdline",
                 cmdline, "--timeout", "600", "--api-sock", self.sock] + list(extra),
                stdin=subprocess.DEVNULL, stdout=o, stderr=e, start_new_session=True)

    def _tail(self):
        try:
            with open(self.out, "rb") as f:
                f.seek(max(0, os.path.getsize(self.out) - 4096))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def last_count(self):
        nums = re.findall(r"count (\d+)\n", self._tail())
        return int(nums[-1]) if nums else 0

    def wait_count(self, n, timeout=30):
        """Until a line `count M` with M >= n is out; False on timeout/exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.last_count() >= n:
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.001)
        return False

    def api(self, method, path, body=None):
        return _http(self.sock, method, path, body)

    def why(self):
        try:
            with open(self.err, errors="replace") as f:
                err = f.read().strip()[-200:]
        except OSError:
            err = ""
        return "ember exited %s: %s" % (self.p.poll(), err or "(no stderr)") \
            if self.p.poll() is not None else "guest did not count on"

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def _sizes(state, mem):
    """(state KiB, memory MiB apparent, memory MiB on disk)."""
    a, b = os.stat(state), os.stat(mem)
    return a.st_size / 1024.0, b.st_size / 1048576.0, b.st_blocks * 512 / 1048576.0


def _unlink(*paths):
    for p in paths:
        for q in (p, p + ".next"):
            try:
                os.unlink(q)
            except OSError:
                pass


def _fs_type(path):
    try:
        r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True,
                           text=True)
        return r.stdout.strip() or "?"
    except OSError:
        return "?"


# ------------------------------------------------------------ the parts

def _full(g, d, n, keep):
    """n full snapshots of guest g into folder d: (times ms, sizes, pause ms,
    error).  keep: leave the last pair of files at d/full.{state,mem}."""
    st, mem = os.path.join(d, "full.state"), os.path.join(d, "full.mem")
    times, sizes, pauses = [], [], []
    for i in range(n):
        _unlink(st, mem)
        c, body, dt = g.api("PATCH", "/vm", {"state": "Paused"})
        if c != 204:
            return times, sizes, pauses, "pause refused: %s %s" % (c, body.strip()[:120])
        pauses.append(dt * 1e3)
        c, body, dt = g.api("PUT", "/snapshot/create", {"snapshot_path": st,
                                                        "mem_file_path": mem,
                                                        "snapshot_type": "Full"})
        if c != 204:
            g.api("PATCH", "/vm", {"state": "Resumed"})
            return times, sizes, pauses, "create refused: %s %s" % (c, body.strip()[:120])
        times.append(dt * 1e3)
        sizes.append(_sizes(st, mem))
        last = g.last_count()
        g.api("PATCH", "/vm", {"state": "Resumed"})
        g.wait_count(last + 1, timeout=5)
        if i < n - 1 or not keep:
            _unlink(st, mem)
    return times, sizes, pauses, None


def _diff(g, d, n):
    """A full snapshot, then n diff ones each after two more count lines:
    (times ms, [(state KiB, diff MiB apparent, on disk)], error)."""
    fs, fm = os.path.join(d, "base.state"), os.path.join(d, "base.mem")
    ds, dm = os.path.join(d, "diff.state"), os.path.join(d, "diff.mem")
    times, sizes = [], []
    try:
        c, body, _ = g.api("PATCH", "/vm", {"state": "Paused"})
        c, body, _ = g.api("PUT", "/snapshot/create", {"snapshot_path": fs,
                                                       "mem_file_path": fm,
                                                       "snapshot_type": "Full"})
        if c != 204:
            return times, sizes, "full create refused: %s %s" % (c, body.strip()[:120])
        _unlink(fs, fm)
        for _ in range(n):
            last = g.last_count()
            g.api("PATCH", "/vm", {"state": "Resumed"})
            if not g.wait_count(last + 2, timeout=10):
                return times, sizes, g.why()
            g.api("PATCH", "/vm", {"state": "Paused"})
            c, body, dt = g.api("PUT", "/snapshot/create", {"snapshot_path": ds,
                                                            "mem_file_path": dm,
                                                            "snapshot_type": "Diff"})
            if c != 204:
                return times, sizes, "diff create refused: %s %s" % (c, body.strip()[:120])
            times.append(dt * 1e3)
            sizes.append(_sizes(ds, dm))
            _unlink(ds, dm)
        return times, sizes, None
    finally:
        _unlink(fs, fm, ds, dm)


def _spawn_runs(spawn, argv, n):
    """n runs of argv timed by spawn, each ended by its --timeout (exit 124
    expected) or by the guest: (exec -> first output ms, ember's
    vcpus-started ms, ember's first-output ms, failures, a stderr line)."""
    argv = [spawn, "-n", str(n), "-x", "count", "--"] + list(argv)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + 5 * n,
                           start_new_session=True)
    except subprocess.TimeoutExpired:
        return [], [], [], n, "timed out"
    first, bad = [], 0
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) != 6:
            continue
        # --timeout ends it: exit 124 is the expected status
        if f[5] == "1" and int(f[0]) >= 0 and int(f[2]) in (0, 124):
            first.append(int(f[0]) / 1e6)
        else:
            bad += 1
    stats = list(STATS_RE.finditer(r.stderr))
    started = [float(m.group(1)) for m in stats]
    out = [float(m.group(2)) for m in stats if m.group(2)]
    other = [ln for ln in r.stderr.splitlines()
             if ln and not STATS_RE.search(ln) and "timeout after" not in ln]
    bad += max(0, n - len(first) - bad)
    return first, started, out, bad, (other[0][:160] if other else "")


def _restore_runs(spawn, ember, st, mem, n, extra=()):
    """n timed restores: (exec -> first output ms, ember's vcpus-started ms,
    failures, a stderr line).  --timeout bounds the whole run, start-up
    included: 20 ms beyond a mapped restore's start, 1 s for one that
    reads all of its memory first (--memory-copy)."""
    limit = "1" if "--memory-copy" in extra else "0.02"
    first, started, _, bad, err = _spawn_runs(
        spawn, [ember, "run", "--restore", st, "--memory-file", mem, "--timeout", limit,
                "--stats"] + list(extra), n)
    return first, started, bad, err


def _restore_vs_boot(ember, kernel, spawn, work, runs):
    """The counter (no fill) snapshotted, then its restore and a cold boot
    of the same guest, one of each per round in shuffled order: (rows,
    {"restore": ms list, "boot": ms list})."""
    cmdline = "spin=1000"
    what = "restore vs cold boot, counter %d MiB (%s), tmpfs MAP_PRIVATE" % (MEM_MIB, cmdline)
    g = _Guest(ember, kernel, cmdline, work, "cold")
    st, mem = os.path.join(work, "cold.state"), os.path.join(work, "cold.mem")
    try:
        if not g.wait_count(1, timeout=30):
            return [_skip(what, g.why())], {}
        c, body, _ = g.api("PATCH", "/vm", {"state": "Paused"})
        if c == 204:
            c, body, _ = g.api("PUT", "/snapshot/create", {"snapshot_path": st,
                                                           "mem_file_path": mem,
                                                           "snapshot_type": "Full"})
        if c != 204:
            return [_skip(what, "snapshot refused: %s %s" % (c, body.strip()[:120]))], {}
    finally:
        g.kill()
    flags = ["--timeout", "0.02", "--stats"]
    argv = {"restore": [ember, "run", "--restore", st, "--memory-file", mem] + flags,
            "boot": [ember, "run", "--kernel", kernel, "--memory", "%dM" % MEM_MIB,
                     "--cmdline", cmdline] + flags}
    res = {k: {"first": [], "started": [], "out": [], "bad": 0, "err": ""} for k in argv}
    rng = random.Random(0x636f6c64)
    n = max(5, min(runs, 30))
    try:
        for rnd in range(n + 2):  # two warm-up rounds
            keys = list(argv)
            rng.shuffle(keys)
            for k in keys:
                first, started, out, bad, err = _spawn_runs(spawn, argv[k], 1)
                if rnd < 2:
                    continue
                r = res[k]
                r["first"] += first
                r["started"] += started
                r["out"] += out
                r["bad"] += bad
                r["err"] = r["err"] or err
    finally:
        _unlink(st, mem)
    fail = lambda k: ("; %d failed%s" % (res[k]["bad"], (": " + res[k]["err"]) if res[k]["err"]
                                         else "")) if res[k]["bad"] else ""
    rows = [
        _row("restore, counter %d MiB (%s), tmpfs MAP_PRIVATE: exec → first guest output"
             % (MEM_MIB, cmdline), res["restore"]["first"], "ms",
             "rounds: this and the cold boot below, shuffled" + fail("restore")),
        _row("  ember --stats: vm_build → vCPUs running", res["restore"]["started"], "ms"),
        _row("  ember --stats: vm_build → first output", res["restore"]["out"], "ms"),
        _row("cold boot of the same guest (same memory, cmdline, flags): exec → first "
             "guest output", res["boot"]["first"], "ms", "`count 1`" + fail("boot")),
        _row("  ember --stats: vm_build → vCPUs running", res["boot"]["started"], "ms"),
        _row("  ember --stats: vm_build → first output", res["boot"]["out"], "ms"),
    ]
    r, b = _summ(res["restore"]["first"]), _summ(res["boot"]["first"])
    rows.append(["  restore ÷ cold boot (medians)",
                 "%.2f×" % (r["med"] / b["med"]) if r and b else "—", "—",
                 str(min(r["n"], b["n"])) if r and b else "0", "goal ≤ %.1f×"
                 % GOAL_RESTORE_VS_BOOT])
    return rows, {"restore": res["restore"]["first"], "boot": res["boot"]["first"]}


def _rate(argv, total, conc):
    """total runs of argv, conc at a time, each killed after its first output
    line: (runs per second, ok count, wall s)."""
    sel = selectors.DefaultSelector()
    running = {}
    started = done = ok = 0
    t0 = time.monotonic()
    try:
        while done < total:
            while started < total and len(running) < conc:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
                os.set_blocking(p.stdout.fileno(), False)
                sel.register(p.stdout, selectors.EVENT_READ, p)
                running[p] = b""
                started += 1
            events = sel.select(timeout=15)
            if not events:
                break  # none answered in 15 s: give up on the rest
            for key, _ in events:
                p = key.data
                try:
                    data = os.read(key.fd, 4096)
                except BlockingIOError:
                    continue
                running[p] += data
                if b"\n" in running[p] or not data:
                    # a restore may resume mid-line: any line is the guest's
                    ok += b"\n" in running[p]
                    p.kill()
                    p.wait()
                    sel.unregister(p.stdout)
                    p.stdout.close()
                    del running[p]
                    done += 1
        wall = time.monotonic() - t0
    finally:
        for p in list(running):
            p.kill()
            p.wait()
            p.stdout.close()
        sel.close()
    return (ok / wall if wall > 0 else None), ok, wall


# ------------------------------------------------------------------ rows

def snapshot_rows(ember, guests, build_dir, tools, runs):
    """(rows, goal_rows): rows are [what, median, p10–p90, n, note]; goal rows
    [goal, target, result, met] for bench.py's goals table."""
    kernel = os.path.join(guests, "counter.elf")
    spawn = tools["spawn"]
    goals_unmet = lambda why: [
        ["snapshot restore → first guest output, median", "≤ %.0f ms" % GOAL_RESTORE_MS,
         "— (%s)" % why, "—"],
        ["restore → first output ÷ a cold boot's, same guest", "≤ %.1f×" % GOAL_RESTORE_VS_BOOT,
         "—", "—"],
        ["full snapshot, 256 MiB touched (tmpfs)", "≤ %.0f ms" % GOAL_FULL_MS, "—", "—"],
        ["diff snapshot, 1% of pages dirty (tmpfs)", "≤ %.0f ms" % GOAL_DIFF_MS, "—", "—"],
        ["restored VMs per second on 2 cores", "≥ %.0f" % GOAL_RATE, "—", "—"]]
    if not os.path.exists(kernel):
        why = "%s missing" % kernel
        return [_skip("snapshot rows skipped", why)], goals_unmet(why)
    if not os.path.exists("/dev/kvm"):
        return [_skip("snapshot rows skipped", "no /dev/kvm")], goals_unmet("no /dev/kvm")
    rows, goals = [], []
    res = {}
    shm = tempfile.mkdtemp(prefix="ember-bench-snap-", dir="/dev/shm") \
        if os.path.isdir("/dev/shm") else None
    os.makedirs(build_dir, exist_ok=True)
    disk = tempfile.mkdtemp(prefix="snap-", dir=build_dir)
    dirs = ([("tmpfs", shm)] if shm else []) + [(_fs_type(disk), disk)]
    work = shm or disk
    guests_up = []
    try:
        # ---- full snapshots, then the files the restores use
        g = _Guest(ember, kernel, "fill=%d spin=1000" % FILL_MIB, work, "full")
        guests_up.append(g)
        if not g.wait_count(1, timeout=60):
            why = g.why()
            return [_skip("full snapshot of a %d MiB guest" % MEM_MIB, why)], goals_unmet(why)
        for label, d in dirs:
            n = max(3, min(runs, 10)) if label == "tmpfs" else max(3, min(runs, 5))
            t, sz, pauses, err = _full(g, d, n, keep=True)
            res["full_" + label] = t
            what = "full snapshot, %d MiB guest, %d MiB touched → %s" % (MEM_MIB, FILL_MIB,
                                                                            label)
            note = "PUT /snapshot/create round trip (pause outside)"
            if label != "tmpfs":
                note += "; 2 fsyncs of the files + 2 of the folder dominate"
            rows.append(_row(what, t, "ms", note + (("; " + err) if err else "")))
            if sz:
                rows.append(_row("  state file size", [s[0] for s in sz], "KiB"))
                rows.append(_row("  memory file: apparent size", [s[1] for s in sz], "MiB"))
                rows.append(_row("  memory file: on disk (st_blocks × 512)", [s[2] for s in sz],
                                 "MiB", "zero pages stay holes"))
            if label == "tmpfs":
                rows.append(_row("  pause before it (PATCH /vm Paused)", pauses, "ms"))
        g.kill()

        # ---- diff snapshots
        g = _Guest(ember, kernel, "fill=%d dirty=%d" % (FILL_MIB, DIRTY_PAGES), work, "diff",
                   extra=["--track-dirty"])
        guests_up.append(g)
        if not g.wait_count(1, timeout=60):
            rows.append(_skip("diff snapshot, 1% of pages dirty", g.why()))
        else:
            for label, d in dirs:
                n = max(5, min(runs, 20)) if label == "tmpfs" else max(3, min(runs, 10))
                t, sz, err = _diff(g, d, n)
                res["diff_" + label] = t
                rows.append(_row("diff snapshot, ~%d dirty pages (1%%) → %s" % (DIRTY_PAGES,
                                                                               label), t, "ms",
                                 "--track-dirty; PUT round trip" +
                                 (("; " + err) if err else "")))
                if sz:
                    rows.append(_row("  diff memory file: pages on disk",
                                     [s[2] * 256 for s in sz], "n",
                                     "guest writes %d + its stack/page tables" % DIRTY_PAGES))
                    rows.append(_row("  diff state file size", [s[0] for s in sz], "KiB"))
        g.kill()

        # ---- restores
        for label, d in dirs:
            st, mem = os.path.join(d, "full.state"), os.path.join(d, "full.mem")
            if not (os.path.exists(st) and os.path.exists(mem)):
                rows.append(_skip("restore from %s" % label, "no full snapshot there"))
                continue
            variants = [("MAP_PRIVATE", [], max(5, min(runs, 30)))]
            if label == "tmpfs":
                variants.append(("--memory-copy", ["--memory-copy"], max(3, min(runs, 10))))
            for vname, extra, n in variants:
                _restore_runs(spawn, ember, st, mem, 2, extra)  # warm-up
                first, started, bad, err = _restore_runs(spawn, ember, st, mem, n, extra)
                res["restore_%s_%s" % (label, vname)] = first
                note = "spawn: exec → first stdout byte (the next count line)"
                if bad:
                    note += "; %d failed%s" % (bad, (": " + err) if err else "")
                rows.append(_row("restore (%s, %s): exec → first guest output" % (label, vname),
                                 first, "ms", note))
                rows.append(_row("  ember --stats: vm_build → vCPUs running", started, "ms",
                                 "its clock starts in vm_build, after argument parsing"))
        # ---- a restore beside a cold boot of the same guest
        r, vs = _restore_vs_boot(ember, kernel, spawn, work, runs)
        rows += r
        res.update({"vs_" + k: v for k, v in vs.items()})
        # ---- streams: to a pipe, from a pipe, beside cat (bench_stream.py)
        rows += stream_rows(ember, kernel, work, runs, FILL_MIB, MEM_MIB)
        # ---- restores per second
        st, mem = os.path.join(work, "full.state"), os.path.join(work, "full.mem")
        if os.path.exists(st) and os.path.exists(mem):
            cpus = sorted(os.sched_getaffinity(0))
            pinned = cpus[:2]
            rates = []
            try:
                if len(cpus) > 2:
                    os.sched_setaffinity(0, pinned)
                for c in RATE_CONC:
                    k = RATE_K if runs >= 5 else RATE_K // 2
                    rate, ok, wall = _rate([ember, "run", "--restore", st, "--memory-file",
                                            mem, "--timeout", "10"], k, c)
                    rates.append(rate)
                    rows.append(["restores per second, %d at a time (CPUs %s)"
                                 % (c, ",".join(map(str, pinned))),
                                 "—" if rate is None else "%.0f /s" % rate, "—", str(k),
                                 "%d ok in %.2f s; exec → first line, SIGKILL, reap; "
                                 "incl. Python's Popen" % (ok, wall)])
                if tools.get("static"):  # what this harness itself can do
                    rate, ok, wall = _rate([tools["static"]], RATE_K, 2)
                    rows.append(["  reference: the same harness running a static hello, 2 at "
                                 "a time", "—" if rate is None else "%.0f /s" % rate, "—",
                                 str(RATE_K), "its ceiling on these CPUs"])
            finally:
                os.sched_setaffinity(0, cpus)
            res["rate"] = max([r for r in rates if r is not None], default=None)
    except OSError as e:
        rows.append(_skip("snapshot rows stopped", "%s" % e))
    finally:
        for g in guests_up:
            g.kill()
        for d in (shm, disk):
            if d:
                shutil.rmtree(d, ignore_errors=True)

    yn = lambda ok: "—" if ok is None else ("yes" if ok else "no")
    med = lambda k: (_summ(res.get(k, [])) or {}).get("med")
    v = med("restore_tmpfs_MAP_PRIVATE")
    goals.append(["snapshot restore → first guest output (tmpfs, MAP_PRIVATE), median",
                  "≤ %.0f ms" % GOAL_RESTORE_MS, _ms(v),
                  yn(None if v is None else v <= GOAL_RESTORE_MS)])
    r, b = med("vs_restore"), med("vs_boot")
    goals.append(["restore → first output ÷ a cold boot's, same guest, same run (medians)",
                  "≤ %.1f×" % GOAL_RESTORE_VS_BOOT,
                  "—" if not (r and b) else "%.2f× (%s vs %s)" % (r / b, _ms(r), _ms(b)),
                  yn(None if not (r and b) else r / b <= GOAL_RESTORE_VS_BOOT)])
    v = med("full_tmpfs")
    goals.append(["full snapshot of %d MiB touched memory (tmpfs), median" % FILL_MIB,
                  "≤ %.0f ms" % GOAL_FULL_MS, _ms(v), yn(None if v is None else v <= GOAL_FULL_MS)])
    v = med("diff_tmpfs")
    goals.append(["diff snapshot, 1% of pages dirty (tmpfs), median",
                  "≤ %.0f ms" % GOAL_DIFF_MS, _ms(v), yn(None if v is None else v <= GOAL_DIFF_MS)])
    v = res.get("rate")
    goals.append(["restored VMs per second on 2 cores (best concurrency)",
                  "≥ %.0f" % GOAL_RATE, "—" if v is None else "%.0f /s" % v,
                  yn(None if v is None else v >= GOAL_RATE)])
    return rows, goals


if __name__ == "__main__":
    import argparse
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench import build_tools, table
    ap = argparse.ArgumentParser(description="the snapshot rows of make bench alone")
    ap.add_argument("--ember", default="build/ember")
    ap.add_argument("--guests", default="build/guest")
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    bdir = os.path.join(os.path.abspath(a.build_dir), "bench")
    tools = build_tools(bdir)
    r, gl = snapshot_rows(os.path.abspath(a.ember), os.path.abspath(a.guests), bdir,
                          tools, a.runs)
    print(table(["what", "median", "p10–p90", "n", "note"], r))
    print()
    print(table(["goal", "target", "result", "met"], gl))
