"""A stand-in for ember's side of live migration (docs/migration.md, the
API section), for testing `ember migrate` without the VMM: a unix-socket
HTTP server that takes the stream's fd with PUT /migration/send or
/migration/receive (SCM_RIGHTS), moves scripted bytes over it both ways,
and reports phases with GET /migration.  It records every connection and
request, so a test can say that a target saw nothing at all.

The scripted stream: the source writes NBYTES of a pattern; the target,
having read and checked them, answers b"REDY" and 64 KiB of its own
pattern; the source reads that and sends a GOGO record header (or not, as its script
says), then closes; the target runs on GOGO and EOF."""
import json
import os
import socket
import threading
import time

INVALID = "Invalid request method and/or path"
# The record header {u32 type, u32 len, u64 a, u64 b, u32 crc, u32 0}: the
# sending controller knows a handed-over source by its stream's last one.
GOGO = b"GOGO" + bytes(28)
REPLY = 64 * 1024


PERIOD = 65521  # prime: a chunk lost, repeated or moved shows
_blocks = {}


def pattern(seed, n, start=0):
    """Bytes start..start+n of seed's stream (periodic, cached: fast)."""
    if seed not in _blocks:
        _blocks[seed] = bytes(((i * 2654435761) >> 13 ^ seed) & 0xFF for i in range(PERIOD))
    blk, off = _blocks[seed], start % PERIOD
    return (blk * ((off + n) // PERIOD + 1))[off:off + n]


def read_exact(fd, n):
    out = bytearray()
    while len(out) < n:
        b = os.read(fd, min(65536, n - len(out)))
        if not b:
            break
        out += b
    return bytes(out)


class FakeVmm:
    """One fake ember at path: role "source" or "target"; script: how the
    source ends ("ok", "lose-gogo", "die-after-redy", "fail-after-redy") or
    the target ("ok", "die-at-ready"); events: a list shared by the fakes
    of a test, where resolves are recorded in order."""

    def __init__(self, path, role, script="ok", nbytes=1 << 20, events=None, gone_after=0.2):
        self.path, self.role, self.script, self.nbytes = str(path), role, script, nbytes
        self.events = events if events is not None else []
        self.gone_after = gone_after
        self.connections = 0
        self.requests = []          # (method, path, body, got_fd)
        self.phase = "none"
        self.error = None
        self.bytes = 0
        self.stream_ok = None       # the target: NBYTES arrived intact; the source: REDY did
        self.got_gogo = False
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(16)
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    # ---- the API ----
    def _accept(self):
        while self.alive:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with self.lock:
            self.connections += 1
        data, fds = b"", []
        try:
            while b"\r\n\r\n" not in data:
                msg, got, _, _ = socket.recv_fds(c, 65536, 4)
                if not msg:
                    return
                data += msg
                fds += got
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            clen = 0
            for l in lines[1:]:
                k, _, v = l.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v)
            while len(body) < clen:
                body += c.recv(65536)
            js = json.loads(body) if body.strip() else None
            self.requests.append((method, path, js, bool(fds)))
            status, reply = self._route(method, path, js, fds)
            out = json.dumps(reply).encode() if reply is not None else b""
            c.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(out)}\r\n\r\n".encode() + out)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            c.close()

    def _route(self, method, path, js, fds):
        if method == "GET" and path == "/migration":
            return 200, {"role": self.role, "phase": self.phase, "round": 1 if self.bytes else 0,
                         "bytes_sent": self.bytes, "bytes_remaining": max(0, self.nbytes - self.bytes),
                         "pages_sent": self.bytes // 4096, "dirty_rate_bps": 0,
                         "bandwidth_bps": 100000000, "expected_downtime_ms": 1.5,
                         "throttle_pct": 0, "total_ms": 5, "downtime_ms": None, "error": self.error}
        want = "/migration/send" if self.role == "source" else "/migration/receive"
        if method == "PUT" and path == want:
            if len(fds) != 1 or self.phase != "none":
                return 400, {"fault_message": "no stream fd, or not fresh"}
            fd = os.dup(fds[0])
            run = self._source if self.role == "source" else self._target
            self.phase = "precopy" if self.role == "source" else "receiving"
            threading.Thread(target=run, args=(fd,), daemon=True).start()
            return 204, None
        if method == "PUT" and path == "/migration/resolve":
            if self.phase not in ("handover-unknown", "ready"):
                return 400, {"fault_message": f"nothing to resolve in phase {self.phase}"}
            outcome = js["outcome"]
            self.events.append((self.role, outcome))
            if outcome == "resume":
                self.phase = "running" if self.role == "target" else "failed"
            else:
                self.go_away()
            return 204, None
        if method == "PUT" and path == "/migration/cancel":
            self.events.append((self.role, "cancel"))
            return 204, None
        return 400, {"fault_message": f"{INVALID}: {method} {path}."}

    # ---- the stream ----
    def _source(self, fd):
        if self.script == "wait-cancel":  # precopy until cancelled, then runs on
            while ("source", "cancel") not in self.events:
                time.sleep(0.01)
            self.error, self.phase = "cancelled by request", "cancelled"
            os.close(fd)
            return
        try:
            sent = 0
            while sent < self.nbytes:
                n = min(65536, self.nbytes - sent)
                os.write(fd, pattern(1, n, sent))
                sent += n
                self.bytes = sent
            reply = read_exact(fd, 4 + REPLY)
            self.stream_ok = reply == b"REDY" + pattern(2, REPLY)
            if not self.stream_ok:
                self.error, self.phase = "bad reply", "failed"
                return
            self.phase = "stop-and-copy"
            if self.script == "ok":
                self.phase = "handover"
                os.write(fd, GOGO)
                os.close(fd)
                fd = -1
                self.phase = "completed"
                time.sleep(self.gone_after)
                self.go_away()
            elif self.script == "lose-gogo":
                self.phase = "handover-unknown"
            elif self.script == "die-after-redy":
                self.go_away()
            elif self.script == "fail-after-redy":
                self.error, self.phase = "timed out (scripted)", "failed"
        except OSError as e:
            self.error, self.phase = f"stream: {e}", "failed"
        finally:
            if fd >= 0:
                os.close(fd)

    def _target(self, fd):
        try:
            got = bytearray()
            while len(got) < self.nbytes:
                b = os.read(fd, 65536)
                if not b:
                    break
                got += b
                self.bytes = len(got)
            if bytes(got) != pattern(1, self.nbytes):
                self.stream_ok = False
                self.error, self.phase = "stream cut or damaged", "failed"
                return
            self.stream_ok = True
            os.write(fd, b"REDY" + pattern(2, REPLY))
            self.phase = "ready"
            if self.script == "die-at-ready":
                self.go_away()
                return
            rest = read_exact(fd, len(GOGO))
            self.got_gogo = rest == GOGO
            if self.got_gogo:
                self.phase = "running"
            # else: stays in ready for its controller (docs/migration.md)
        except OSError as e:
            self.error, self.phase = f"stream: {e}", "failed"
        finally:
            os.close(fd)

    def go_away(self):
        """As an exiting ember: its socket file stays, connecting is refused."""
        self.alive = False
        self.events.append((self.role, "gone"))
        try:
            self.srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.srv.close()

    def close(self):
        if self.alive:
            self.alive = False
            try:
                self.srv.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            except OSError:
                pass
            self.srv.close()
