"""The snapshot stream rows of `make bench` (bench_snapshot.py calls
stream_rows): the same 256 MiB counter guest with 250 MiB touched,

  * stream to a pipe: PUT /snapshot/create {"stream": true} with a pipe's
    write end passed (SCM_RIGHTS, as `ember snapshot create --to -` does;
    the pipe grown to 1 MiB as it does), `cat > /dev/null` reading the
    other end; timed from the request's first byte to the reply's last
    (the VM paused beforehand, outside the window);
  * load from a pipe: `cat STREAM | ember run --restore -`, from the start
    of both to ember's first byte of guest output (the counter's next
    line), and ember's --stats "vcpus started" (vm_build -> vCPUs running:
    the memory read from the pipe is in it);
  * the reference: `cat STREAM | cat > /dev/null`, the same bytes through
    one pipe (of the size ember gives its pipes, 1 MiB) between two
    processes, in the same run.

Throughput = the stream's bytes / the median time."""
import fcntl
import json
import os
import re
import socket
import subprocess
import time

STATS_RE = re.compile(r"ember: stats: vcpus started ([\d.]+) ms")
PIPE_SZ = 1 << 20  # what `ember snapshot create --to -` asks for


def _put_stream(sock_path, fd, timeout=120):
    """PUT /snapshot/create {"stream": true} with fd riding on it: (status,
    body, seconds from the request's send to the reply's last byte)."""
    from bench_snapshot import read_reply  # here: it imports this module
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        data = json.dumps({"snapshot_type": "Full", "stream": True}).encode()
        req = ("PUT /snapshot/create HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
               "application/json\r\nContent-Length: %d\r\n\r\n" % len(data)).encode() + data
        t0 = time.monotonic()
        socket.send_fds(s, [req], [fd])
        st, body = read_reply(s)
        return st, body, time.monotonic() - t0
    finally:
        s.close()


def _pipe():
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SZ)
    except OSError:
        pass
    return r, w


def _to_pipe(sock):
    """One stream into a pipe that cat drains: (ms, error)."""
    r, w = _pipe()
    cat = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL)
    os.close(r)
    try:
        st, body, dt = _put_stream(sock, w)
    finally:
        os.close(w)
        cat.wait(timeout=60)
    return (dt * 1e3, None) if st == 204 else (None, "%s %s" % (st, body.strip()[:120]))


def _cat_cat(path):
    """`cat PATH | cat > /dev/null` through a pipe of ember's size: ms."""
    r, w = _pipe()
    t0 = time.monotonic()
    a = subprocess.Popen(["cat", path], stdout=w)
    b = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL)
    os.close(r)
    os.close(w)
    b.wait(timeout=60)
    a.wait(timeout=60)
    return (time.monotonic() - t0) * 1e3


def _load(ember, path):
    """`cat PATH | ember run --restore -`: (ms to ember's first output byte,
    its vcpus-started ms, error)."""
    t0 = time.monotonic()
    a = subprocess.Popen(["cat", path], stdout=subprocess.PIPE)
    # --timeout bounds start-up too: reading 250 MiB from the pipe comes first
    b = subprocess.Popen([ember, "run", "--restore", "-", "--timeout", "1", "--stats"],
                         stdin=a.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    a.stdout.close()
    first = b.stdout.read(1)
    dt = (time.monotonic() - t0) * 1e3
    out, err = b.communicate(timeout=60)
    a.wait(timeout=60)
    m = STATS_RE.search(err.decode(errors="replace"))
    if not first:
        return None, None, err.decode(errors="replace").strip()[-160:]
    return dt, (float(m.group(1)) if m else None), None


def stream_rows(ember, kernel, work, runs, fill_mib, mem_mib):
    """Rows [what, median, p10–p90, n, note] (bench_snapshot's format)."""
    import bench_snapshot as bs  # here: it imports this module
    g = bs._Guest(ember, kernel, "fill=%d spin=1000" % fill_mib, work, "stream")
    path = os.path.join(work, "guest.stream")
    rows = []
    try:
        if not g.wait_count(1, timeout=60):
            return [bs._skip("snapshot stream", g.why())]
        c, body, _ = g.api("PATCH", "/vm", {"state": "Paused"})
        if c != 204:
            return [bs._skip("snapshot stream", "pause refused: %s %s" % (c, body[:120]))]
        # one to a file: its size, and what the loads read
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            c, body, _ = _put_stream(g.sock, fd)
        finally:
            os.close(fd)
        if c != 204:
            return [bs._skip("snapshot stream", "refused: %s %s" % (c, body.strip()[:120]))]
        size = os.path.getsize(path)
        mib = size / 1048576.0
        n = max(3, min(runs, 10))
        made, err = [], None
        for _ in range(n):
            ms, err = _to_pipe(g.sock)
            if ms is None:
                break
            made.append(ms)
        g.kill()
        ref = [_cat_cat(path) for _ in range(n)]
        loads, started, why = [], [], None
        for _ in range(n):
            ms, st, why = _load(ember, path)
            if ms is None:
                break
            loads.append(ms)
            started.append(st)
    finally:
        g.kill()
    rate = lambda xs: (" %.0f MiB/s" % (mib / (bs._summ(xs)["med"] / 1e3))
                       if bs._summ(xs) else "")
    what = "%d MiB guest, %d MiB touched" % (mem_mib, fill_mib)
    rows.append(bs._row("stream snapshot → a pipe (cat > /dev/null), " + what, made, "ms",
                        "PUT /snapshot/create, fd passed; %.1f MiB stream:%s%s"
                        % (mib, rate(made), ("; " + err) if err else "")))
    rows.append(bs._row("  reference: cat STREAM piped to cat > /dev/null, same bytes", ref, "ms",
                        "one pipe between two processes:" + rate(ref)))
    rows.append(bs._row("stream load ← a pipe (cat STREAM piped to ember run --restore -): "
                        "→ first guest output", loads, "ms",
                        "from both execs:%s%s" % (rate(loads), ("; " + why) if why else "")))
    rows.append(bs._row("  ember --stats: vm_build → vCPUs running", started, "ms",
                        "the memory read from the pipe, hashed, checked"))
    try:
        os.unlink(path)
    except OSError:
        pass
    return rows
