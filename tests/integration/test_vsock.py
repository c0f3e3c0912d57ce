"""virtio-vsock end to end: tests/guest/virtio.c (`test=vsock`) against
ember's device and its host side, Firecracker's convention: ember listens
on `uds`, a host process writes "CONNECT <port>\\n" there and gets
"OK <local port>\\n"; a guest connection to host port P becomes a
connection to the unix socket "<uds>_P".  All runs enforce seccomp (the
default), so the vmm thread's socket calls are checked too."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import EMBER, EXIT_CONFIG, guest, needs_kvm, run
from test_api import Ember

pytestmark = needs_kvm

GUEST_PORT = 1234  # what the guest connects to on the host
LISTEN_PORT = 5000  # what the guest listens on


def start(uds, cmdline, *extra):
    return subprocess.Popen([EMBER, "run", "--timeout", "30", "--vsock", f"cid=3,uds={uds}"] +
                            list(extra) + ["--", guest("virtio")] + cmdline.split(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace")


def wait_line(p, want, seen, timeout=20):
    """Read p's stdout until a line containing want (all lines go to seen)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        if want in line:
            return True
    return False


def finish(p, seen, timeout=30):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"ember did not finish: {''.join(seen)}{out}{err}")
    return "".join(seen) + out, err


class Echo:
    """A host listener on path that echoes one connection's bytes back
    until the guest shuts it down."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(20)
        self.got = b""
        self.eof = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        with c:
            c.settimeout(20)
            while True:
                d = c.recv(4096)
                if not d:
                    self.eof = True
                    return
                self.got += d
                c.sendall(d)

    def close(self):
        self.thread.join(timeout=10)
        self.sock.close()


def host_connect(uds, line, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(uds))
    s.sendall(line)
    return s


def recv_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            break
        buf += d
    return buf


def closed(s):
    """s is closed by ember without a word (EOF, or a reset when ember
    left bytes unread)."""
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""
    s.close()
    return got == b""


def test_both_directions(tmp_path):
    """Guest-initiated: the guest's ping reaches the host listener on
    <uds>_1234 and its echo comes back; the guest's SHUTDOWN reaches the
    host as EOF.  Host-initiated: CONNECT 5000 gets OK with a port from
    2^30 up, bytes go through both ways, the host's close ends it."""
    uds = tmp_path / "v.sock"
    echo = Echo(f"{uds}_{GUEST_PORT}")
    p = start(uds, f"test=vsock port={GUEST_PORT} listen={LISTEN_PORT}")
    seen = []
    try:
        assert wait_line(p, f"vsock: listening on port {LISTEN_PORT}", seen), "".join(seen)
        s = host_connect(uds, f"CONNECT {LISTEN_PORT}\n".encode())
        ok = recv_line(s)
        assert ok.startswith(b"OK ") and int(ok[3:]) >= 1 << 30, ok
        s.sendall(b"hello from host\n")
        assert recv_line(s) == b"HELLO FROM HOST\n"
        s.close()
    finally:
        out, err = finish(p, seen)
        echo.close()
    assert p.returncode == 0, out + err
    assert "vsock: got ping from guest" in out
    assert "vsock: guest-initiated ok" in out
    assert "vsock: sent back HELLO FROM HOST" in out
    assert "vsock: host-initiated ok" in out
    assert echo.got == b"ping from guest\n" and echo.eof
    assert "host did not close" not in out


def test_host_side_refusals(tmp_path):
    """A line that is not CONNECT, a port too large, and a port nobody
    listens on in the guest: each host socket is closed (no OK) and the
    VM goes on; the real connection afterwards still works."""
    uds = tmp_path / "v.sock"
    echo = Echo(f"{uds}_{GUEST_PORT}")
    p = start(uds, f"test=vsock port={GUEST_PORT} listen={LISTEN_PORT}")
    seen = []
    try:
        assert wait_line(p, f"vsock: listening on port {LISTEN_PORT}", seen), "".join(seen)
        for line in (b"HELLO 5000\n", b"CONNECT 99999999999\n", b"CONNECT\n",
                     b"CONNECT 5000 extra\n", b"x" * 100):
            assert closed(host_connect(uds, line)), line
        # Guest port 7777: the guest resets the stray REQUEST.
        assert closed(host_connect(uds, b"CONNECT 7777\n"))
        s = host_connect(uds, f"CONNECT {LISTEN_PORT}\r\n".encode())
        assert recv_line(s).startswith(b"OK ")
        s.sendall(b"still here\n")
        assert recv_line(s) == b"STILL HERE\n"
        s.close()
    finally:
        out, err = finish(p, seen)
        echo.close()
    assert p.returncode == 0, out + err
    assert "vsock: host-initiated ok" in out


def test_guest_connect_refused(tmp_path):
    """No host listener on <uds>_4321: the guest's REQUEST gets RST, the
    guest says so and exits with its own status; ember is fine."""
    uds = tmp_path / "v.sock"
    r = run(["run", "--timeout", "30", "--vsock", f"cid=3,uds={uds}", "--",
             guest("virtio"), "test=vsock", "port=4321"])
    assert "vsock: connect to port 4321: op 3, not RESPONSE (refused)" in r.stdout, \
        r.stdout + r.stderr
    assert r.returncode == 1, r.stdout + r.stderr  # the guest's exit status
    assert "ember: guest exited with status 1" in r.stderr


def test_config_space_cid(tmp_path):
    """The guest reads its CID from the config space (le64 guest_cid)."""
    uds = tmp_path / "v.sock"
    r = run(["run", "--timeout", "30", "--vsock", f"cid=77,uds={uds}", "--",
             guest("virtio"), "test=vsock", "port=4321"])
    assert "vsock: cid 77" in r.stdout, r.stdout + r.stderr


def test_uds_stale_socket_replaced_file_refused(tmp_path):
    """A socket left by an earlier run is replaced; a regular file is
    never removed."""
    uds = tmp_path / "v.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(str(uds))
    old.close()
    r = run(["run", "--timeout", "30", "--vsock", f"cid=3,uds={uds}", "--",
             guest("virtio"), "test=probe"])
    assert r.returncode == 0, r.stdout + r.stderr
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    r = run(["run", "--timeout", "30", "--vsock", f"cid=3,uds={plain}", "--",
             guest("virtio"), "test=probe"])
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert "is not a socket" in r.stderr
    assert plain.read_text() == "keep me"


def test_ini_spelling(tmp_path):
    """[vsock] cid = , uds = in an INI file."""
    uds = tmp_path / "v.sock"
    ini = tmp_path / "vm.ini"
    ini.write_text(f"[vm]\nkernel = {guest('virtio')}\ncmdline = test=vsock port=4321\n"
                   f"timeout = 30\n\n[vsock]\ncid = 5\nuds = {uds}\n")
    r = run(["run", str(ini)])
    assert "vsock: cid 5" in r.stdout, r.stdout + r.stderr
    assert "(refused)" in r.stdout


def test_metrics_counters(tmp_path):
    """Through the API (PUT /vsock, /metrics): after a connection each
    way, the "vsock" metrics carry Firecracker's counter names with the
    traffic in them."""
    uds, metrics = tmp_path / "v.sock", tmp_path / "metrics.json"
    metrics.write_text("")
    echo = Echo(f"{uds}_{GUEST_PORT}")
    api = Ember(tmp_path)
    try:
        api.ok("PUT", "/metrics", {"metrics_path": str(metrics)})
        api.ok("PUT", "/boot-source", {
            "kernel_image_path": guest("virtio"),
            "boot_args": f"test=vsock port={GUEST_PORT} listen={LISTEN_PORT}"})
        api.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
        api.ok("PUT", "/vsock", {"guest_cid": 3, "uds_path": str(uds)})
        api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
        api.wait_output(f"vsock: listening on port {LISTEN_PORT}", timeout=20)
        s = host_connect(uds, f"CONNECT {LISTEN_PORT}\n".encode())
        assert recv_line(s).startswith(b"OK ")
        s.sendall(b"counted\n")
        assert recv_line(s) == b"COUNTED\n"
        api.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
        s.close()
        api.wait_output("vsock: host-initiated ok", timeout=20)
    finally:
        api.kill()
        echo.close()
    m = json.loads(metrics.read_text().splitlines()[-1])["vsock"]
    for name in ("conns_added", "conns_removed", "conns_killed", "conn_event_fails",
                 "rx_packets_count", "tx_packets_count", "rx_bytes_count", "tx_bytes_count",
                 "rx_queue_event_count", "tx_queue_event_count", "tx_write_fails",
                 "rx_read_fails", "device_needs_reset"):
        assert name in m, m
    assert m["conns_added"] == 2, m  # the guest's to <uds>_1234, the host's to 5000
    # guest to host: "ping from guest\n", "COUNTED\n"; host to guest: the
    # echo of the ping, "counted\n"
    assert m["tx_bytes_count"] >= 16 + 8 and m["rx_bytes_count"] >= 16 + 8, m
    assert m["rx_packets_count"] > 0 and m["tx_packets_count"] > 0, m
    assert m["conn_event_fails"] == 0 and m["device_needs_reset"] == 0, m
