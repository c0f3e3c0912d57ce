"""The supervisor rows of `make bench` (imported by bench.py): a VMM crash
-> the guest running again locally.

emberd (root: it jails each VM) supervises the counting guest (restart =
always, restart_delay = 0) with one snapshot taken through its control
API; then, per trial, the VM's ember is SIGKILLed and the time from
emberd's "exited" event to its "restored" event is read from the events'
own monotonic clock (mono_us: emberd's CLOCK_MONOTONIC), so the kill's
delivery and this script's polling are outside it.  What lies inside:
reaping, the jail's clean-up and staging (unmount, remove, bind mounts,
/vm.ini), the jailer's steps, ember's restore, and emberd seeing the API
socket answer (polled every 1 ms).

Beside it, in the same run: a plain `ember run --restore` of the same
snapshot, exec -> its API socket answering GET /ember/status (the floor
without the supervisor and the jail).

It never fails on a number: no root or no KVM gives a row that says why."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TRIALS = 20
GOAL_MS = 10.0


def _pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _http(sock_path, method, path, body=None, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    data = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n"
              f"Connection: close\r\n\r\n".encode() + data)
    raw = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        raw += b
    s.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(payload) if payload.strip() else None


def _events(state):
    p = os.path.join(state, "events.log")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _wait_event(state, kind, after, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in _events(state)[after:]:
            if ev["kind"] == kind and ev["vm"] == "b1":
                return ev
        time.sleep(0.005)
    raise RuntimeError(f"no {kind} event in {timeout} s")


def _answers(sock):
    try:
        st, _ = _http(sock, "GET", "/ember/status", timeout=1)
        return st == 200
    except OSError:
        return False


def _plain_restore(ember, snap, work, n):
    """exec of `ember run --restore` -> its API answering, n times (ms)."""
    out = []
    for i in range(n):
        sock = os.path.join(work, f"plain{i}.sock")
        t0 = time.monotonic()
        p = subprocess.Popen([ember, "run", "--restore", os.path.join(snap, "state"),
                              "--memory-file", os.path.join(snap, "mem"), "--api-sock", sock,
                              "--serial", "none"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while not _answers(sock):
                if p.poll() is not None:
                    raise RuntimeError("ember --restore exited: " + p.stderr.read().decode())
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("ember --restore: no API in 30 s")
            out.append((time.monotonic() - t0) * 1e3)
        finally:
            p.kill()
            p.wait()
    return out


def emberd_rows(ember, guests, runs=TRIALS):
    """(rows, goals): rows [what, median, p99, n, note]; goals [goal, target, result, met]."""
    build = os.path.dirname(os.path.abspath(ember))
    emberd, jailer = os.path.join(build, "emberd"), os.path.join(build, "ember-jailer")
    goal = "emberd: VMM crash → guest running again locally, median"
    if os.geteuid() != 0 or not os.path.exists("/dev/kvm"):
        why = "needs root (emberd jails its VMs)" if os.geteuid() else "no /dev/kvm"
        return ([["emberd rows skipped", "-", "-", "0", why]],
                [[goal, "≤ %.0f ms" % GOAL_MS, "not run: " + why, "—"]])
    runs = max(runs, TRIALS)
    work = tempfile.mkdtemp(prefix="ember-bench-emberd-")
    vms, state, jails = (os.path.join(work, d) for d in ("vms", "state", "jails"))
    for d in (vms, jails):
        os.mkdir(d)
    with open(os.path.join(vms, "b1.ini"), "w") as f:
        f.write(f"[vm]\nkernel = {os.path.join(guests, 'counter.elf')}\nmemory = 64M\n"
                "cmdline = spin=20000000\n[emberd]\nrestart = always\nrestart_delay = 0\n"
                f"restart_attempts = {runs + 5}\nrestart_interval = 1h\n")
    sock = os.path.join(work, "emberd.sock")
    ed = subprocess.Popen([emberd, "--vm-dir", vms, "--state-dir", state, "--sock", sock,
                           "--jail-base", jails, "--ember", ember, "--jailer", jailer],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "err"), "w"))
    crash, plain, err = [], [], None
    try:
        _wait_event(state, "started", 0)
        time.sleep(0.2)
        st, body = _http(sock, "PUT", "/vms/b1/snapshot")
        if st != 200:
            raise RuntimeError(f"snapshot: {st} {body}")
        snap = body["dir"]
        for _ in range(runs):
            mark = len(_events(state))
            st, vm = _http(sock, "GET", "/vms/b1")
            os.kill(vm["pid"], signal.SIGKILL)
            ex = _wait_event(state, "exited", mark)
            up = _wait_event(state, "restored", mark)
            crash.append((up["mono_us"] - ex["mono_us"]) / 1e3)
            time.sleep(0.05)
        # the floor: the same snapshot files, no supervisor, no jail; the
        # supervised VM stopped first (its folder then stays as it is, and
        # the two never share the CPUs).  Not a copy: a plain copy fills
        # the memory file's holes, which a restore then reads.
        _http(sock, "PUT", "/vms/b1/stop", {"grace_ms": 0})
        plain = _plain_restore(ember, snap, work, runs)
    except (RuntimeError, OSError, KeyError) as e:
        err = str(e)
    finally:
        ed.kill()
        ed.wait()
        subprocess.run(["umount", "-R", "-l", jails], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    if crash:
        rows.append(["emberd: VMM SIGKILLed → restored from its snapshot, running (exited → "
                     "restored event)", "%.2f ms" % _pct(crash, 50), "%.2f ms" % _pct(crash, 99),
                     str(len(crash)), "64 MiB counter; jail clean-up, staging, jailer, restore"])
    if plain:
        rows.append(["  beside it: `ember run --restore` exec → API answering (no jail, "
                     "no supervisor)", "%.2f ms" % _pct(plain, 50), "%.2f ms" % _pct(plain, 99),
                     str(len(plain)), "same snapshot, same run"])
    if err:
        rows.append(["emberd rows: failed", "-", "-", "0", err])
    med = _pct(crash, 50) if crash else None
    goals = [[goal, "≤ %.0f ms" % GOAL_MS, "%.2f ms" % med if med is not None else "—",
              "—" if med is None else ("yes" if med <= GOAL_MS else "NO")]]
    return rows, goals


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ember = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "ember")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else TRIALS
    rows, goals = emberd_rows(ember, os.path.join(root, "build", "guest"), n)
    for r in rows + goals:
        print(" | ".join(r))
