"""The virtio rows of `make bench` (imported by bench.py).

Guest code is emulated on these hosts (ring 0, ~200 ns an instruction), so
these numbers are this machine's, not a promise:

  * PIO exit: N `outb`s to an unclaimed port, each a plain exit to ember
    and back (the raw exit cost the next row is compared with);
  * virtio round trip: N one-byte virtio-rng requests from the test guest's
    polling driver: descriptor, kick (an ioeventfd in the kernel), the vmm
    thread's epoll wake-up and fill, used ring, irqfd, the guest's read and
    ack of InterruptStatus (two more exits);
  * sequential block reads: 64 KiB virtio-blk reads of a file in the page
    cache, beside `dd bs=64k` reading the same file.

Each is timed on the host between two lines the guest prints, read from a
pipe as they come."""
import os
import re
import statistics
import subprocess
import tempfile
import time


def _timed_lines(argv, start, end, timeout=120):
    """Seconds between the first output line containing `start` and the one
    containing `end`, or None if the run fails."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = t1 = None
    deadline = time.monotonic() + timeout
    for raw in p.stdout:
        now = time.monotonic()
        line = raw.decode(errors="replace")
        if t0 is None and start in line:
            t0 = now
        elif t0 is not None and end in line:
            t1 = now
            break
        if now > deadline:
            break
    p.kill()
    p.wait()
    return t1 - t0 if t0 is not None and t1 is not None else None


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _dd_mbs(path):
    r = subprocess.run(["dd", "if=" + path, "of=/dev/null", "bs=64k"],
                       capture_output=True, text=True)
    m = re.search(r"copied, ([\d.]+) s", r.stderr)
    if not m:
        return None
    return os.path.getsize(path) / float(m.group(1)) / 1e6


def virtio_rows(ember, guests, runs):
    """[what, median, unit note] rows; runs repetitions each (at least 3)."""
    guest = os.path.join(guests, "virtio.elf")
    if not os.path.exists(guest):
        return [["virtio rows skipped: %s missing" % guest, "—", ""]]
    runs = max(3, min(runs, 10))
    rows = []
    n_pio, n_rt = 5000, 2000
    pio = _median([_timed_lines([ember, "run", "--rng", "--", guest, "test=bench",
                                 "kind=pio", "n=%d" % n_pio], "bench: start", "bench: done")
                   for _ in range(runs)])
    rt = _median([_timed_lines([ember, "run", "--rng", "--", guest, "test=bench",
                                "kind=rng", "n=%d" % n_rt], "bench: start", "bench: done")
                  for _ in range(runs)])
    pio_us = pio / n_pio * 1e6 if pio else None
    rt_us = rt / n_rt * 1e6 if rt else None
    f = lambda v, u: "—" if v is None else ("%.1f %s" % (v, u))
    rows.append(["PIO exit to ember and back (guest outb loop)", f(pio_us, "µs"), "per exit"])
    rows.append(["virtio-rng round trip: kick → used ring → interrupt (polling driver)",
                 f(rt_us, "µs"), "per request"])
    rows.append(["round trip beyond one PIO exit",
                 f(rt_us - pio_us if rt_us and pio_us else None, "µs"),
                 "incl. 2 MMIO exits + the emulated driver's own work"])

    with tempfile.TemporaryDirectory() as tmp:
        img = os.path.join(tmp, "disk.img")
        size = 64 << 20
        with open(img, "wb") as fh:
            fh.write(b"\xa5" * size)
        reads = size // 65536
        subprocess.run(["cat", img], stdout=subprocess.DEVNULL)  # into the page cache
        t = _median([_timed_lines([ember, "run", "--drive", "d0,path=" + img, "--", guest,
                                   "test=blk", "reads=%d" % reads],
                                  "blk: out-of-range read refused", "blk: read ")
                     for _ in range(runs)])
        dd = _median([_dd_mbs(img) for _ in range(runs)])
        rows.append(["virtio-blk sequential 64 KiB reads (64 MiB, page cache)",
                     f(size / t / 1e6 if t else None, "MB/s"), "guest-side, emulated driver"])
        rows.append(["dd bs=64k of the same file on the host", f(dd, "MB/s"), "reference"])
    return rows
