"""Live migration rows of `make bench` (docs/migration.md, "Numbers"):
ember beside QEMU in the same run, both over loopback TCP, the same guest
(tests/guest/counter.c, a PVH ELF both boot) with 256 MiB of RAM:

  (a) idle, 250 MiB of non-zero memory (`fill=250`: every page written in
      ring 3 before counting starts);
  (b) the same, the guest dirtying memory at a steady rate (`dirty=N`: N
      pages after each count line);
  (c) idle, untouched memory.

ember: `ember migrate --listen 127.0.0.1:P --to T.sock --insecure-plain` and
`ember migrate --from S.sock --to-host 127.0.0.1:P --insecure-plain` (and
again with a pre-shared key for the TLS row); its JSON summary gives the
total time, the downtime (source pause -> target's REDY, as the source
sees it), bytes and rounds.  QEMU 7.2 (microvm): `-incoming tcp:...` and
QMP `migrate`, with its defaults and tuned (`max-bandwidth` unlimited,
`downtime-limit` 5 ms); `query-migrate` gives total-time, downtime, bytes
and dirty-sync-count.

The guest-observed gap: the counter prints a line every few milliseconds;
the host stamps each line as it arrives (source's stdout, then the
target's), and the largest gap between consecutive lines across the move
is reported beside the largest gap of a run of the same length without a
migration (these hosts show stray gaps of many ms with none).

It never fails on a number: whatever cannot run gives a row that says why."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

MEM_MIB = 256
FILL_MIB = 250
SPIN = 200000  # a count line every ~1 ms here (ring 3, native)
DIRTY = 256    # (b): pages dirtied after each line
GOAL_DOWNTIME_MS = 5.0

SCENARIOS = {
    "a": ("idle, 250 MiB non-zero", "fill=%d spin=%d" % (FILL_MIB, SPIN)),
    "b": ("250 MiB, dirtying %d pages a line" % DIRTY,
          "fill=%d dirty=%d spin=%d" % (FILL_MIB, DIRTY, SPIN)),
    "c": ("idle, untouched", "spin=%d" % SPIN),
}


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


class Lines:
    """A process's stdout, each line stamped (CLOCK_MONOTONIC) on arrival."""

    def __init__(self, p):
        self.stamps = []
        self.text = []
        self.t = threading.Thread(target=self._read, args=(p.stdout,), daemon=True)
        self.t.start()

    def _read(self, f):
        for line in iter(f.readline, b""):
            self.stamps.append(time.monotonic())
            self.text.append(line)

    def wait(self, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pred(x) for x in self.text[-50:]):
                return True
            time.sleep(0.005)
        return False


def _gap_ms(*streams):
    """The largest gap between consecutive count lines of the streams
    joined (source's, then target's), in ms."""
    stamps = []
    for s in streams:
        stamps += [t for t, x in zip(s.stamps, s.text) if x.startswith(b"count ")]
    stamps.sort()
    return max((b - a for a, b in zip(stamps, stamps[1:])), default=0) * 1000


def _counted_on(so, to, summary):
    """summary with the guest-observed gap, once the target has printed 20
    lines more (so the gap across the move is in what was stamped)."""
    to.wait(lambda x: x.startswith(b"count "), timeout=30)
    n = len(to.text)
    to.wait(lambda x: len(to.text) > n + 20, timeout=30)
    summary["gap_ms"] = _gap_ms(so, to)
    return summary


def _start_ember(ember, sock, cmdline):
    return subprocess.Popen(
        [ember, "run", "--memory", "%dM" % MEM_MIB, "--kernel", _kernel[0], "--cmdline",
         cmdline, "--timeout", "600", "--api-sock", sock],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True)


_kernel = [None]


def _ember_once(ember, work, cmdline, tls, extra=(), same_host=False):
    """One ember migration over loopback TCP: the summary dict plus
    "gap_ms", or {"error": why}."""
    src_sock, dst_sock = os.path.join(work, "s.sock"), os.path.join(work, "t.sock")
    for p in (src_sock, dst_sock):
        if os.path.exists(p):
            os.unlink(p)
    src = _start_ember(ember, src_sock, cmdline)
    dst = subprocess.Popen([ember, "--api-sock", dst_sock], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    procs = [src, dst]
    try:
        so, to = Lines(src), Lines(dst)
        if not so.wait(lambda x: x.startswith(b"count 20")):
            return {"error": "the source guest did not count"}
        if same_host:  # a socketpair between the two, no relay (post-copy's form)
            tx = subprocess.run([ember, "migrate", "--from", src_sock, "--to", dst_sock]
                                + list(extra), capture_output=True, timeout=300)
            if tx.returncode != 0:
                return {"error": "ember migrate: " + tx.stderr.decode(errors="replace")[-200:]}
            summary = json.loads(tx.stdout.decode().strip().splitlines()[-1])
            return _counted_on(so, to, summary)
        port = _free_port()
        auth = ["--psk-file", tls] if tls else ["--insecure-plain"]
        rx = subprocess.Popen([ember, "migrate", "--listen", "127.0.0.1:%d" % port, "--to",
                               dst_sock] + auth, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
        procs.append(rx)
        tx = None
        for _ in range(200):  # until the receiver listens
            tx = subprocess.run([ember, "migrate", "--from", src_sock, "--to-host",
                                 "127.0.0.1:%d" % port] + auth + list(extra),
                                capture_output=True, timeout=300)
            if b"Connection refused" not in tx.stderr:
                break
            time.sleep(0.01)
        rx_out, _ = rx.communicate(timeout=60)
        if tx.returncode != 0:
            return {"error": "ember migrate: " + tx.stderr.decode(errors="replace")[-200:]}
        summary = json.loads(tx.stdout.decode().strip().splitlines()[-1])
        # The receiving side's summary has the target's figures: the
        # downtime (the source's at GOGO plus the target's resume).
        try:
            rsum = json.loads(rx_out.decode().strip().splitlines()[-1])
            for k in ("downtime_ms", "total_ms"):
                if rsum.get(k) is not None:
                    summary[k] = rsum[k]
        except (ValueError, IndexError):
            pass
        return _counted_on(so, to, summary)
    except (subprocess.TimeoutExpired, ValueError, OSError) as e:
        return {"error": str(e)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


class Qmp:
    def __init__(self, path, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.f = self.s.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            msg = json.loads(self.f.readline())
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        r = self._read()
        if "error" in r:
            raise RuntimeError("%s: %s" % (name, r["error"]))
        return r["return"]

    def close(self):
        self.s.close()


QEMU_ARGS = [
    "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off",
    "-enable-kvm", "-cpu", "host,-arch-capabilities",
    "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
    "-device", "i8042", "-m", "%dM" % MEM_MIB,
]


def _qemu_once(qemu, work, cmdline, tuned):
    qs, qt = os.path.join(work, "qs.qmp"), os.path.join(work, "qt.qmp")
    port = _free_port()
    base = [qemu] + QEMU_ARGS + ["-kernel", _kernel[0], "-append", cmdline]
    src = subprocess.Popen(base + ["-qmp", "unix:%s,server=on,wait=off" % qs],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    dst = subprocess.Popen(base + ["-qmp", "unix:%s,server=on,wait=off" % qt, "-incoming",
                                   "tcp:127.0.0.1:%d" % port],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        so, to = Lines(src), Lines(dst)
        if not so.wait(lambda x: x.startswith(b"count 20")):
            return {"error": "the guest did not count under QEMU"}
        q, qd = Qmp(qs), Qmp(qt)
        if tuned:
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40, "downtime-limit": 5})
        q.cmd("migrate", uri="tcp:127.0.0.1:%d" % port)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            st = q.cmd("query-migrate")
            if st.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.002)
        if st.get("status") != "completed":
            return {"error": "QEMU: migration %s" % st.get("status")}
        ram = st.get("ram", {})
        out = _counted_on(so, to, {
            "total_ms": st.get("total-time"), "downtime_ms": st.get("downtime"),
            "bytes_sent": ram.get("transferred"), "rounds": ram.get("dirty-sync-count")})
        q.close()
        qd.close()
        return out
    except (RuntimeError, OSError, ValueError) as e:
        return {"error": "QEMU: %s" % e}
    finally:
        for p in (src, dst):
            if p.poll() is None:
                p.kill()
            p.wait()


def _baseline_gap(ember, work, cmdline, seconds=3.0):
    """The largest gap of a run without migration, as long as one."""
    sock = os.path.join(work, "b.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    p = _start_ember(ember, sock, cmdline)
    try:
        lines = Lines(p)
        if not lines.wait(lambda x: x.startswith(b"count 20")):
            return None
        t0, n0 = time.monotonic(), len(lines.stamps)
        time.sleep(seconds)
        stamps = lines.stamps[n0:]
        return max((b - a for a, b in zip(stamps, stamps[1:])), default=0) * 1000
    finally:
        p.kill()
        p.wait()


def _summ(results, key):
    vals = [r.get(key) for r in results if not r.get("error")]
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    vals.sort()
    return "%s (%s–%s)" % (_fmt(vals[len(vals) // 2]), _fmt(vals[0]), _fmt(vals[-1]))


def _fmt(v):
    if isinstance(v, float):
        return "%.1f" % v
    if isinstance(v, int) and v > 1 << 20:
        return "%.0f MiB" % (v / (1 << 20))
    return str(v)


def migrate_rows(ember, guests, runs):
    """Rows [what, ember, QEMU default, QEMU tuned] and goal rows."""
    _kernel[0] = os.path.join(guests, "counter.elf")
    qemu = shutil.which("qemu-system-x86_64")
    rows, goals, notes = [], [], []
    work = tempfile.mkdtemp(prefix="ember-bench-mig-")
    psk = os.path.join(work, "psk")
    with open(psk, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(psk, 0o600)
    try:
        for key, (what, cmdline) in SCENARIOS.items():
            n = runs if key != "b" else max(3, runs // 3)
            res = {"ember": [_ember_once(ember, work, cmdline, None) for _ in range(n)]}
            if key in ("a", "c"):
                res["ember --verify dirty"] = [_ember_once(ember, work, cmdline, None,
                                                           ["--verify", "dirty"])
                                               for _ in range(n)]
            if key == "a":
                res["ember TLS (PSK)"] = [_ember_once(ember, work, cmdline, psk)
                                          for _ in range(n)]
            if key == "b":
                res["ember --converge postcopy (same host, socketpair)"] = [
                    _ember_once(ember, work, cmdline, None, ["--converge", "postcopy"], True)
                    for _ in range(n)]
            if qemu:
                res["qemu"] = [_qemu_once(qemu, work, cmdline, False) for _ in range(n)]
                res["qemu tuned"] = [_qemu_once(qemu, work, cmdline, True) for _ in range(n)]
            base = _baseline_gap(ember, work, cmdline)
            for who, rs in res.items():
                errs = [r["error"] for r in rs if r.get("error")]
                if errs:
                    notes.append("(%s) %s: %d of %d failed, e.g. %s" % (key, who, len(errs),
                                                                         len(rs), errs[0]))
                rows.append(["migration (%s) %s: %s" % (key, what, who),
                             _summ(rs, "total_ms"), _summ(rs, "downtime_ms"),
                             _summ(rs, "bytes_sent"), _summ(rs, "rounds"),
                             _summ(rs, "gap_ms"),
                             "%.1f" % base if base is not None else "—"])
            for who in ("ember", "ember --verify dirty"):
                if key not in ("a", "c"):
                    break
                ok = [r for r in res[who] if not r.get("error")]
                dt = _median([r.get("downtime_ms") for r in ok])
                goals.append(["migration (%s) downtime, %s, median of %d" % (key, who, len(ok)),
                              "≤ %.0f ms" % GOAL_DOWNTIME_MS,
                              "%.2f ms" % dt if dt is not None else "—",
                              "met" if dt is not None and dt <= GOAL_DOWNTIME_MS else "not met"])
            ok = [r for r in res["ember"] if not r.get("error")]
            if key == "a" and qemu:
                et = _median([r.get("total_ms") for r in ok])
                qt = _median([r.get("total_ms") for r in res["qemu tuned"] if not r.get("error")])
                if et is not None and qt:
                    goals.append(["migration (a) total time ÷ tuned QEMU's", "≤ 0.5",
                                  "%.2f" % (et / qt), "met" if et / qt <= 0.5 else "not met"])
        if not qemu:
            notes.append("QEMU (qemu-system-x86_64) is not installed: its rows are left out")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = ["migration, median (min–max)", "total ms", "downtime ms", "bytes", "rounds",
              "guest gap ms", "gap without migration ms"]
    return header, rows, goals, notes


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--ember", default="build/ember")
    ap.add_argument("--guests", default="build/guest")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    header, rows, goals, notes = migrate_rows(a.ember, a.guests, a.runs)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()
    for g in goals:
        print("| " + " | ".join(g) + " |")
    for n in notes:
        print("- " + n)
