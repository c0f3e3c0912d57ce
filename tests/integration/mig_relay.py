"""The migration tests' relay (tests/integration/test_migration.py): bytes
between two socketpairs, record by record, so a test can stop, corrupt,
cut or kill at a chosen record.  A record is {u32 type, u32 len, u64 a,
u64 b, u32 crc, u32 0} + len bytes (docs/migration.md)."""
import socket
import struct
import threading
import zlib

HDR = 32


def name(t):
    return struct.pack("<I", t).decode("latin1")


class Relay:
    """Bytes between two socketpairs, record by record.  action(dir, n,
    hdr, payload) is called before record n (counted per direction: "s"
    source->target, "t" target->source) is passed on; it returns the
    record's bytes to send (possibly changed), or None to cut the
    connection there (both ways).  Records seen: self.seen."""

    def __init__(self, action=None):
        self.src_end, s_in = socket.socketpair()
        self.dst_end, d_in = socket.socketpair()
        self.action = action or (lambda *a: a[2] + a[3])
        self.seen = []
        self.lock = threading.Lock()
        self.socks = (s_in, d_in)
        self.cut = False
        self.threads = [threading.Thread(target=self.pump, args=("s", s_in, d_in), daemon=True),
                        threading.Thread(target=self.pump, args=("t", d_in, s_in), daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def read(sock, n):
        buf = b""
        while len(buf) < n:
            c = sock.recv(n - len(buf))
            if not c:
                return None
            buf += c
        return buf

    def recv_hdr(self, sock, d):
        """The next record's header from sock (going d), None at the end: a
        subclass may take what rides on it (test_migration_local's fds)."""
        return self.read(sock, HDR)

    def send(self, sock, d, out):
        """A record's bytes (going d) on to sock."""
        sock.sendall(out)

    def close(self):
        with self.lock:
            self.cut = True
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def pump(self, d, a, b):
        """One direction.  Its end passes on as a half-close (as a TCP
        relay would); a peer that went away is drained so its writer
        never blocks; only an action's None cuts both ways."""
        n, forward = 0, True
        try:
            while True:
                hdr = self.recv_hdr(a, d)
                if hdr is None:
                    break
                t, ln = struct.unpack_from("<II", hdr)
                payload = self.read(a, ln) if ln else b""
                if payload is None:
                    break
                if not forward:
                    continue
                with self.lock:
                    self.seen.append((d, name(t)))
                out = self.action(d, n, hdr, payload)
                n += 1
                if out is None:
                    self.close()
                    return
                try:
                    self.send(b, d, out)
                except OSError:
                    forward = False
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def record(t, a=0, b=0, payload=b""):
    h = struct.pack("<4sIQQII", t.encode(), len(payload), a, b, 0, 0)
    crc = zlib.crc32(payload, zlib.crc32(h)) & 0xFFFFFFFF
    return h[:24] + struct.pack("<I", crc) + h[28:] + payload


def at(dirn, rec, then, nth=0):
    """An action: at the nth record of type rec going dirn, do then(hdr,
    payload) -> bytes or None; pass everything else."""
    count = {"n": 0}

    def act(d, n, hdr, payload):
        if d == dirn and name(struct.unpack_from("<I", hdr)[0]) == rec:
            count["n"] += 1
            if count["n"] == nth + 1:
                return then(hdr, payload)
        return hdr + payload
    return act
