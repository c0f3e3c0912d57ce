"""The Solo5 ring I/O rows of `make bench` (imported by bench.py).

The same guest (tests/guest/hvt/net.hvt `bench=N`) sends N 60-byte frames
to a tap as fast as it can, once by hypercalls (NET_WRITE: an exit to
ember per frame) and once by the ring (`ring`: an entry per frame, a kick
on port 0x600 only when the vmm thread sleeps), alternating in one run of
this file.  The guest times itself (WALLTIME before the first frame and
after the monitor took the last).  The tap sits in a network namespace
made here and removed after; nothing reads it, so the frames go no
further than the namespace's own stack.  Guest ring-0 code is emulated on
these hosts (~200 ns an instruction): the numbers are this machine's."""
import os
import re
import statistics
import subprocess

FRAMES = 20000


def _ip(*args):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True)


def _fps(ember, guest, ns, tap, ring):
    argv = ["ip", "netns", "exec", ns, ember, "run", "--mem=64", "--net:service=" + tap, "--",
            guest, "bench=%d" % FRAMES] + (["ring"] if ring else [])
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"net: bench (\d+) frames in (\d+) us by (\w+)", r.stdout)
    if r.returncode or not m or m.group(3) != ("ring" if ring else "hypercalls"):
        return None
    return int(m.group(1)) / (int(m.group(2)) / 1e6)


def ring_rows(ember, guests, runs):
    """[what, median, note] rows; runs alternating pairs (3 to 5)."""
    guest = os.path.join(guests, "hvt", "net.hvt")
    if not os.path.exists(guest):
        return [["ring rows skipped: %s missing" % guest, "—", ""]]
    ns, tap = "embbench%d" % os.getpid(), "tap0"
    if _ip("netns", "add", ns).returncode:
        return [["ring rows skipped: cannot make a network namespace", "—", ""]]
    try:
        for cmd in (["tuntap", "add", "dev", tap, "mode", "tap"], ["link", "set", tap, "up"]):
            if _ip("-n", ns, *cmd).returncode:
                return [["ring rows skipped: cannot make a tap", "—", ""]]
        by = {False: [], True: []}
        for _ in range(max(3, min(runs, 5))):
            for ring in (False, True):
                by[ring].append(_fps(ember, guest, ns, tap, ring))
    finally:
        _ip("netns", "del", ns)
    med = {k: statistics.median([x for x in v if x]) if any(v) else None for k, v in by.items()}
    f = lambda v: "—" if v is None else "%.0f frames/s" % v
    ratio = "%.2fx" % (med[True] / med[False]) if med[True] and med[False] else "—"
    return [["hvt net writes by hypercalls (NET_WRITE), 60-byte frames", f(med[False]),
             "%d frames a run" % FRAMES],
            ["hvt net writes by ring I/O (HVT_FEATURE_RING_IO), same guest", f(med[True]),
             "ring / hypercalls: " + ratio]]
