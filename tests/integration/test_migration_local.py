"""Same-host migration with the memory handed over as a file descriptor
(docs/migration.md, "Same-host upgrade"): the source's RAM is a memfd
(--memory-shared), PUT /migration/send {"mode": "local"} sends it with
the MEMF record (SCM_RIGHTS) instead of its pages.  A relay that passes
file descriptors on (FdRelay) lets a test kill either end at a record or
replace the memfd.

No timing is asserted: waits are bounded and what is checked is where each
end ends up, what the guest printed, and which memory each process maps."""
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile

import pytest

from conftest import guest, needs_kvm
from test_api import EMBER, Ember
from test_migration import (at_most_one_runs, counts, counts_on, mig, phase_in, settle,
                            source_runs_on, start, state, wait_for)
from mig_relay import HDR, Relay, name, record

pytestmark = needs_kvm

COUNT = 400
SPIN = 20000000
LOCAL = {"mode": "local"}


def counter(tmp_path, name="src", args="", memory="64M", shared=True, count=COUNT):
    return Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline",
                                     f"count={count} spin={SPIN} {args}", "--memory", memory,
                                     "--timeout", "300"]
                 + (["--memory-shared"] if shared else []), name=name)


class FdRelay(Relay):
    """mig_relay's Relay, with the file descriptors that ride on a record's
    header passed on too.  fd_action(dir, hdr, fds) -> fds (to send in their
    place: the test may swap them) is called for each record that carries
    any, and for each MEMF."""

    def __init__(self, action=None, fd_action=None):
        self.fd_action = fd_action or (lambda d, hdr, fds: fds)
        self.pending = {"s": [], "t": []}
        super().__init__(action)

    def recv_hdr(self, sock, d):
        buf, fds = b"", []
        while len(buf) < HDR:
            msg, anc, _, _ = sock.recvmsg(HDR - len(buf), socket.CMSG_SPACE(16))
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds += list(struct.unpack(f"{len(data) // 4}i", data[:len(data) // 4 * 4]))
            if not msg:
                break
            buf += msg
        if len(buf) == HDR and (fds or name(struct.unpack_from("<I", buf)[0]) == "MEMF"):
            fds = self.fd_action(d, buf, fds)
        self.pending[d] = fds
        return buf if len(buf) == HDR else None

    def send(self, sock, d, out):
        fds, self.pending[d] = self.pending[d], []
        try:
            if fds:
                socket.send_fds(sock, [out[:HDR]], fds)
                out = out[HDR:]
            sock.sendall(out)
        finally:
            for f in fds:
                os.close(f)


def memfd_of(pid):
    """(inode) of the guest RAM memfd pid maps, or None."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if "memfd:ember-guest-ram" in line:
                return int(line.split()[4])
    return None


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def moved_by(tmp_path, move):
    """A counting source and a fresh target; move(src, dst) moves it by
    fd; then the source must exit 0 and the target count on exactly."""
    src, dst = counter(tmp_path), Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 20\n", timeout=30)
        move(src, dst)
        assert src.wait(timeout=30) == 0, src.stderr()
        assert "migration completed" in src.stderr()
        dst.wait(timeout=120)
        counts_on(src.stdout(), dst.stdout(), COUNT)
    finally:
        src.kill()
        dst.kill()


def test_local_counter_moves(tmp_path):
    """A counting guest moved by fd: no step lost or repeated, no page
    through the stream, the source exits 0 once the target runs."""
    def move(src, dst):
        start(src, dst, send_body=LOCAL)
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
        assert js["phase"] == "running", (js, dst.stderr())
        assert js["pages_sent"] == 0 and js["bytes_sent"] < 1 << 20, js
    moved_by(tmp_path, move)


def test_cli_local_counter_moves(tmp_path):
    """`ember migrate --from A --to B --local`: the controller asks for mode
    local; the counter counts on, the summary says completed; --local
    between hosts is refused before anything starts."""
    def move(src, dst):
        bad = subprocess.run([EMBER, "migrate", "--from", src.sock, "--to-host",
                              "127.0.0.1:1", "--insecure-plain", "--local"],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 121 and "--local" in bad.stderr, bad
        r = subprocess.run([EMBER, "migrate", "--from", src.sock, "--to", dst.sock, "--local"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        summary = __import__("json").loads(r.stdout.strip().splitlines()[-1])
        assert summary["result"] == "completed" and summary["bytes_sent"] < 1 << 20, summary
    moved_by(tmp_path, move)


def test_local_1gib_filled_moves_whole(tmp_path):
    """A 1 GiB guest with its memory filled in ring 3 moves by fd: the
    target's guest reads the whole pattern back after the move (check=1:
    every count line is preceded by a full pass), it counts on, the target
    maps the source's memfd (the same inode), and neither process holds a
    private copy of the memory (RssAnon small beside RssShmem)."""
    src = counter(tmp_path, args="fill=1024 check=1", memory="1024M")
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("pattern ok\n", timeout=120)
        ino = memfd_of(src.p.pid)
        assert ino is not None
        assert status_kib(src.p.pid, "RssShmem") > 900 << 10
        assert status_kib(src.p.pid, "RssAnon") < 64 << 10
        start(src, dst, send_body=LOCAL)
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
        assert js["phase"] == "running", (js, dst.stderr())
        assert src.wait(timeout=30) == 0, src.stderr()
        assert memfd_of(dst.p.pid) == ino
        # two full passes on the target (the first may have begun before)
        wait_for(lambda: dst.stdout().count("pattern ok\n") >= 2, "two checks on the target",
                 timeout=120)
        out = src.stdout() + dst.stdout()
        assert "pattern bad" not in out, out[-300:]
        assert status_kib(dst.p.pid, "RssAnon") < 64 << 10
        assert status_kib(dst.p.pid, "RssShmem") < 1100 << 10
        nums = counts(out)
        assert nums == list(range(1, len(nums) + 1)), nums[-10:]
    finally:
        src.kill()
        dst.kill()


def test_local_needs_shared_memory(tmp_path):
    """mode local on a VM whose RAM is not a memfd: 400 naming the way to
    get one; the VM runs on, no migration started."""
    src = counter(tmp_path, shared=False)
    try:
        src.wait_output("count 1\n", timeout=30)
        a, b = socket.socketpair()
        from test_snapshot_stream import raw
        st, js = raw(src.sock, "PUT", "/migration/send", LOCAL, fds=[a.fileno()])
        a.close()
        b.close()
        assert st == 400 and "--memory-shared" in js["fault_message"], (st, js)
        st, js = raw(src.sock, "PUT", "/migration/send", {"mode": "fast"}, fds=[])
        assert st == 400 and "mode" in js["fault_message"], js
        assert mig(src)["role"] == "none" and state(src) == "Running"
    finally:
        src.kill()


def test_memory_shared_not_with_restore():
    """A restore's RAM is its memory file's, mapped privately: refused."""
    p = subprocess.run([EMBER, "run", "--restore", "x.state", "--memory-file", "x.mem",
                        "--memory-shared"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--memory-shared is for a boot" in p.stderr, p.stderr


def wrong_fd(kind, size):
    """A file descriptor MEMF should not be taken with."""
    if kind == "file":
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        os.ftruncate(fd, size)
        return fd
    fd = os.memfd_create("not-ember", os.MFD_CLOEXEC |
                         (os.MFD_ALLOW_SEALING if kind == "wrong-size" else 0))
    os.ftruncate(fd, size // 2 if kind == "wrong-size" else size)
    if kind == "wrong-size":
        import fcntl
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


@pytest.mark.parametrize("kind,why", [
    ("file", "is not a memfd (it takes no seals)"),
    ("unsealed", "is not a memfd sealed against resizing"),
    ("wrong-size", "the memory's memfd has 33554432 bytes, the VM's RAM 67108864"),
    ("none", "record MEMF came with no file descriptor"),
])
def test_wrong_fd_refused(tmp_path, kind, why):
    """MEMF with a regular file, a memfd without seals, one of the wrong
    size, or nothing: the target refuses naming why (NACK), exits
    non-zero; the source runs on."""
    def swap(d, hdr, fds):
        for f in fds:
            os.close(f)
        return [] if kind == "none" else [wrong_fd(kind, 64 << 20)]
    relay = FdRelay(fd_action=swap)
    src, dst = counter(tmp_path), Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 2\n", timeout=30)
        start(src, dst, send_body=LOCAL, relay=relay)
        js = source_runs_on(src, dst, "the target refused")
        assert why in js["error"], js
        n = len(counts(src.stdout()))
        wait_for(lambda: len(counts(src.stdout())) > n + 1, "the source to count on")
    finally:
        relay.close()
        src.kill()
        dst.kill()


def settle_local(src, dst, relay):
    """Once the source checked its memory: a local move through relay, left
    to settle.  (source phase, target phase, source state, target state);
    never both running."""
    src.wait_output("pattern ok\n", timeout=30)
    start(src, dst, send_body=LOCAL, relay=relay)
    s_phase, t_phase = settle(src, dst)
    return (s_phase, t_phase) + at_most_one_runs(src, dst)


# (direction, record): the kill falls before it is passed on
POINTS = {
    "after-memf": ("s", "STAT"),   # the target maps the memfd; no state yet
    "after-stat": ("s", "DONE"),
    "after-redy": ("t", "REDY"),   # REDY reached the relay, then passed on
}


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("what", ["kill-source", "kill-target"])
def test_kill_around_handover(tmp_path, point, what):
    """kill -9 of either end around the hand-over: at most one runs; a
    source that survives runs on over memory the guest still reads whole
    (check=1); a target left ready runs only when resolved."""
    src = counter(tmp_path, args="fill=16 check=1")
    dst = Ember(tmp_path, name="dst")
    d, rec = POINTS[point]
    victim = src if what == "kill-source" else dst

    def act(dd, n, hdr, payload):
        if dd == d and name(struct.unpack_from("<I", hdr)[0]) == rec:
            victim.p.send_signal(signal.SIGKILL)
            victim.p.wait()
            # what the dead source wrote after it (it does not wait after
            # MEMF) is lost with it
            if what == "kill-source" and point != "after-redy":
                return None
        return hdr + payload
    relay = FdRelay(act)
    try:
        s_phase, t_phase, s, t = settle_local(src, dst, relay)
        if what == "kill-target" and point == "after-redy":
            # REDY went on to the source, whose GOGO went into the relay:
            # delivered as far as it knows (docs/migration.md, "As built")
            assert s_phase == "exited" and src.p.returncode == 0, s_phase
        elif what == "kill-target":
            assert s == "Running" and s_phase == "failed", (s, s_phase)
            n = src.stdout().count("pattern ok\n")
            wait_for(lambda: src.stdout().count("pattern ok\n") >= n + 2,
                     "the source to check its memory twice more")
            assert "pattern bad" not in src.stdout()
        elif point == "after-redy":
            # the target has everything: it waits, paused, for resolve
            assert (t, t_phase) == ("Paused", "ready"), (t, t_phase)
            dst.ok("PUT", "/migration/resolve", {"outcome": "resume"})
            wait_for(lambda: dst.stdout().count("pattern ok\n") >= 1, "the target to check")
            assert "pattern bad" not in dst.stdout()
        else:
            assert t_phase == "exited" and dst.p.returncode != 0, (t, t_phase)
        at_most_one_runs(src, dst)
    finally:
        relay.close()
        src.kill()
        dst.kill()


def test_api_mem_backend_memfd(tmp_path):
    """API mode: machine-config "mem_backend": "memfd" before InstanceStart
    gives shareable RAM, moved locally; another value is refused."""
    src, dst = Ember(tmp_path, name="src"), Ember(tmp_path, name="dst")
    try:
        st, js = src.curl("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64,
                                                     "mem_backend": "hugetlb"})
        assert st == 400 and "mem_backend" in js["fault_message"], (st, js)
        src.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64,
                                          "mem_backend": "memfd"})
        src.ok("PUT", "/boot-source", {"kernel_image_path": guest("counter"),
                                       "boot_args": f"count={COUNT} spin={SPIN}"})
        src.ok("PUT", "/actions", {"action_type": "InstanceStart"})
        src.wait_output("count 2\n", timeout=30)
        assert memfd_of(src.p.pid) is not None
        start(src, dst, send_body=LOCAL)
        js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
        assert js["phase"] == "running", (js, dst.stderr())
        assert src.wait(timeout=30) == 0, src.stderr()
        dst.wait(timeout=120)
        counts_on(src.stdout(), dst.stdout(), COUNT)
    finally:
        src.kill()
        dst.kill()


@pytest.mark.parametrize("outcome", ["stop", "resume"])
def test_cut_after_redy(tmp_path, outcome):
    """REDY reaches the source, then the connection is cut: GOGO cannot go,
    the source waits paused in handover-unknown (its vmm thread still held:
    GETs are answered), the target in ready.  The controller's part: one of
    them resumes, the other stops; never both."""
    src = counter(tmp_path, args="fill=16 check=1")
    dst = Ember(tmp_path, name="dst")
    relay = None

    def act(d, n, hdr, payload):
        if d == "t" and name(struct.unpack_from("<I", hdr)[0]) == "REDY":
            relay.socks[0].sendall(hdr + payload)
            return None
        return hdr + payload
    relay = FdRelay(act)
    try:
        s_phase, t_phase, s, t = settle_local(src, dst, relay)
        if s_phase == "exited":  # GOGO slipped into the socket before the cut
            assert src.p.returncode == 0
            # the relay may have passed it on: then the target runs already
            if mig(dst)["phase"] == "ready":
                dst.ok("PUT", "/migration/resolve", {"outcome": "resume"})
            js = wait_for(phase_in(dst, {"running", "failed"}), "the target to run")
            assert js["phase"] == "running", (js, dst.stderr())
            return
        assert (s, s_phase) == ("Paused", "handover-unknown"), (s, s_phase)
        assert (t, t_phase) == ("Paused", "ready"), (t, t_phase)
        if outcome == "stop":  # the target runs, the source stops
            dst.ok("PUT", "/migration/resolve", {"outcome": "resume"})
            src.ok("PUT", "/migration/resolve", {"outcome": "stop"})
            assert src.wait(timeout=30) == 0
            runner = dst
        else:  # the target stops, the source runs on over its RAM
            dst.ok("PUT", "/migration/resolve", {"outcome": "stop"})
            assert dst.wait(timeout=30) != 0
            src.ok("PUT", "/migration/resolve", {"outcome": "resume"})
            runner = src
        n = runner.stdout().count("pattern ok\n")
        wait_for(lambda: runner.stdout().count("pattern ok\n") >= n + 2, "two more checks")
        assert "pattern bad" not in runner.stdout()
        at_most_one_runs(src, dst)
    finally:
        relay.close()
        src.kill()
        dst.kill()
