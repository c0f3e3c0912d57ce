"""The drive move rows of `make bench` (docs/storage-migration.md): a 1 GiB
disk, created sparse and then filled with data (every byte non-zero), under
an idle guest (the spinning `loop` guest with the drive attached), moved
with `ember drive move --wait` to a new file in the same folder:

  * time to sync: ember's own clock from the request to the pivot's end
    (GET /drives/{id}/move "elapsed_ms": the copy, the destination's
    fdatasync and the pivot), and the CLI's wall time around it;
  * the pivot's pause ("pivot_pause_us": the device's queue not served);
  * the references in the same run, on the same file (in the page cache as
    ember's is): `dd bs=1M conv=fdatasync` and `cp --sparse=always` then
    `sync FILE` (cp alone leaves the data in the page cache).

  * the guest's write latency with the mirror active beside without, in
    one ember: the virtio guest's `bench kind=blkw` writes 4 KiB blocks in
    its disk's first MiB, a line per 200; the time between lines before the
    move, then while a move (1 MiB/s, so it lasts) has its watermark past
    that MiB and every write goes to both files.

Throughput = 1 GiB / the median time.  Run standalone:
    python3 tests/bench/bench_drive_move.py build/ember build/guest"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

SIZE = 1 << 30
MiB = 1 << 20


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def _make_source(path):
    block = bytes((i * 7 + 1) & 0xFF or 1 for i in range(MiB))
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for off in range(0, SIZE, MiB):
            f.write(block)
    os.sync()


def _timed(argv):
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def _ember_once(ember, guests, work, src):
    sock = os.path.join(work, "api.sock")
    dst = os.path.join(work, "dst.img")
    if os.path.exists(sock):
        os.unlink(sock)  # the last run's
    p = subprocess.Popen([ember, "run", "--kernel", os.path.join(guests, "loop.elf"),
                          "--drive", f"d0,path={src}", "--api-sock", sock, "--timeout", "600"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sock)
                break
            except OSError:
                time.sleep(0.01)
            finally:
                s.close()
        t = time.monotonic()
        r = subprocess.run([ember, "drive", "move", "--api-sock", sock, "--drive", "d0", "--to",
                            dst, "--wait"], capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t
        if r.returncode:
            return {"error": r.stderr.strip()[:200]}
        st = subprocess.run([ember, "drive", "status", "--api-sock", sock, "--drive", "d0"],
                            capture_output=True, text=True, timeout=60)
        rep = json.loads(st.stdout)
        return {"ember_s": rep["elapsed_ms"] / 1000, "wall_s": wall,
                "pivot_us": rep["pivot_pause_us"]}
    finally:
        p.kill()
        p.wait()
        if os.path.exists(dst):
            os.unlink(dst)


def _stamp_lines(p, stamps):
    """Reader thread: the arrival time of each "bench: done" line of p."""
    for line in p.stdout:
        if line.startswith("bench: done"):
            stamps.append(time.monotonic())


def _wait_lines(stamps, after, n, p):
    """The first n stamps later than after, once there are n of them."""
    while True:
        got = [t for t in stamps if t > after]
        if len(got) >= n:
            return got[:n]
        if p.poll() is not None:
            raise RuntimeError("the guest stopped")
        time.sleep(0.01)


def _per_write_us(times, n_writes):
    gaps = [(b - a) * 1e6 / n_writes for a, b in zip(times, times[1:])]
    return _median(gaps)


def _mirror_latency(ember, guests, work):
    """(µs per guest write without a move, with the mirror active)."""
    n, lines = 200, 8
    disk = os.path.join(work, "lat.img")
    with open(disk, "wb") as f:  # data where the guest writes, then far on
        f.truncate(64 * MiB)
        f.write(b"\x01" * MiB)
        f.seek(8 * MiB)
        f.write(b"\x02" * (48 * MiB))
    sock = os.path.join(work, "lat.sock")
    dst = os.path.join(work, "lat-dst.img")
    p = subprocess.Popen([ember, "run", "--drive", f"d0,path={disk}", "--api-sock", sock,
                          "--timeout", "600", "--", os.path.join(guests, "virtio.elf"),
                          "test=bench", "kind=blkw", "n=%d" % n],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stamps = []
    threading.Thread(target=_stamp_lines, args=(p, stamps), daemon=True).start()
    try:
        t0 = _wait_lines(stamps, 0, 2, p)[-1]  # warmed up
        base = _per_write_us(_wait_lines(stamps, t0, lines, p), n)
        r = subprocess.run([ember, "drive", "move", "--api-sock", sock, "--drive", "d0",
                            "--to", dst, "--max-bandwidth", str(MiB)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise RuntimeError(r.stderr.strip())
        for _ in range(1000):  # the watermark past the guest's MiB
            st = subprocess.run([ember, "drive", "status", "--api-sock", sock, "--drive",
                                 "d0"], capture_output=True, text=True, timeout=60)
            rep = json.loads(st.stdout)
            if rep["bytes_copied"] > MiB:
                break
            time.sleep(0.05)
        t = _wait_lines(stamps, time.monotonic(), lines, p)
        rep = json.loads(subprocess.run([ember, "drive", "status", "--api-sock", sock,
                                         "--drive", "d0"], capture_output=True, text=True,
                                        timeout=60).stdout)
        if rep["phase"] != "copying":
            raise RuntimeError("the move ended before the measurement: %s" % rep["phase"])
        return base, _per_write_us(t, n)
    finally:
        p.kill()
        p.wait()


def drive_move_rows(ember, guests, runs):
    """Rows [what, median, spread, throughput] and goal rows."""
    work = tempfile.mkdtemp(prefix="ember-bench-move-", dir=os.environ.get("BENCH_DIR"))
    src = os.path.join(work, "src.img")
    rows, goals = [], []
    res = {"ember": [], "dd": [], "cp": [], "pivot": [], "wall": []}
    errors = []
    try:
        try:
            lat = _mirror_latency(ember, guests, work)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as err:
            lat = None
            errors.append("latency: %s" % err)
        _make_source(src)
        copy = os.path.join(work, "copy.img")
        for _ in range(runs):
            res["dd"].append(_timed(["dd", f"if={src}", f"of={copy}", "bs=1M",
                                     "conv=fdatasync"]))
            os.unlink(copy)
            res["cp"].append(_timed(["sh", "-c", 'cp --sparse=always "$0" "$1" && sync "$1"',
                                     src, copy]))
            os.unlink(copy)
            e = _ember_once(ember, guests, work, src)
            if "error" in e:
                errors.append(e["error"])
                continue
            res["ember"].append(e["ember_s"])
            res["wall"].append(e["wall_s"])
            res["pivot"].append(e["pivot_us"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(what, xs, unit_s=True):
        if not xs:
            return [what, "—", "—", "—"]
        m = _median(xs)
        if not unit_s:
            return [what, "%d µs" % m, "%d–%d µs" % (min(xs), max(xs)), ""]
        return [what, "%.2f s" % m, "%.2f–%.2f s" % (min(xs), max(xs)),
                "%.0f MiB/s" % (SIZE / MiB / m)]

    rows.append(row("drive move 1 GiB (filled, guest idle): request → pivoted (ember)",
                    res["ember"]))
    rows.append(row("drive move 1 GiB: `ember drive move --wait` wall time", res["wall"]))
    rows.append(row("drive move: pivot pause", res["pivot"], unit_s=False))
    rows.append(row("reference: dd bs=1M conv=fdatasync", res["dd"]))
    rows.append(row("reference: cp --sparse=always + sync", res["cp"]))
    if lat:
        rows.append(["guest 4 KiB write, no move (blkw, per write)", "%.0f µs" % lat[0], "",
                     ""])
        rows.append(["guest 4 KiB write, mirror active (both files)", "%.0f µs" % lat[1],
                     "", "%.2f×" % (lat[1] / lat[0])])
        goals.append(["guest write latency during the mirror ≤ 2× without", "≤ 2.0×",
                      "%.2f×" % (lat[1] / lat[0]), "yes" if lat[1] <= 2 * lat[0] else "no"])
    for err in errors[:1]:
        rows.append(["drive move failed in %d run(s)" % len(errors), err, "", ""])
    if res["ember"] and res["dd"]:
        ratio = _median(res["dd"]) / _median(res["ember"])
        goals.append(["drive move copy ≥ 80% of dd's throughput", "≥ 0.80",
                      "%.2f" % ratio, "yes" if ratio >= 0.8 else "no"])
    if res["pivot"]:
        p = _median(res["pivot"])
        goals.append(["drive move pivot pause ≤ 1 ms", "≤ 1000 µs", "%d µs" % p,
                      "yes" if p <= 1000 else "no"])
    return rows, goals


if __name__ == "__main__":
    rows, goals = drive_move_rows(sys.argv[1], sys.argv[2],
                                  int(sys.argv[3]) if len(sys.argv) > 3 else 3)
    for r in rows + goals:
        print(" | ".join(str(x) for x in r))
