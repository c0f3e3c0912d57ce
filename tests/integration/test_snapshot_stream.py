"""Snapshot streams (docs/snapshots.md, "Streams"): a whole snapshot in one
byte stream, written by ember into a file descriptor its client passes
with PUT /snapshot/create {"stream": true} (SCM_RIGHTS), read by `ember run
--restore -` from stdin.

- a counting guest piped from one ember into a fresh one counts on
  exactly (`ember snapshot create --to - | ember run --restore -`);
- save -> load -> save through pipes gives the same state records and the
  same memory records;
- a truncated stream (cut in each part) and a corrupted one (a byte
  flipped in the state, in a page) are refused with exit 121, naming the
  byte offset and the part;
- a Solo5 hvt guest with a block device streams too (`ember snapshot load
  -`), and its host paths still need confirming;
- the API: a stream of a running VM is refused and its fd closed; an fd
  that comes with any other request, or two fds with one, leave no fd
  open in ember.

The stream (snapshot/snapshot.h): "EMBRSTRM", u32 version, u32 flags, u64
state length, the state file, then records {u32 type, u32 0, u64 a, u64 b}
of 24 bytes: DATA (first page, count; the pages follow), ZERO, ENDR (RAM's
pages, the content hash)."""
import fcntl
import json
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import EMBER, EXIT_CONFIG, GUESTS, guest, needs_kvm
from test_api import Ember
from test_snapshot import COUNT, SPIN, counts_on
from test_snapshot_files import masked, offsets  # noqa: F401 (fixture)

pytestmark = needs_kvm

RUNNING = "save/restore unavailable while running"


def records(data):
    """(state bytes, [(offset, type, a, b)]) of a whole stream."""
    assert data[:8] == b"EMBRSTRM" and struct.unpack_from("<II", data, 8) == (1, 0)
    (n,) = struct.unpack_from("<Q", data, 16)
    state, off, recs = data[24:24 + n], 24 + n, []
    while True:
        t, zero, a, b = struct.unpack_from("<4sIQQ", data, off)
        assert zero == 0
        recs.append((off, t.decode(), a, b))
        off += 24 + (b * 4096 if t == b"DATA" else 0)
        if t == b"ENDR":
            break
    assert off == len(data), "nothing after the end record"
    return state, recs


def counter(tmp_path, name="src", *extra):
    e = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline",
                                  f"count={COUNT} spin={SPIN}", "--timeout", "60", *extra],
              name=name)
    e.wait_output("count 30\n")
    return e


def create(sock, to="-", **kw):
    return subprocess.run([EMBER, "snapshot", "create", "--api-sock", sock, "--to", to],
                          capture_output=True, timeout=60, **kw)


def load(data, *args):
    """`ember run --restore - ARGS` fed data through a pipe."""
    return subprocess.run([EMBER, "run", "--restore", "-", "--timeout", "30", *args],
                          input=data, capture_output=True, timeout=60)


def pipeline(sock, *load_args, cmd=("run", "--restore", "-")):
    """`ember snapshot create --api-sock SOCK --to - | ember CMD LOAD_ARGS`:
    (create's result, load's result), outputs as text."""
    c = subprocess.Popen([EMBER, "snapshot", "create", "--api-sock", sock, "--to", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ld = subprocess.Popen([EMBER, *cmd, *load_args], stdin=c.stdout, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    c.stdout.close()
    out, err = ld.communicate(timeout=60)
    c.wait(timeout=60)
    return (c.returncode, c.stderr.read().decode()), (ld.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
def stream_a(tmp_path_factory):
    """One stream of the counting guest (`--to FILE`): (bytes, output
    before it)."""
    d = tmp_path_factory.mktemp("stream")
    e = counter(d)
    try:
        r = create(e.sock, str(d / "a.stream"))
        assert r.returncode == 0, r.stderr
        assert e.curl("GET", "/")[1]["state"] == "Paused"
        out = e.stdout()
    finally:
        e.kill()
    assert not [p for p in os.listdir(d) if ".tmp-" in p]
    return (d / "a.stream").read_bytes(), out


def test_pipe_into_a_fresh_ember_counts_on(tmp_path):
    e = counter(tmp_path)
    try:
        (crc, cerr), (rc, out, err) = pipeline(e.sock, "--timeout", "30")
        assert crc == 0, cerr
        assert rc == 0, err
        assert e.curl("GET", "/")[1]["state"] == "Paused"  # the source stays paused
        before = e.stdout()
    finally:
        e.kill()
    counts_on(before, out)


def test_stream_file_loads_and_holds_the_nonzero_pages(stream_a):
    data, before = stream_a
    state, recs = records(data)
    assert state[:8] == b"EMBRSNAP"
    assert {t for _, t, _, _ in recs} == {"DATA", "ENDR"}  # full: no zero markers
    end = recs[-1]
    assert end[2] * 4096 == struct.unpack_from("<Q", state, 24)[0]  # RAM's pages
    pages = [(a, b) for _, t, a, b in recs if t == "DATA"]
    assert all(a1 + b1 <= a2 for (a1, b1), (a2, _) in zip(pages, pages[1:])), "ascending"
    assert sum(b for _, b in pages) * 4096 < len(data) < 16 << 20  # touched pages only
    r = load(data)
    assert r.returncode == 0, r.stderr
    counts_on(before, r.stdout.decode())


def test_save_load_save_through_pipes_same_state(tmp_path, offsets):
    """A is streamed into `ember run --restore - --paused --api-sock`, which
    streams B at once: the same records (fields that move by themselves
    masked, as for files) and the same memory records."""
    e = counter(tmp_path, "src", "--vcpus", "2")
    try:
        r = create(e.sock)
        assert r.returncode == 0, r.stderr
        a = r.stdout
    finally:
        e.kill()
    sock = str(tmp_path / "again.sock")
    with open(tmp_path / "again.out", "wb") as out, open(tmp_path / "again.err", "wb") as err:
        p = subprocess.Popen([EMBER, "run", "--restore", "-", "--paused", "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=out, stderr=err)
    try:
        p.stdin.write(a)
        p.stdin.close()
        deadline = time.monotonic() + 20
        while not os.path.exists(sock) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        r = create(sock)
        assert r.returncode == 0, r.stderr + (tmp_path / "again.err").read_bytes()
        b = r.stdout
    finally:
        p.kill()
        p.wait()
    assert (tmp_path / "again.out").read_bytes() == b"", "a paused restore ran the guest"
    (sa, ra), (sb, rb) = records(a), records(b)
    assert sa[:48] == sb[:48]  # the state's header up to created_ns
    ma, mb = masked(sa, offsets), masked(sb, offsets)
    assert sorted(ma) == sorted(mb) and ("MEMH", 0) in ma and ("MEMF", 0) not in ma
    differ = {k: [i for i in range(len(ma[k])) if ma[k][i] != mb[k][i]][:16]
              for k in ma if ma[k] != mb[k]}
    assert not differ, f"sections (byte offsets) changed by save -> load -> save: {differ}"
    assert a[24 + len(sa):] == b[24 + len(sb):], "the memory records differ"


# ---- refused streams ----

def cuts(data):
    """{cut offset: the words the refusal must hold}, one or more per part."""
    state, recs = records(data)
    first, end = recs[0][0], recs[-1][0]
    data_rec = next(r for r in recs if r[1] == "DATA" and r[3] > 1)
    at = data_rec[0] + 24 + 4096 + 100  # in its second page
    return {
        10: "truncated in the stream header",
        20: "truncated in the state file's length",
        24 + len(state) // 2: f"truncated in the state file ({len(state) // 2 - 0} of its "
                              f"{len(state)} bytes)",
        first: "truncated before the end record",
        first + 9: "truncated in a record header",
        at: f"truncated in memory run at page {data_rec[2]:#x} ({data_rec[3]:#x} pages; page "
            f"{data_rec[2] + 1:#x} incomplete)",
        end: "truncated before the end record",
        len(data) - 1: "truncated in a record header",
    }


def test_truncated_streams_refused(stream_a):
    data, _ = stream_a
    for cut, words in cuts(data).items():
        r = load(data[:cut])
        err = r.stderr.decode()
        assert r.returncode == EXIT_CONFIG, (cut, r.returncode, err)
        assert f"ember: stream: byte {cut}: {words}" in err, (cut, err)
        assert b"count" not in r.stdout


def test_corrupted_streams_refused(stream_a):
    data, _ = stream_a
    state, recs = records(data)
    bad = bytearray(data)
    bad[24 + 100] ^= 0x01  # in the state file's first section
    r = load(bytes(bad))
    assert r.returncode == EXIT_CONFIG
    assert "ember: stream: byte 24: state file: CRC mismatch" in r.stderr.decode()
    bad = bytearray(data)
    page = next(r for r in recs if r[1] == "DATA")
    bad[page[0] + 24 + 2000] ^= 0x80  # in a page of RAM
    r = load(bytes(bad))
    err = r.stderr.decode()
    assert r.returncode == EXIT_CONFIG, err
    assert f"ember: stream: byte {recs[-1][0]}: memory hash mismatch" in err, err
    assert b"count" not in r.stdout
    for at, want in ((0, "byte 0: not an ember snapshot stream (bad magic)"),
                     (8, "byte 8: stream format version 2, this ember reads 1")):
        bad = bytearray(data)
        bad[at] = bad[at] + 1
        r = load(bytes(bad))
        assert r.returncode == EXIT_CONFIG and f"ember: stream: {want}" in r.stderr.decode()


def test_memory_of_another_snapshot_refused(tmp_path, stream_a):
    """A's state with the memory records of B (the same guest later): each
    part is whole, the pair is not."""
    a, _ = stream_a
    e = counter(tmp_path)
    try:
        e.wait_output("count 60\n")
        r = create(e.sock)
        assert r.returncode == 0
        b = r.stdout
    finally:
        e.kill()
    (sa, _), (sb, _) = records(a), records(b)
    mixed = a[:24 + len(sa)] + b[24 + len(sb):]
    r = load(mixed)
    err = r.stderr.decode()
    assert r.returncode == EXIT_CONFIG, err
    assert "is not the memory its state file records" in err, err


# ---- a Solo5 hvt guest with a block device ----

def test_hvt_guest_streams(tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(64 * 1024))
    blk = os.path.join(GUESTS, "hvt", "blk.hvt")
    e = Ember(tmp_path, run_args=["--block:storage=" + str(img), "--timeout", "60", "--kernel",
                                  blk, "--cmdline", "pause"], name="hvt")
    try:
        e.wait_output("blk: written\n")
        # its disk is not confirmed: refused after the state, before any memory
        (crc, _), (rc, out, err) = pipeline(e.sock, cmd=("snapshot", "load", "-"))
        assert rc == EXIT_CONFIG, err
        assert 'stream names host resources it would open: drive "storage"' in err, err
        # create fails when its reader went away before the stream fitted
        # into the pipe (a small guest may fit whole); a failed one resumes
        assert crc in (0, 1)
        assert e.curl("GET", "/")[1]["state"] == ("Running" if crc else "Paused")
        (crc, cerr), (rc, out, err) = pipeline(e.sock, "--use-saved-paths", "--timeout", "20",
                                               cmd=("snapshot", "load", "-"))
    finally:
        e.kill()
    assert crc == 0, cerr
    assert rc == 0, out + err
    assert "blk: read back ok" in out and "blk: written" not in out


# ---- the API: file descriptors that come with requests ----

def raw(sock, method, path, body=None, fds=()):
    """One request with fds (SCM_RIGHTS) riding on its first bytes:
    (status, JSON or None)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(sock)
        data = json.dumps(body).encode() if body is not None else b""
        req = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data
        socket.send_fds(s, [req], list(fds))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        while m and len(rest) < int(m.group(1)):
            rest += s.recv(65536)
        st = int(head.split()[1])
        return st, (json.loads(rest) if rest.strip() else None)
    finally:
        s.close()


def open_fds(pid):
    return sorted(os.listdir(f"/proc/{pid}/fd"), key=int)


def settled(pid, want, timeout=3):
    """pid's open fds once they are want again (a closed connection is
    noticed by ember's loop, not at once)."""
    deadline = time.monotonic() + timeout
    while open_fds(pid) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return open_fds(pid)


def test_stream_of_a_running_vm_refused_and_its_fd_closed(tmp_path):
    e = counter(tmp_path)
    try:
        before = open_fds(e.p.pid)
        r, w = os.pipe()
        st, js = raw(e.sock, "PUT", "/snapshot/create", {"stream": True}, fds=[w])
        os.close(w)
        assert st == 400 and RUNNING in js["fault_message"], (st, js)
        os.set_blocking(r, False)
        assert os.read(r, 1) == b"", "ember still holds the pipe's write end"
        os.close(r)
        assert settled(e.p.pid, before) == before
        assert e.curl("GET", "/")[1]["state"] == "Running"
    finally:
        e.kill()


def test_fds_with_other_requests_are_not_leaked(tmp_path):
    e = counter(tmp_path)
    try:
        before = open_fds(e.p.pid)
        r, w = os.pipe()
        cases = [
            ("GET", "/", None, [w], 200, None),
            ("PATCH", "/vm", {"state": "Paused"}, [w], 204, None),
            ("PUT", "/snapshot/create", {"snapshot_path": str(tmp_path / "s"),
                                         "mem_file_path": str(tmp_path / "m")}, [w], 204, None),
            ("PUT", "/snapshot/create", {"stream": True}, [], 400,
             "the request carries no file descriptor"),
            ("PUT", "/snapshot/create", {"stream": True, "snapshot_path": "/x"}, [w], 400,
             "snapshot_path and mem_file_path are for files"),
            ("PUT", "/snapshot/create", {"stream": True, "snapshot_type": "Diff"}, [w], 400,
             "only a Full snapshot is streamed"),
            ("GET", "/", None, [w, r], 400, "at most one file descriptor"),
            ("PUT", "/snapshot/create", {"stream": True}, [w, w], 400,
             "at most one file descriptor"),
        ]
        for method, path, body, fds, want, words in cases:
            st, js = raw(e.sock, method, path, body, fds=fds)
            assert st == want, (method, path, body, st, js)
            if words:
                assert words in js["fault_message"], js
            assert settled(e.p.pid, before) == before, (method, path, body)
        os.close(w)
        os.set_blocking(r, False)
        assert os.read(r, 1) == b"", "ember still holds the pipe's write end"
        os.close(r)
        # and a stream still works on the same ember
        r = create(e.sock)
        assert r.returncode == 0, r.stderr
        assert settled(e.p.pid, before) == before
        assert records(r.stdout)[1][-1][1] == "ENDR"
    finally:
        e.kill()


def test_cli_refusals(tmp_path):
    r = subprocess.run([EMBER, "snapshot", "create", "--api-sock", "/nonexistent", "--to", "-",
                        "--diff"], capture_output=True, text=True)
    assert r.returncode == EXIT_CONFIG and "--to (a stream) goes without" in r.stderr
    r = subprocess.run([EMBER, "run", "--restore", "-", "--memory-file", "x"],
                       capture_output=True, text=True)
    assert r.returncode == EXIT_CONFIG and "--restore - reads the memory from the stream" \
        in r.stderr
    r = subprocess.run([EMBER, "run", "--restore", "-"], input=b"", capture_output=True)
    assert r.returncode == EXIT_CONFIG
    assert b"ember: stream: byte 0: truncated in the stream header" in r.stderr


def test_progress_while_streaming(tmp_path):
    """GET /ember/status answers while a stream is written and says how far it is:
    the job, its phase, bytes done of the total.  The test holds the
    pipe's read end (one page of buffer), so the writer waits mid-memory
    until the test reads on."""
    e = counter(tmp_path)
    try:
        assert e.curl("PATCH", "/vm", {"state": "Paused"})[0] == 204
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        done = {}
        t = threading.Thread(target=lambda: done.setdefault(
            "reply", raw(e.sock, "PUT", "/snapshot/create", {"stream": True}, fds=[w])))
        t.start()
        data = b""

        def progress(pred):
            """GET / until pred(its progress) holds, reading a page of the
            stream between tries (the writer cannot pass a full pipe)."""
            nonlocal data
            for _ in range(2000):
                js = e.curl("GET", "/ember/status")[1]
                if pred(js.get("progress") or {}):
                    return js
                if select.select([r], [], [], 10)[0]:  # bounded: never hangs the suite
                    data += os.read(r, 4096)
            raise AssertionError(f"no such progress: {js}")
        js = progress(lambda p: p.get("phase") == "sending memory" and p["bytes_done"] > 0)
        assert js["job"] == "snapshot create" and js["state"] == "Paused", js
        first = js["progress"]
        assert 0 < first["bytes_done"] < first["bytes_total"], first
        assert first["elapsed_ms"] >= 0
        progress(lambda p: p.get("bytes_done", 0) > first["bytes_done"])
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data += f.read()
        t.join(30)
        assert done["reply"][0] == 204, done
        js = e.curl("GET", "/ember/status")[1]
        assert "progress" not in js and "job" not in js, js
        records(data)
        (state_len,) = struct.unpack_from("<Q", data, 16)
        assert len(data) - 24 - state_len == first["bytes_total"]
    finally:
        e.kill()
