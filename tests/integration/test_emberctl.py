"""emberctl and emberd's control API (docs/ha.md, "Control API", "emberctl")
against the real emberd, supervising real VMs (the counter guest) on KVM:
every command in human and --json form, the refusals and exit statuses,
bad requests on a raw socket, a stalled client, long polls, logs, and
`ember ctl`.  Needs root (emberd runs the jailer)."""
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import guest, needs_kvm
from emberd_util import Emberd

from emberd_util import EMBERD  # noqa: E402

BUILD = os.path.dirname(EMBERD)
EMBERCTL = os.path.abspath(os.environ.get("EMBERCTL", os.path.join(BUILD, "emberctl")))
EMBER = os.path.join(BUILD, "ember")

pytestmark = needs_kvm


def wait_for(cond, timeout=60, what="a condition"):
    """Poll cond() until it returns something true; fail after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def vm_file(ed, name):
    ed.write_vm(name, kernel=guest("counter"), cmdline="spin=20000000")


class Ctl(Emberd):
    """emberd_util's Emberd, and emberctl on its socket."""

    def answers(self):
        try:
            return raw(self.sock, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        except OSError:
            return False

    def ctl(self, *args, timeout=120):
        return subprocess.run([EMBERCTL, "--sock", self.sock, *args], capture_output=True,
                              text=True, timeout=timeout, errors="replace")

    def ok(self, *args):
        r = self.ctl(*args)
        assert r.returncode == 0, f"emberctl {' '.join(args)}: {r.returncode} {r.stderr}"
        return r.stdout

    def json(self, *args):
        return json.loads(self.ok("--json", *args))

    def state_of(self, name):
        return self.json("status", name)["state"]

    def running(self, name, timeout=60):
        wait_for(lambda: self.state_of(name) == "running", timeout, f"{name} running")
        self.vm_pid(name)  # emberd_util's clean-up kills it even if emberd cannot


@pytest.fixture
def top(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("emberd needs root (ember-jailer, bind mounts)")
    return tmp_path


@pytest.fixture
def ed(top):
    e = Ctl(top)
    for n in ("a", "b"):
        vm_file(e, n)
    e.start()
    yield e
    e.close()


def read_all(s):
    """Everything s receives until the peer closes."""
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def raw(sock, data, timeout=30):
    """Send data on a fresh connection; (status, headers, body) of the reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(data)
        buf = read_all(s)
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body


def req(method, path, body=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
            f"\r\n").encode() + body


def fault(sock, data):
    st, h, body = raw(sock, data)
    return st, h, json.loads(body)["fault_message"]


# ---- reading: list, status, hosts, events, in both forms ----

def test_list_and_status(ed):
    ed.running("a")
    ed.running("b")
    out = ed.ok("list")
    lines = out.splitlines()
    assert re.match(r"NAME +STATE +HOST +PID +RESTARTS +UPTIME +SNAPSHOT +REASON$", lines[0])
    assert [l.split()[0] for l in lines[1:]] == ["a", "b"]
    assert all(l.split()[1] == "running" for l in lines[1:])
    # the columns line up: every row's STATE starts where the header's does
    col = lines[0].index("STATE")
    assert all(l[col:].startswith("running") for l in lines[1:])

    vms = ed.json("list")
    assert [v["name"] for v in vms] == ["a", "b"]
    assert all(v["state"] == "running" and v["pid"] > 0 for v in vms)

    one = ed.json("status", "a")
    assert one["name"] == "a" and one["file"].endswith("a.ini")
    detail = ed.ok("status", "a")
    assert re.search(r"^state +running$", detail, re.M)
    assert re.search(rf"^pid +{one['pid']}$", detail, re.M)

    st = ed.json("status")
    assert st["mode"] == "local" and st["vms"] == 2 and st["running"] == 2
    assert not st["fenced"]
    human = ed.ok("status")
    assert "local mode: 2 VMs, 2 running" in human.splitlines()[0]
    assert "NAME" in human.splitlines()[1]

    hosts = ed.json("hosts")
    assert len(hosts) == 1 and hosts[0]["name"] == st["host"]
    hh = ed.ok("hosts").splitlines()
    assert re.match(r"NAME +ALIVE +VMS +MEMORY +VCPUS$", hh[0])
    assert hh[1].split()[0] == st["host"]


def test_events_both_forms(ed):
    ed.running("a")
    ed.running("b")  # both started: no event comes by itself now
    doc = ed.json("events")
    kinds = [(e["vm"], e["kind"]) for e in doc["events"]]
    assert (None, "ready") in kinds
    assert ("a", "started") in kinds or ("a", "restored") in kinds
    assert doc["next"] == doc["events"][-1]["seq"]
    for e in doc["events"]:
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", e["time"])
    human = ed.ok("events").splitlines()
    assert len(human) == len(doc["events"])
    assert any(re.search(r"\ba +(started|restored) ", l) for l in human)
    later = ed.json("events", "--since", str(doc["next"]))
    assert all(e["seq"] > doc["next"] for e in later["events"])
    # a cursor from an earlier emberd (beyond the newest): from the oldest again
    again = ed.json("events", "--since", str(doc["next"] + 1000))
    assert again["events"][0]["seq"] == doc["events"][0]["seq"]


# ---- acting: start, stop, restart, snapshot, reload ----

def test_stop_start_restart_snapshot(ed):
    ed.running("a")
    assert ed.ok("stop", "a", "--grace", "2s").strip() == "stopped a"
    assert ed.state_of("a") == "stopped"
    r = ed.ctl("--json", "stop", "a")  # stopping a stopped VM: done, or a clear refusal
    assert r.returncode in (0, 1)
    assert ed.json("start", "a", "--boot") == {}
    ed.running("a")
    r = ed.ctl("start", "a")
    assert r.returncode == 1 and 'VM "a"' in r.stderr  # already running: 409

    # restart answers once a new ember runs (and stop once it is stopped, above)
    pid = ed.json("status", "a")["pid"]
    assert ed.ok("restart", "a").strip() == "restarted a"
    st = ed.json("status", "a")
    assert st["state"] in ("starting", "running") and st["pid"] not in (None, pid)
    ed.running("a")
    # so a stop and a start in a row just work
    ed.ok("stop", "b")
    ed.ok("start", "b")
    ed.running("b")

    out = ed.ok("snapshot", "a")
    m = re.match(r"snapshot of a: (\S+) \((\d+) ms\)$", out.strip())
    assert m and os.path.isdir(m.group(1)), out
    snap = ed.json("snapshot", "a")
    assert os.path.isdir(snap["dir"]) and snap["ms"] >= 0
    assert ed.json("status", "a")["snapshot"]["dir"] == snap["dir"]
    assert "ago" in [l for l in ed.ok("list").splitlines() if l.startswith("a ")][0]


def test_reload(ed):
    out = ed.ok("reload")
    assert out.strip() == "no change"
    vm_file(ed, "c")
    assert "added: c" in ed.ok("reload")
    assert "c" in [v["name"] for v in ed.json("list")]
    with open(os.path.join(ed.vm_dir, "d.ini"), "w") as f:
        f.write("[vm]\nmemory = 12Q\n")
    r = ed.ctl("reload")
    assert r.returncode == 1  # a refused file: scripts see it
    assert "d.ini" in r.stderr
    doc = json.loads(ed.ctl("--json", "reload").stdout)
    assert any(e["file"].endswith("d.ini") for e in doc["errors"])


def test_reload_autostarts(ed):
    vm_file(ed, "c")
    assert "added: c" in ed.ok("reload")
    ed.running("c", timeout=15)


def test_many_vms(ed):
    """More VMs than one reply of 64 KiB holds: emberctl pages through them."""
    names = [f"m{i:03d}" for i in range(300)]
    for n in names:
        ed.write_vm(n, kernel=guest("counter"), emberd={"autostart": "false"})
    assert len(ed.json("reload")["added"]) == 300
    vms = ed.json("list")
    assert [v["name"] for v in vms] == ["a", "b"] + names
    rows = ed.ok("list").splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["a", "b"] + names
    st, _, body = raw(ed.sock, req("GET", "/vms?after=m100&limit=3"))
    assert st == 200 and [v["name"] for v in json.loads(body)] == ["m101", "m102", "m103"]
    st, _, body = raw(ed.sock, req("GET", "/vms?after=zzz"))
    assert st == 200 and json.loads(body) == []
    st, _, msg = fault(ed.sock, req("GET", "/vms?after=a_b"))
    assert st == 400 and "after=" in msg


# ---- refusals: unknown VMs, usage, no emberd ----

def test_unknown_vm(ed):
    for args in (["status", "nope"], ["start", "nope"], ["stop", "nope"],
                 ["restart", "nope"], ["snapshot", "nope"], ["logs", "nope"]):
        for form in ([], ["--json"]):
            r = ed.ctl(*form, *args)
            assert r.returncode == 1, args
            assert r.stderr == 'emberctl: VM "nope": no such VM (known: a, b)\n', r.stderr
            assert r.stdout == ""


def test_usage(ed):
    for args, why in ((["frobnicate"], 'unknown command "frobnicate"'),
                      (["stop"], "stop: give a VM's name"),
                      (["stop", "a", "--grace", "soon"], "--grace soon"),
                      (["logs", "a", "--tail", "lots"], "--tail lots"),
                      ([], "give a command")):
        r = ed.ctl(*args)
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)
    r = ed.ctl("help")
    assert r.returncode == 0 and "usage: emberctl" in r.stdout


def test_emberd_not_running(tmp_path):
    sock = os.path.join(str(tmp_path), "none.sock")
    r = subprocess.run([EMBERCTL, "--sock", sock, "list"], capture_output=True, text=True)
    assert r.returncode == 3
    assert f"cannot reach emberd at {sock}" in r.stderr and "emberd runs" in r.stderr
    # $EMBERD_SOCK names it too
    r = subprocess.run([EMBERCTL, "status"], capture_output=True, text=True,
                       env={**os.environ, "EMBERD_SOCK": sock})
    assert r.returncode == 3 and sock in r.stderr
    # a stale socket file (nothing listens): the same
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()
    r = subprocess.run([EMBERCTL, "--sock", sock, "list"], capture_output=True, text=True)
    assert r.returncode == 3 and sock in r.stderr


def test_not_root(ed, tmp_path):
    """The socket is root's (0600): anyone else is told so, exit 3."""
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv(1) to run emberctl as another user")
    ctl = os.path.join(str(tmp_path), "emberctl-copy")
    shutil.copy(EMBERCTL, ctl)  # the build tree may be closed to nobody
    os.chmod(str(tmp_path), 0o755)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ctl,
                        "--sock", ed.sock, "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert r.stderr == (f"emberctl: cannot reach emberd at {ed.sock}: permission denied "
                        "(the socket is root's: run emberctl as root)\n")


# ---- the socket: mode, stale files, a second emberd ----

def test_socket(top):
    # a stale socket file from a crashed emberd is replaced
    e = Ctl(top)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(e.sock)
    s.close()
    try:
        e.start()
        assert os.stat(e.sock).st_mode & 0o777 == 0o600
        assert e.answers()
        # a second emberd on a socket that is served is refused, and says why
        r = subprocess.run([EMBERD, "--vm-dir", e.vm_dir, "--state-dir",
                            os.path.join(str(top), "state2"), "--sock", e.sock],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "another emberd serves it" in r.stderr
        assert e.answers()
        # killed (no clean-up of its own): the next emberd replaces the file
        e.kill()
        e.start()
        assert e.answers()
    finally:
        e.close()


# ---- raw requests: bad bodies, paths, methods, sizes ----

def test_bad_requests(ed):
    s = ed.sock
    st, _, msg = fault(s, req("PUT", "/vms/a/start", b'{"how": boot}'))
    assert st == 400 and msg.startswith("bad JSON at line 1, column 12")
    st, _, msg = fault(s, req("PUT", "/vms/a/start", b'{\n "how":\n  "boot",\n}'))
    assert st == 400 and "bad JSON at line 4" in msg
    st, _, msg = fault(s, req("PUT", "/vms/a/stop", b'{"grace_ms": "5s"}'))
    assert st == 400 and msg == '"grace_ms": expected a non-negative integer, got a string'
    st, _, msg = fault(s, req("PUT", "/vms/a/start", b'{"how": "fly"}'))
    assert st == 400 and '"how": "fly"' in msg
    st, _, msg = fault(s, req("PUT", "/vms/a/start", b'{"speed": 1}'))
    assert st == 400 and 'unknown field "speed"' in msg
    st, _, msg = fault(s, req("PUT", "/vms/a/start", b'[]'))
    assert st == 400 and "expected a JSON object" in msg
    st, _, msg = fault(s, req("GET", "/vms/nope"))
    assert st == 404 and msg == 'VM "nope": no such VM (known: a, b)'
    st, _, msg = fault(s, req("GET", "/frobnicate"))
    assert st == 404 and "no such path: /frobnicate" in msg
    st, h, msg = fault(s, req("DELETE", "/vms/a"))
    assert st == 405 and h["allow"] == "GET" and "method not allowed" in msg
    st, h, _ = fault(s, req("GET", "/vms/a/start"))
    assert st == 405 and h["allow"] == "PUT"
    st, _, msg = fault(s, req("GET", "/vms/a%2Fb"))
    assert st == 400 and "VM name" in msg
    st, _, msg = fault(s, req("GET", "/events?since=x"))
    assert st == 400 and "since=x" in msg
    st, _, msg = fault(s, req("GET", "/events?wait_ms=99999"))
    assert st == 400 and "at most 30000" in msg
    st, _, msg = fault(s, req("GET", "/vms", b'{"x": 1}'))
    assert st == 400 and "takes no body" in msg
    st, _, msg = fault(s, b"NONSENSE\r\n\r\n")
    assert st == 400 and "malformed HTTP request" in msg
    st, _, msg = fault(s, req("PUT", "/vms/a/stop", b"x" * 70000))
    assert st == 413 and "64 KiB" in msg
    st, _, msg = fault(s, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert st in (400, 413)
    # every reply closes its connection and names its length
    st, h, body = raw(s, req("GET", "/status"))
    assert st == 200 and h["connection"] == "close"
    assert int(h["content-length"]) == len(body)
    assert h["content-type"] == "application/json"


def test_hostile_bytes(ed):
    """Garbage, cut requests and odd-but-valid ones: each gets an answer or a
    close, and emberd serves on."""
    import random
    rnd = random.Random(15)
    cases = [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 3000)))
             for _ in range(100)]
    cases += [req("GET", "/vms")[:n] for n in range(0, 30, 3)]
    cases += [req("PUT", "/vms/a/stop", b'{"grace_ms": 1' + b"0" * 30 + b"}"),
              req("GET", "/vms/" + "a" * 3000),
              req("GET", "/events?since=1&since=2&wait_ms=0&&&"),
              b"GET /vms HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
              b"GET /vms HTTP/1.1\r\n" + b"X: y\r\n" * 3000 + b"\r\n",
              req("PUT", "/vms/a/start", "{\"how\": \"\u00e9\"}".encode()),
              req("PUT", "/vms/a/start", b'{"how": "\xff"}')]
    for data in cases:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        try:
            s.connect(ed.sock)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # a cut request: the peer's end, not a stall
            reply = read_all(s)
        except (BrokenPipeError, ConnectionResetError):
            reply = b""
        finally:
            s.close()
        assert reply == b"" or re.match(rb"HTTP/1.1 \d{3} ", reply), (data[:80], reply[:200])
        assert ed.proc.poll() is None, ed.stderr()
    assert [v["name"] for v in ed.json("list")] == ["a", "b"]


def test_stalled_client(ed):
    """A client that sends half a request and stalls holds its own
    connection only: another client's request is answered meanwhile, and
    the stalled one is dropped (408) after emberd's request clock."""
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(ed.sock)
    stalled.sendall(b"PUT /vms/a/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    quiet = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    quiet.connect(ed.sock)  # connects and sends nothing at all
    try:
        assert [v["name"] for v in ed.json("list")] == ["a", "b"]
        # both still waiting (not answered, not closed) when the other was served
        for c in (stalled, quiet):
            c.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.recv(1)
            c.setblocking(True)
        stalled.settimeout(60)
        reply = read_all(stalled)
        assert reply.startswith(b"HTTP/1.1 408 ")
    finally:
        stalled.close()
        quiet.close()


def test_out_of_descriptors(ed):
    """emberd out of file descriptors refuses nobody for good: once
    clients let go, it accepts again."""
    if not shutil.which("prlimit"):
        pytest.skip("no prlimit(1) to lower emberd's descriptor limit")
    ed.running("a")
    ed.running("b")
    used = len(os.listdir(f"/proc/{ed.proc.pid}/fd"))
    subprocess.run(["prlimit", f"--pid={ed.proc.pid}", f"--nofile={used + 4}"], check=True)
    try:
        held = []
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(ed.sock)
            held.append(s)
        wait_for(lambda: len(os.listdir(f"/proc/{ed.proc.pid}/fd")) >= used + 4, 30,
                 "emberd at its descriptor limit")
        for s in held:
            s.close()
        assert [v["name"] for v in ed.json("list")] == ["a", "b"]
    finally:
        subprocess.run(["prlimit", f"--pid={ed.proc.pid}", "--nofile=65536"])


def test_long_poll(ed):
    ed.running("a")
    ed.running("b")  # both started: no event comes by itself now
    nxt = ed.json("events")["next"]
    # nothing happens: an empty page when wait_ms ends
    st, _, body = raw(ed.sock, req("GET", f"/events?since={nxt}&wait_ms=300"))
    assert st == 200 and json.loads(body) == {"next": nxt, "events": []}
    # something happens while a poll waits: it is answered with it
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(ed.sock)
    s.sendall(req("GET", f"/events?since={nxt}&wait_ms=30000"))
    time.sleep(0.2)
    ed.ok("stop", "a", "--grace", "0")
    buf = read_all(s)
    s.close()
    page = json.loads(buf.partition(b"\r\n\r\n")[2])
    assert page["events"] and page["events"][0]["seq"] == nxt + 1
    assert page["next"] == page["events"][-1]["seq"]
    # a client that half-closes (shutdown(SHUT_WR)) still gets its answer
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(ed.sock)
    s.sendall(req("GET", f"/events?since={page['next']}&wait_ms=30000"))
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.2)
    ed.ok("start", "a")
    half = json.loads(read_all(s).partition(b"\r\n\r\n")[2])
    s.close()
    assert half["events"] and half["events"][0]["seq"] == page["next"] + 1
    page = half
    ed.ok("stop", "a")
    # a client that hangs up on its poll costs nothing
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(ed.sock)
    s.sendall(req("GET", f"/events?since={page['next']}&wait_ms=30000"))
    s.close()
    ed.ok("start", "a")
    ed.running("a")


def test_events_follow_sees_restart(ed):
    ed.running("a")
    nxt = ed.json("events")["next"]
    for form in ([], ["--json"]):
        f = subprocess.Popen([EMBERCTL, "--sock", ed.sock, *form, "events", "--since",
                              str(nxt), "--follow"], stdout=subprocess.PIPE, text=True)
        try:
            ed.ok("restart", "a")
            seen = []
            end = time.monotonic() + 90
            while time.monotonic() < end:
                line = f.stdout.readline()
                assert line, "emberctl events --follow ended"
                seen.append(line)
                if form:
                    ev = json.loads(line)  # one JSON object per line
                    if ev["vm"] == "a" and ev["kind"] in ("restarted", "restored", "started"):
                        nxt = ev["seq"]
                        break
                elif re.search(r"\ba +(restarted|restored|started) ", line):
                    break
            else:
                pytest.fail(f"no restart seen: {seen}")
        finally:
            f.terminate()
            f.wait()
        ed.running("a")
        nxt = ed.json("events")["next"]


def test_logs(ed):
    ed.running("a")
    wait_for(lambda: "count 3" in ed.ok("logs", "a"), 60, "the guest's console")
    out = ed.ok("logs", "a", "--tail", "20")
    assert 0 < len(out.encode()) <= 20
    doc = ed.json("logs", "a", "--tail", "64")
    assert doc["to"] - doc["from"] <= 64 and doc["to"] <= doc["size"]
    assert "count" in ed.ok("logs", "a", "--tail", "1M")
    st, h, body = raw(ed.sock, req("GET", "/vms/a/logs?tail=100"))
    assert st == 200 and h["content-type"].startswith("text/plain") and len(body) <= 100
    # --follow goes on with what the guest writes next
    f = subprocess.Popen([EMBERCTL, "--sock", ed.sock, "logs", "a", "--tail", "0", "--follow"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        end = time.monotonic() + 60
        while "count" not in line and time.monotonic() < end:
            line = f.stdout.readline()
        assert re.match(r"count \d+", line)
        n = int(line.split()[1])
        nxt = f.stdout.readline()
        assert nxt.strip() == f"count {n + 1}"
    finally:
        f.terminate()
        f.wait()


def test_ember_ctl(ed):
    r = subprocess.run([EMBER, "ctl", "--sock", ed.sock, "list"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("NAME")
    r = subprocess.run([EMBER, "ctl", "--sock", ed.sock, "status", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and 'VM "nope"' in r.stderr
    r = subprocess.run([EMBER, "help", "ctl"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: emberctl" in r.stdout
