"""Live migration with disk copy (docs/storage-migration.md, "Between
hosts"): a VM (the idle `loop` guest, 64 MiB) with a 1 GiB disk, half of
it data (every other MiB; the rest holes), moved with its disk over
loopback TCP by two controllers (`ember migrate --listen ... --copy-storage
d0 --drive d0,path=DST` and `--to-host ... --copy-storage d0`,
--insecure-plain: the channel's cost, not TLS's):

  * total time (the receiving controller's summary, total_ms) and the
    downtime (downtime_ms), and the wall time of the sending side;
  * the references in the same run, on the same file: the file sent over
    a loopback TCP connection into a file (sendfile(2) one side, write +
    fdatasync the other: `cat FILE | nc` done in-process, holes sent as
    zeroes, as nc would), and `cp --sparse=always` + `sync FILE`.

Run standalone (medians of RUNS, default 3):
    python3 tests/bench/bench_migrate_storage.py build/ember build/guest [RUNS]"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_drive_move import MiB, SIZE, _median


def _make_source(path):
    block = bytes((i * 7 + 1) & 0xFF or 1 for i in range(MiB))
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for off in range(0, SIZE, 2 * MiB):
            f.seek(off)
            f.write(block)
    os.sync()


def _wait_sock(path):
    for _ in range(500):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.01)
        finally:
            s.close()
    raise RuntimeError(f"{path}: no API socket")


def _migrate_once(ember, guests, work, src):
    mig = os.path.join(os.path.dirname(ember), "ember-migrate")
    a, b = os.path.join(work, "a.sock"), os.path.join(work, "b.sock")
    dst = os.path.join(work, "dst.img")
    for p in (a, b, dst):
        if os.path.exists(p):
            os.unlink(p)
    vm = subprocess.Popen([ember, "run", "--kernel", os.path.join(guests, "loop.elf"),
                           "--drive", f"d0,path={src}", "--api-sock", a, "--timeout", "600"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tgt = subprocess.Popen([ember, "--api-sock", b], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    recv = None
    try:
        _wait_sock(a)
        _wait_sock(b)
        recv = subprocess.Popen([mig, "--listen", "127.0.0.1:0", "--to", b, "--insecure-plain",
                                 "--copy-storage", "d0", "--drive", f"d0,path={dst}",
                                 "--timeout", "600"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        m = re.search(r"port (\d+)", recv.stderr.readline())
        t = time.monotonic()
        send = subprocess.run([mig, "--from", a, "--to-host", f"127.0.0.1:{m.group(1)}",
                               "--insecure-plain", "--copy-storage", "d0", "--timeout", "600"],
                              capture_output=True, text=True, timeout=900)
        wall = time.monotonic() - t
        out, err = recv.communicate(timeout=900)
        if send.returncode or recv.returncode:
            return {"error": (send.stderr + err).strip()[-300:]}
        s = json.loads(out.strip().splitlines()[-1])
        return {"total_s": s["total_ms"] / 1000, "downtime_ms": s["downtime_ms"],
                "wall_s": wall, "blocks": os.stat(dst).st_blocks * 512}
    finally:
        for p in (vm, tgt, recv):
            if p and p.poll() is None:
                p.kill()
                p.wait()


def _tcp_copy(src, dst):
    """src sent over a loopback TCP connection into dst, synced."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]

    def serve():
        c, _ = ls.accept()
        with open(dst, "wb") as f:
            while True:
                buf = c.recv(4 * MiB)
                if not buf:
                    break
                f.write(buf)
            f.flush()
            os.fdatasync(f.fileno())
        c.close()

    t = time.monotonic()
    th = threading.Thread(target=serve)
    th.start()
    c = socket.create_connection(("127.0.0.1", port))
    with open(src, "rb") as f:
        off = 0
        while off < SIZE:
            off += os.sendfile(c.fileno(), f.fileno(), off, SIZE - off)
    c.close()
    th.join()
    ls.close()
    return time.monotonic() - t


def _cp(src, dst):
    t = time.monotonic()
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    subprocess.run(["sync", dst], check=True)
    return time.monotonic() - t


def migrate_storage_rows(ember, guests, runs):
    work = tempfile.mkdtemp(prefix="ember-bench-migstor-", dir=os.environ.get("BENCH_DIR"))
    src = os.path.join(work, "src.img")
    _make_source(src)
    mig, tcp, cp, errors = [], [], [], []
    try:
        for _ in range(runs):
            r = _migrate_once(ember, guests, work, src)
            if "error" in r:
                errors.append(r["error"])
            else:
                mig.append(r)
            ref = os.path.join(work, "ref.img")
            tcp.append(_tcp_copy(src, ref))
            os.unlink(ref)
            cp.append(_cp(src, ref))
            os.unlink(ref)
    finally:
        subprocess.run(["rm", "-rf", work])

    def row(what, xs, fmt="%.2f s"):
        if not xs:
            return [what, "—", "—"]
        return [what, fmt % _median(xs), (fmt + "–" + fmt) % (min(xs), max(xs))]

    rows = [row("migrate with disk: total (target's summary)", [r["total_s"] for r in mig]),
            row("migrate with disk: sending side's wall time", [r["wall_s"] for r in mig]),
            row("migrate with disk: downtime", [r["downtime_ms"] for r in mig], "%.1f ms"),
            row("file over loopback TCP + fdatasync", tcp),
            row("cp --sparse=always + sync", cp)]
    if mig:
        rows.append(["destination allocated", "%d MiB" % (mig[0]["blocks"] // MiB), ""])
    return rows, errors


if __name__ == "__main__":
    rows, errors = migrate_storage_rows(sys.argv[1], sys.argv[2],
                                        int(sys.argv[3]) if len(sys.argv) > 3 else 3)
    print("| what | median | spread |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    for e in errors:
        print("error:", e)
