"""Helpers for live moves between emberd hosts (test_emberd_move.py and
tests/bench/bench_move.py): a cluster of three emberd hosts
(etcd_util.Cluster) joined to each other by a bridge in a namespace of
their own (the migration LAN), each listening for moves with a
pre-shared key; a checker that asks ember whether it runs its VM; the
control API with a body."""
import http.client
import json
import os
import socket
import subprocess
import time

import etcd_util

PORT = 7700
EMBERCTL = os.path.join(etcd_util.BUILD, "emberctl")


class _Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=2.0)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


# a source's migration phases in which its vCPUs are stopped for good, or
# until the copy ends (docs/migration.md); its GET / may still say Running
SRC_STOPPED = {"stop-and-copy", "handover", "handover-unknown", "completed"}


def _get(pid, path):
    c = _Unix(f"/proc/{pid}/root/api.sock")
    try:
        c.request("GET", path)
        return json.loads(c.getresponse().read())
    finally:
        c.close()


def ember_runs(pid, unknown=True):
    """Whether ember's own API says its VM runs: GET / "state" is
    "Running" (a fresh receiving ember is "Not started", a held target
    "Paused") and it is not a migration source past its pause (GET
    /migration).  unknown when it does not answer in time."""
    if _state(pid).startswith(("Z", "X", "gone")):
        return False  # exited: a zombie runs nothing
    try:
        if _get(pid, "/").get("state") != "Running":
            return False
        m = _get(pid, "/migration")
        return not (m.get("role") == "source" and m.get("phase") in SRC_STOPPED)
    except (ConnectionRefusedError, FileNotFoundError):
        # its API is closed: the process is exiting (a source after GOGO
        # closes it as it exits; a live one never refuses)
        return False
    except (OSError, ValueError, http.client.HTTPException):
        # (2 s: an ember tearing a VM down after its hand-over answers no
        # more; by then it is gone)
        if _state(pid).startswith(("Z", "X", "gone")):
            return False  # it exited while we asked
        return unknown  # no answer in time: the checker counts it as running


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.split(None, 1)[1].strip() for line in f
                            if line.startswith(("State", "PPid")))
    except OSError:
        return "gone"


class MoveChecker(etcd_util.Checker):
    """etcd_util.Checker, counting only embers that run their VM; what
    it saw of each double is kept in seen (for the failure message)."""

    seen = []

    def _run(self):
        real = etcd_util.ember_procs

        def procs():
            ps = real()
            roots = {}
            for pid, root in ps.items():
                for h in self.hosts:
                    vm = h.vm_of_root(root)
                    if vm:
                        roots.setdefault(vm, []).append(pid)
            # only a VM seen twice needs asking (the API costs a connect)
            out = {pid: root for pid, root in ps.items()
                   if not any(pid in p and len(p) > 1 and not ember_runs(pid)
                              for p in roots.values())}
            for vm, p in roots.items():
                if len([x for x in p if x in out]) > 1:
                    self.seen.append((time.monotonic(), vm, [(x, ps[x], _state(x)) for x in p]))
            return out

        etcd_util.ember_procs = procs
        try:
            super()._run()
        finally:
            etcd_util.ember_procs = real


def lan_up(c):
    """A bridge in a namespace of its own, a veth from each host's
    namespace into it: the hosts reach each other at 10.233.X.(i+1)."""
    octet = c.net.octet
    lan = f"{c.net.ns[0]}-lan"
    etcd_util.ip("netns", "add", lan)
    c.lan = lan
    etcd_util.ip("link", "add", "br0", "type", "bridge", ns=lan)
    etcd_util.ip("link", "set", "br0", "up", ns=lan)
    addrs = []
    for i, ns in enumerate(c.net.ns):
        a, b = f"mvl{i}", f"mvh{i}"
        etcd_util.ip("link", "add", a, "type", "veth", "peer", "name", b, "netns", ns, ns=lan)
        etcd_util.ip("link", "set", a, "master", "br0", ns=lan)
        etcd_util.ip("link", "set", a, "up", ns=lan)
        addr = f"10.233.{octet}.{i + 1}"
        etcd_util.ip("addr", "add", addr + "/24", "dev", b, ns=ns)
        etcd_util.ip("link", "set", b, "up", ns=ns)
        addrs.append(addr)
    return addrs


def start_host(c, i, addrs, crash=None):
    env_was = os.environ.pop("EMBERD_TEST_CRASH", None)
    if crash:
        os.environ["EMBERD_TEST_CRASH"] = crash
    try:
        c.hosts[i].start(c.endpoints(i), "--migrate-listen", f"{addrs[i]}:{PORT}",
                         "--migrate-psk", c.psk)
    finally:
        os.environ.pop("EMBERD_TEST_CRASH", None)
        if env_was is not None:
            os.environ["EMBERD_TEST_CRASH"] = env_was


def make(tmp, crash=None, n_hosts=3):
    """The cluster under tmp/m<pid> (so that the jail paths, which
    etcd_util's cleanup matches by their last folders, differ from any
    other test session's)."""
    base = os.path.join(str(tmp), f"m{os.getpid()}")
    os.makedirs(base, exist_ok=True)
    c = etcd_util.Cluster(base, n_hosts=n_hosts)
    c.checker = MoveChecker(c.hosts)
    c.lan = None
    c.psk = os.path.join(base, "move.psk")
    with open(os.open(c.psk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("ember-migrate:" + os.urandom(32).hex() + "\n")
    try:
        c.up()
        addrs = lan_up(c)
    except Exception:
        close(c)
        raise
    c.addrs = addrs
    c.crash = crash
    return c


def close(c):
    c.close()
    if c.lan:
        etcd_util.ip("netns", "del", c.lan, check=False)


def api(h, method, path, body=None):
    cmd = ["curl", "-s", "-m", "20", "-X", method, "-w", "\n%{http_code}",
           "--unix-socket", h.sock, "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    out, _, code = r.stdout.rpartition("\n")
    try:
        return int(code or 0), json.loads(out) if out else None
    except ValueError:
        return int(code or 0), out
