#!/usr/bin/env python3
"""ember start-up and footprint benchmark, side by side with QEMU microvm.

    python3 tests/bench/bench.py --ember build/ember --guests build/guest
                                 [--runs N | --quick] [--no-qemu]

A benchmark, not a test: it never fails on a number.  It prints one table
(and writes it as Markdown to build/bench.md) with medians and p10-p90
spreads of:

  * exec -> first serial byte and exec -> exit for a PVH guest that prints
    "hello" and resets (timed by tests/bench/spawn.c, so Python's fork is
    outside the window), ember and QEMU runs interleaved round by round;
  * ember's own --stats timings ("ember internal");
  * the API (tests/bench/api_probe.c, in the same shuffled rounds): exec of
    `ember --api-sock` -> socket accepting -> first reply, and, after
    PUT /boot-source and /machine-config for the same guest and memory,
    InstanceStart sent -> first guest output (and -> its 204 reply), beside
    `ember run`'s exec -> first output: a platform that pre-starts ember
    pays exec ahead of time;
  * RSS beyond guest RAM while a spinning guest runs (smaps at ~0.3 s);
  * reference rows: exec of a static and a dynamic hello, and the KVM floor
    (open /dev/kvm ... first KVM_RUN exit in a minimal static program).
"""
import argparse
import datetime
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

from bench_balance import balance_lines
from bench_balance_live import balance_live_lines
from bench_drive_move import drive_move_rows
from bench_failover import failover_rows
from bench_emberd import emberd_rows
from bench_migrate import migrate_rows
from bench_ring import ring_rows
from bench_migrate_local import local_rows
from bench_move import move_rows
from bench_migrate_storage import migrate_storage_rows
from bench_snapshot import snapshot_rows
from bench_virtio import virtio_rows

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

GUEST_MEM_MIB = 64
RSS_SAMPLE_S = 0.3

# Goals from the start-up issue.
GOAL_FIRST_MS = 1.0
GOAL_QEMU_RATIO = 25.0
GOAL_RSS_MIB = 1.5
# Goal from the restructuring issue: InstanceStart -> first output on a
# pre-started `ember --api-sock` <= half of `ember run`'s exec -> first output.
GOAL_API_START_SHARE = 0.5

QEMU_BIN = "qemu-system-x86_64"
# The command line, plus -m to give QEMU the same guest RAM as ember's
# default (QEMU's own default is 128M); -serial stdio needs nothing else.
QEMU_ARGS = [
    "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off",
    "-enable-kvm", "-cpu", "host,-arch-capabilities",
    "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
    "-device", "i8042", "-m", "%dM" % GUEST_MEM_MIB,
]

STATS_RE = re.compile(
    r"ember: stats: vcpus started ([\d.]+) ms(?:, first output ([\d.]+) ms)?, "
    r"stop ([\d.]+) ms, exits (\d+)")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log("bench: " + msg)
    sys.exit(1)


def sh(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        die("%s failed:\n%s" % (" ".join(cmd), r.stdout))
    return r.stdout


# ---------------------------------------------------------------- building

def build_tools(bdir):
    """Compile the harness and the reference programs into bdir."""
    os.makedirs(bdir, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    src = lambda f: os.path.join(HERE, f)
    out = lambda f: os.path.join(bdir, f)
    warn = ["-Wall", "-Wextra", "-Werror"]
    # static: a small parent keeps the child's ru_maxrss its own (spawn.c)
    sh([cc, "-O2", "-static"] + warn + ["-o", out("spawn"), src("spawn.c")])
    sh([cc, "-O2", "-static"] + warn + ["-o", out("hello_static"), src("hello.c")])
    sh([cc, "-O2"] + warn + ["-o", out("hello_dynamic"), src("hello.c")])
    # the API's start (ember --api-sock): tests/bench/api_probe.c
    sh([cc, "-O2", "-static"] + warn + ["-o", out("api_probe"), src("api_probe.c")])
    floor = out("kvm_floor")
    try:
        sh([cc, "-O2", "-static"] + warn + ["-o", floor, src("kvm_floor.c")])
    except SystemExit:
        log("bench: kvm_floor did not build; its rows are skipped")
        floor = None
    return {"spawn": out("spawn"), "api_probe": out("api_probe"), "static": out("hello_static"),
            "dynamic": out("hello_dynamic"), "floor": floor}


def guest(guests_dir, name):
    """GUESTS/NAME, as `make guests` builds it (`make bench` does first)."""
    p = os.path.join(guests_dir, name)
    if not os.path.isfile(p):
        die("no guest %s: run make guests (or give --guests DIR)" % p)
    return p


# ----------------------------------------------------------------- timing

class Spawner:
    def __init__(self, spawn_bin):
        self.bin = spawn_bin
        self.stderr_seen = {}

    def run(self, key, argv, expect="hello", timeout=30):
        """One timed run: dict(first_ms, exit_ms, status, maxrss_kib, ok, stderr)."""
        p = subprocess.Popen([self.bin, "-n", "1", "-x", expect, "--"] + argv,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            return {"first_ms": None, "exit_ms": None, "status": "timeout",
                    "maxrss_kib": 0, "ok": False, "stderr": err}
        f = out.split()
        if p.returncode != 0 or len(f) != 6:
            return {"first_ms": None, "exit_ms": None, "status": "spawn failed",
                    "maxrss_kib": 0, "ok": False, "stderr": err}
        first = int(f[0])
        for line in err.splitlines():
            if line and not STATS_RE.search(line):
                self.stderr_seen.setdefault(key, [])
                if line not in self.stderr_seen[key] and len(self.stderr_seen[key]) < 4:
                    self.stderr_seen[key].append(line)
        return {"first_ms": first / 1e6 if first >= 0 else None,
                "exit_ms": int(f[1]) / 1e6, "status": int(f[2]),
                "maxrss_kib": int(f[3]), "ok": f[5] == "1", "stderr": err}


def check(sp, what, argv):
    r = sp.run("check", argv)
    if r["ok"] and r["status"] == 0:
        return None
    return "%s: status %s, expected output %s; stderr: %s" % (
        what, r["status"], "seen" if r["ok"] else "missing",
        r["stderr"].strip()[-300:] or "(empty)")


# -------------------------------------------------------------------- RSS

def smaps(pid):
    """[(start, end, name, rss_kib)] for each mapping of pid."""
    maps = []
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                maps.append([int(m.group(1), 16), int(m.group(2), 16), m.group(3), 0])
            elif line.startswith("Rss:") and maps:
                maps[-1][3] = int(line.split()[1])
    return maps


def present_kib(pid, start, end):
    """Resident KiB in [start, end), from /proc/PID/pagemap (bit 63)."""
    n = (end - start) // 4096
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(start // 4096 * 8)
        data = f.read(n * 8)
    cnt = sum(1 for i in range(7, len(data), 8) if data[i] & 0x80)
    return cnt * 4


def split_guest(pid, maps, mem):
    """(guest_rss_kib, total_rss_kib, how) for one smaps sample.

    The guest-RAM mapping is an anonymous one of exactly the guest size, or a
    named one ([anon:...guest...]).  If the kernel merged it with a
    neighbouring anonymous mapping of the same flags (a malloc arena, say),
    the guest's share is counted page by page from pagemap, taking the end of
    the VMA where the kernel's load address (guest 0x100000) is resident."""
    total = sum(m[3] for m in maps)
    anon = lambda m: m[2] == "" or m[2].startswith("[anon")
    named = [m for m in maps if m[2].startswith("[anon:") and "guest" in m[2].lower()]
    if named:
        return sum(m[3] for m in named), total, "named"
    exact = [m for m in maps if anon(m) and m[1] - m[0] == mem]
    if exact:
        return max(m[3] for m in exact), total, "exact"
    # QEMU may round its RAM block up; ember's may have merged.
    big = [m for m in maps if anon(m) and mem < m[1] - m[0] <= mem + (64 << 20)]
    if not big:
        return 0, total, "not found"
    m = max(big, key=lambda m: m[3])
    low, high = m[0], m[1] - mem
    probe = lambda base: present_kib(pid, base + 0x100000, base + 0x101000) > 0
    base = high if (not probe(low) and probe(high)) else low
    return present_kib(pid, base, base + mem), total, "merged"


def rss_round(spawn_bin, argv_by_key, mem):
    """Start every argv at once (through spawn -p), sample smaps and VmHWM at
    RSS_SAMPLE_S, then collect ru_maxrss and the status from spawn's wait4.

    argv_by_key: {key: (argv, kill_after_sample)}."""
    procs = {}
    for key, (argv, _) in argv_by_key.items():
        p = subprocess.Popen([spawn_bin, "-p", "-x", "", "--"] + argv,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True)
        t0 = time.monotonic()
        line = p.stdout.readline().split()
        procs[key] = (p, int(line[1]) if len(line) == 2 else None, t0)
    res = {}
    for key, (p, pid, t0) in procs.items():
        time.sleep(max(0.0, t0 + RSS_SAMPLE_S - time.monotonic()))
        try:
            if pid is None:
                raise OSError("spawn failed")
            maps = smaps(pid)
            g, t, how = split_guest(pid, maps, mem)
            with open("/proc/%d/status" % pid) as f:
                hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
            res[key] = {"guest": g, "total": t, "beyond": t - g, "how": how, "hwm": hwm}
        except (OSError, ValueError, AttributeError) as e:
            res[key] = {"error": str(e)}
        if argv_by_key[key][1] and pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for key, (p, pid, t0) in procs.items():
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        f = out.split()
        if len(f) == 6 and "error" not in res[key]:
            res[key]["status"] = int(f[2])
            res[key]["maxrss"] = int(f[3])
        else:
            res[key].setdefault("error", "no result from spawn")
    return res


# ------------------------------------------------------------ statistics

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    i = int(k)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (k - i)


def summary(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"med": pct(xs, 50), "p10": pct(xs, 10), "p90": pct(xs, 90), "n": len(xs)}


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "ms":
        return "%.3f ms" % v if v < 10 else "%.1f ms" % v
    if unit == "MiB":
        return "%.2f MiB" % v
    return "%.0f" % v


def fmt_spread(s, unit):
    if s is None:
        return "—"
    if unit == "ms":
        f = "%.3f" if s["p90"] < 10 else "%.1f"
    elif unit == "MiB":
        f = "%.2f"
    else:
        f = "%.0f"
    return (f + "–" + f) % (s["p10"], s["p90"])


def table(header, rows):
    """Markdown table with padded columns (readable as plain text too)."""
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
    out = [line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    return "\n".join(out + [line(r) for r in rows])


# ------------------------------------------------------------ machine info

def machine():
    cpu = "?"
    hyp = False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "?":
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags") and " hypervisor" in line:
                    hyp = True
    except OSError:
        pass
    rev = "?"
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "-uno"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            rev += " (with uncommitted changes)"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "hyp": hyp,
            "kernel": platform.release(), "rev": rev,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ember", default=os.path.join(REPO, "build", "ember"))
    ap.add_argument("--guests", default=os.path.join(REPO, "build", "guest"))
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                    help="where bench/ (tools) and bench.md go (default: build)")
    ap.add_argument("--runs", type=int, default=30, help="runs per measurement (30)")
    ap.add_argument("--quick", action="store_true", help="5 runs, for development")
    ap.add_argument("--qemu", default=QEMU_BIN, help="QEMU binary (default: %s from PATH)"
                    % QEMU_BIN)
    ap.add_argument("--no-qemu", action="store_true", help="ember and references only")
    a = ap.parse_args()
    runs = 5 if a.quick else max(1, a.runs)
    t_begin = time.monotonic()

    ember = os.path.abspath(a.ember)
    if not os.access(ember, os.X_OK):
        die("no ember binary at %s (make first)" % ember)
    bdir = os.path.join(os.path.abspath(a.build_dir), "bench")
    tools = build_tools(bdir)
    hello = guest(a.guests, "bench_hello.elf")
    loop = guest(a.guests, "loop.elf")

    qemu = None if a.no_qemu else shutil.which(a.qemu)
    qemu_note = "QEMU not run (--no-qemu)" if a.no_qemu else \
        ("%s not found: ember's numbers alone" % a.qemu if not qemu else None)

    mem_opt = ["--memory", "%dM" % GUEST_MEM_MIB]
    cmds = {
        "ember": [ember, "run", "--kernel", hello] + mem_opt,
        "ember_stats": [ember, "run", "--kernel", hello, "--stats"] + mem_opt,
        "static": [tools["static"]],
        "dynamic": [tools["dynamic"]],
    }
    if tools["floor"]:
        cmds["floor"] = [tools["floor"]]
        cmds["floor_cpuid"] = [tools["floor"], "cpuid"]
    if qemu:
        cmds["qemu"] = [qemu] + QEMU_ARGS + ["-kernel", hello]
    hvt_hello = os.path.join(a.guests, "hvt", "hello.hvt")
    if os.path.exists(hvt_hello):
        # Solo5 spellings, as a solo5-hvt launch script would give them
        cmds["hvt"] = [ember, "run", "--mem=%d" % GUEST_MEM_MIB, "--", hvt_hello]
        cmds["hvt_stats"] = [ember, "run", "--stats", "--mem=%d" % GUEST_MEM_MIB, "--",
                             hvt_hello]
    expect = {k: ("h" if k.startswith("floor") else "Hello" if k.startswith("hvt")
                  else "hello") for k in cmds}

    sp = Spawner(tools["spawn"])
    err = check(sp, "ember", cmds["ember"])
    if err:
        die("ember does not run the hello guest: " + err)
    if qemu:
        err = check(sp, "qemu", cmds["qemu"])
        if err:
            qemu_note = "QEMU did not run the hello guest, so it is left out (%s)" % err
            del cmds["qemu"]
            qemu = None
    for k in ("floor", "floor_cpuid"):
        if k in cmds:
            r = sp.run("check", cmds[k], expect="h")
            if not (r["ok"] and r["status"] == 0):
                log("bench: %s failed (%s); its rows are skipped" % (
                    " ".join(cmds[k]), r["stderr"].strip()))
                del cmds[k]

    # Timing: every round runs each command once, in a fresh shuffled order,
    # so drift and noise land on all of them alike.  Two warm-up rounds first.
    # "api" is the API's start (api_probe), the same guest and memory as
    # "ember": exec -> socket accepting -> first reply, then InstanceStart
    # sent -> the guest's first output byte and -> its reply.
    log("bench: timing, %d runs each (%s, api)" % (runs, ", ".join(cmds)))
    rng = random.Random(0x656d626572)
    samples = {k: [] for k in cmds}
    bad = {k: 0 for k in cmds}
    api = {"connect": [], "reply": [], "start": [], "start_reply": []}
    sock = os.path.join(bdir, "api.sock")
    for rnd in range(runs + 2):
        keys = list(cmds) + ["api"]
        rng.shuffle(keys)
        for k in keys:
            if k == "api":
                try:
                    r = subprocess.run([tools["api_probe"], ember, sock, hello,
                                        str(GUEST_MEM_MIB)], capture_output=True, text=True,
                                       timeout=30)
                    f = r.stdout.split() if r.returncode == 0 else []
                except subprocess.TimeoutExpired:
                    f = []
                if rnd < 2:
                    continue
                if len(f) != len(api):
                    bad["ember API"] = bad.get("ember API", 0) + 1
                    continue
                for key, v in zip(api, f):
                    api[key].append(int(v) / 1e6 if int(v) >= 0 else None)
                continue
            r = sp.run(k, cmds[k], expect=expect[k])
            if rnd < 2:
                continue
            if not r["ok"] or r["status"] != 0:
                bad[k] += 1
                continue
            samples[k].append(r)
    t_timing = time.monotonic()

    # RSS: ember and QEMU with the spinning guest, started together.
    log("bench: RSS, %d rounds of about 1 s" % runs)
    mem = GUEST_MEM_MIB << 20
    rss_cmds = {"ember": ([ember, "run", "--kernel", loop, "--timeout", "1"] + mem_opt, False)}
    if qemu:
        rss_cmds["qemu"] = ([qemu] + QEMU_ARGS + ["-kernel", loop], True)
    rss = {k: [] for k in rss_cmds}
    hows = {k: set() for k in rss_cmds}
    for _ in range(runs):
        for k, v in rss_round(tools["spawn"], rss_cmds, mem).items():
            if "error" in v:
                bad[k + " (RSS)"] = bad.get(k + " (RSS)", 0) + 1
                continue
            rss[k].append(v)
            hows[k].add(v["how"])

    t_end = time.monotonic()

    # ------------------------------------------------------------- report
    ms = lambda k, f: summary([r[f] for r in samples.get(k, [])])
    stats = {"build": [], "first": [], "stop": [], "exits": []}
    for r in samples["ember_stats"]:
        m = STATS_RE.search(r["stderr"])
        if m:
            stats["build"].append(float(m.group(1)))
            stats["first"].append(float(m.group(2)) if m.group(2) else None)
            stats["stop"].append(float(m.group(3)))
            stats["exits"].append(float(m.group(4)))
    mib = lambda k, f: summary([v[f] / 1024.0 for v in rss.get(k, [])])
    hvt_first = []
    for r in samples.get("hvt_stats", []):
        m = STATS_RE.search(r["stderr"])
        if m and m.group(2):
            hvt_first.append(float(m.group(2)))

    def row(what, e, q, unit):
        ratio = "—"
        if e and q and e["med"] > 0:
            ratio = "%.1f×" % (q["med"] / e["med"])
        return [what, fmt(e and e["med"], unit), fmt_spread(e, unit),
                fmt(q and q["med"], unit), fmt_spread(q, unit), ratio]

    e_first, q_first = ms("ember", "first_ms"), ms("qemu", "first_ms")
    e_beyond, q_beyond = mib("ember", "beyond"), mib("qemu", "beyond")
    main_rows = [
        row("exec → first serial byte", e_first, q_first, "ms"),
        row("exec → exit (wait returns)", ms("ember", "exit_ms"), ms("qemu", "exit_ms"), "ms"),
        row("RSS beyond guest RAM (smaps at %.1f s)" % RSS_SAMPLE_S, e_beyond, q_beyond, "MiB"),
        row("RSS of the guest-RAM mapping", mib("ember", "guest"), mib("qemu", "guest"), "MiB"),
        row("RSS, whole process", mib("ember", "total"), mib("qemu", "total"), "MiB"),
        row("peak RSS: VmHWM at %.1f s" % RSS_SAMPLE_S, mib("ember", "hwm"), mib("qemu", "hwm"), "MiB"),
        row("peak RSS: ru_maxrss (wait4)", mib("ember", "maxrss"), mib("qemu", "maxrss"), "MiB"),
        row("ember internal: main → VM built, vCPUs started", summary(stats["build"]), None, "ms"),
        row("ember internal: main → first output", summary(stats["first"]), None, "ms"),
        row("ember internal: main → stop", summary(stats["stop"]), None, "ms"),
        row("ember internal: VM exits", summary(stats["exits"]), None, "n"),
    ]
    a_start = summary(api["start"])
    share = a_start["med"] / e_first["med"] if (a_start and e_first) else None
    main_rows += [
        row("API: exec → socket accepting (connect succeeds)", summary(api["connect"]), None,
            "ms"),
        row("API: exec → first reply (GET /)", summary(api["reply"]), None, "ms"),
        row("API: InstanceStart sent → first guest output (same guest, %d MiB)" % GUEST_MEM_MIB,
            a_start, None, "ms"),
        row("API: InstanceStart sent → its reply (204)", summary(api["start_reply"]), None, "ms"),
        ["API: InstanceStart → first output ÷ exec → first serial byte (medians)",
         "%.2f×" % share if share else "—", "—", "—", "—", "—"],
    ]
    if "hvt" in cmds:
        main_rows += [
            row("Solo5 hvt hello: exec → first hypercall output", ms("hvt", "first_ms"), None,
                "ms"),
            row("Solo5 hvt hello: exec → exit (halt)", ms("hvt", "exit_ms"), None, "ms"),
            row("Solo5 hvt hello: ember internal, main → first output", summary(hvt_first),
                None, "ms"),
        ]
    ref_rows = []
    for key, what in (("static", "static hello (C): exec → exit"),
                      ("dynamic", "dynamic hello (C): exec → exit")):
        s = ms(key, "exit_ms")
        ref_rows.append([what, fmt(s and s["med"], "ms"), fmt_spread(s, "ms")])
    for key, name in (("floor", "KVM floor"),
                      ("floor_cpuid", "KVM floor + GET_SUPPORTED_CPUID/SET_CPUID2")):
        if key not in cmds:
            continue
        for f, what in (("first_ms", ": exec → first guest `out` on stdout"),
                        ("exit_ms", ": exec → exit")):
            s = ms(key, f)
            ref_rows.append([name + what, fmt(s and s["med"], "ms"), fmt_spread(s, "ms")])
    for key, name in (("floor", "KVM floor"), ("floor_cpuid", "KVM floor + CPUID")):
        fl = ms(key, "first_ms")
        if key in cmds and fl and e_first:
            ref_rows.append(["ember's first byte above the %s (medians)" % name,
                             fmt(e_first["med"] - fl["med"], "ms"), ""])

    goal_rows = []
    yn = lambda ok: "—" if ok is None else ("yes" if ok else "no")
    v = e_first and e_first["med"]
    goal_rows.append(["exec → first output, ember median", "≤ %.1f ms" % GOAL_FIRST_MS,
                      fmt(v, "ms"), yn(None if v is None else v <= GOAL_FIRST_MS)])
    ratio = q_first["med"] / e_first["med"] if (e_first and q_first) else None
    goal_rows.append(["exec → first output, QEMU ÷ ember", "≥ %.0f× (≤ 1/%.0f of QEMU)"
                      % (GOAL_QEMU_RATIO, GOAL_QEMU_RATIO),
                      "%.1f×" % ratio if ratio else "— (no QEMU)",
                      yn(None if ratio is None else ratio >= GOAL_QEMU_RATIO)])
    v = e_beyond and e_beyond["med"]
    goal_rows.append(["RSS beyond guest RAM, ember median", "≤ %.1f MiB" % GOAL_RSS_MIB,
                      fmt(v, "MiB"), yn(None if v is None else v <= GOAL_RSS_MIB)])
    v = summary(api["connect"])
    goal_rows.append(["API: exec → socket accepting, ember median", "≤ 1.0 ms",
                      fmt(v and v["med"], "ms"), yn(None if v is None else v["med"] <= 1.0)])
    goal_rows.append(["API: InstanceStart → first output ÷ `ember run` exec → first output "
                      "(medians)", "≤ %.1f×" % GOAL_API_START_SHARE,
                      "%.2f× (%s vs %s)" % (share, fmt(a_start["med"], "ms"),
                                           fmt(e_first["med"], "ms")) if share else "—",
                      yn(None if share is None else share <= GOAL_API_START_SHARE)])
    hs = summary(hvt_first)
    if hs:
        goal_rows.append(["hvt: monitor's share (main → first hypercall)", "≤ 0.5 ms",
                          fmt(hs["med"], "ms"), yn(hs["med"] <= 0.5)])

    mi = machine()
    qver = ""
    if qemu:
        qver = subprocess.run([qemu, "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    out = []
    out.append("## ember start-up benchmark\n")
    out.append("- date: %s; ember %s" % (mi["date"], mi["rev"]))
    out.append("- machine: %s CPU(s), %s%s; Linux %s" % (
        mi["nproc"], mi["cpu"], " (a VM: KVM is nested)" if mi["hyp"] else "", mi["kernel"]))
    out.append("- %d runs per row (plus 2 warm-up rounds), ember/QEMU/reference runs "
               "interleaved in shuffled order; spread = p10–p90; ratio = QEMU ÷ ember"
               % runs)
    if qver:
        out.append("- QEMU: %s" % qver)
    if qemu_note:
        out.append("- **%s**" % qemu_note)
    out.append("")
    out.append(table(["what", "ember median", "spread", "QEMU median", "spread", "ratio"],
                     main_rows))
    out.append("\nReference: what exec and bare KVM cost on this machine\n")
    out.append(table(["what", "median", "spread"], ref_rows))
    out.append("\nVirtio (guest ring-0 code is emulated here, ~200 ns an instruction: "
               "this machine's numbers; see tests/bench/bench_virtio.py)\n")
    out.append(table(["what", "median", "note"], virtio_rows(ember, a.guests, runs)))
    log("bench: ring I/O rows")
    out.append("\nSolo5 ring I/O: a stream of frames by ring vs by hypercalls (emulated "
               "guest; see tests/bench/bench_ring.py)\n")
    out.append(table(["what", "median", "note"], ring_rows(ember, a.guests, runs)))
    log("bench: snapshot rows")
    snap_rows, snap_goals = snapshot_rows(ember, a.guests, bdir, tools, runs)
    out.append("\nSnapshots: a 256 MiB guest, 250 MiB of it written (see "
               "tests/bench/bench_snapshot.py)\n")
    out.append(table(["what", "median", "p10–p90", "n", "note"], snap_rows))
    log("bench: migration rows")
    mig_header, mig_rows, mig_goals, mig_notes = migrate_rows(ember, a.guests, min(runs, 10))
    out.append("\nLive migration over loopback TCP, ember beside QEMU in the same run (see "
               "tests/bench/bench_migrate.py)\n")
    out.append(table(mig_header, mig_rows))
    out += ["- " + n for n in mig_notes]
    log("bench: drive move rows")
    dm_rows, move_goals = drive_move_rows(ember, a.guests, min(runs, 5))
    out.append("\nDrive moves: a 1 GiB filled disk, the guest idle, beside dd and cp of the "
               "same file in the same run (see tests/bench/bench_drive_move.py)\n")
    out.append(table(["what", "median", "spread", "throughput"], dm_rows))
    log("bench: migration with disk copy rows")
    stor_rows, stor_errors = migrate_storage_rows(ember, a.guests, min(runs, 3))
    out.append("\nLive migration with disk copy: a 1 GiB disk, half data, over loopback TCP, "
               "beside the file over TCP and cp --sparse (see "
               "tests/bench/bench_migrate_storage.py)\n")
    out.append(table(["what", "median", "spread"], stor_rows))
    out += ["- error: " + e for e in stor_errors]
    log("bench: same-host migration rows")
    local_rows_, local_goals = local_rows(ember, a.guests, min(runs, 10))
    out.append("\nSame-host migration, memory by fd (ember only; see "
               "tests/bench/bench_migrate_local.py)\n")
    out.append(table(["what", "median", "note"], local_rows_))
    log("bench: emberd rows")
    ed_rows, ed_goals = emberd_rows(ember, a.guests, runs); local_goals = local_goals + ed_goals
    out.append("\nemberd: a VMM crash -> the guest running again on this host (see "
               "tests/bench/bench_emberd.py)\n")
    out.append(table(["what", "median", "p99", "n", "note"], ed_rows))
    log("bench: cluster failover rows")
    fo_rows, fo_goals = failover_rows(a.guests)
    out.append("\nCluster failover: 3 emberd hosts in network namespaces, etcd, TTL 2 s (see "
               "tests/bench/bench_failover.py)\n")
    out.append(table(["what", "median", "p99", "n", "note"], fo_rows))
    log("bench: emberd live-move rows")
    out.append("\nLive moves between emberd hosts (see tests/bench/bench_move.py)\n")
    out.append(table(["what", "total", "downtime", "VMM total", "n", "note"],
                     move_rows(a.guests)))
    out += balance_lines(os.path.abspath(a.build_dir))  # balancer simulator: CPU only
    out += balance_live_lines(a.guests)  # emberd's balancer, 3 hosts, real processes
    out.append("\nGoals (from the issues)\n")
    out.append(table(["goal", "target", "result", "met"],
                     goal_rows + snap_goals + mig_goals + local_goals + move_goals + fo_goals))
    out.append("\nCommands (timed by build/bench/spawn: CLOCK_MONOTONIC around "
               "posix_spawn → first stdout byte → wait4):\n")
    rel = lambda p: os.path.relpath(p, os.getcwd()) if p.startswith(REPO) else p
    q = lambda argv: " ".join(shlex.quote(rel(x)) for x in argv)
    out.append("    " + q(cmds["ember"]))
    out.append("    " + q(cmds["ember_stats"]) + "   # internal rows only")
    if qemu:
        out.append("    " + q(cmds["qemu"]))
    out.append("    API: " + q([tools["api_probe"], ember, sock, hello, str(GUEST_MEM_MIB)])
               + "   # PUT /boot-source, /machine-config, /actions InstanceStart")
    out.append("    RSS: " + q(rss_cmds["ember"][0]))
    if qemu:
        out.append("    RSS: " + q(rss_cmds["qemu"][0]) + "   # SIGTERM after the sample")
    notes = []
    for k, how in hows.items():
        if "merged" in how:
            notes.append("%s: the guest-RAM mapping shares a VMA with a neighbouring "
                         "anonymous mapping; its RSS was split off page by page (pagemap)" % k)
        if "not found" in how:
            notes.append("%s: no guest-RAM mapping found; 'beyond guest' is the whole RSS" % k)
    for k, n in bad.items():
        if n:
            notes.append("%s: %d run(s) failed (or printed no hello) and were left out" % (k, n))
    lost = sum(1 for v in api["start_reply"] if v is None)
    if lost:
        notes.append("API: InstanceStart's 204 reply never came in %d of %d runs: the guest "
                     "(hello, then reset) ended ember before the API thread sent it"
                     % (lost, len(api["start_reply"])))
    for k, lines in sp.stderr_seen.items():
        if k in ("ember", "qemu", "floor", "floor_cpuid"):
            notes.append("%s wrote on stderr, e.g.: %s" % (k, " / ".join(lines)[:200]))
    notes.append("ru_maxrss and VmHWM come from the kernel's per-CPU RSS counters, "
                 "which are approximate: they can differ from the smaps sum by a few "
                 "hundred KiB")
    notes.append("wall time of the bench: %.0f s (timing %.0f s, RSS %.0f s)" % (
        t_end - t_begin, t_timing - t_begin, t_end - t_timing))
    out.append("\nNotes:\n")
    out += ["- " + n for n in notes]
    text = "\n".join(out) + "\n"
    print(text)
    md = os.path.join(os.path.abspath(a.build_dir), "bench.md")
    with open(md, "w") as f:
        f.write(text)
    log("bench: written to %s" % rel(md))


if __name__ == "__main__":
    main()
