"""etcd and network namespaces for emberd's cluster tests.

Etcd(...) runs one member on loopback, EtcdCluster(...) three, each with
its data on tmpfs (/dev/shm) and the flags the design names
(--heartbeat-interval 50 --election-timeout 500).  Net(...) makes one
network namespace per emberd "host", joined to the root namespace (where
etcd runs) by a veth pair: 10.232.X.(4i+1)/30 on the etcd side, .(4i+2)
inside namespace i, so a partition is `ip link set <veth> down`.  Names
carry the pid so parallel runs do not clash; everything is removed by
close() even after a failure.  Only loopback and addresses inside these
namespaces ever see traffic."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500",
         "--log-level", "warn", "--logger", "zap"]


def etcd_missing():
    """Why etcd cannot run here, or None."""
    if not os.path.exists(ETCD):
        return "no etcd binary (apt-get install etcd-server)"
    return None


def netns_missing():
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no ip(8)"
    name = f"edprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        return f"ip netns add: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def free_port(addr="127.0.0.1"):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def tmpfs_dir(tag):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
    d = os.path.join(base, f"emberd-etcd-{os.getpid()}-{tag}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def gateway(endpoint, path, body, timeout=2.0):
    """POST body (a dict) to etcd's JSON gateway; the reply's JSON."""
    req = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode().splitlines()[0])


def wait_ready(endpoint, timeout=20.0):
    """Until a range through endpoint succeeds (the member has a leader)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            gateway(endpoint, "/v3/kv/range", {"key": "AA=="}, timeout=1.0)
            return
        except Exception as e:  # noqa: BLE001 - anything: not ready yet
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"etcd at {endpoint} not ready in {timeout} s: {last}")


class Member:
    def __init__(self, name, data, client_addrs, client_port, peer_port, cluster, state="new"):
        self.name = name
        self.data = data
        self.client_port = client_port
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.client_urls = ",".join(f"http://{a}:{client_port}" for a in client_addrs)
        self.args = [ETCD, "--name", name, "--data-dir", data,
                     "--listen-client-urls", self.client_urls,
                     "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
                     "--listen-peer-urls", self.peer_url,
                     "--initial-advertise-peer-urls", self.peer_url,
                     "--initial-cluster", cluster,
                     "--initial-cluster-state", state,
                     "--initial-cluster-token", f"ember-{os.getpid()}"] + FLAGS
        self.log = open(os.path.join(data, "..", f"{name}.log"), "ab")
        self.proc = None

    @property
    def local(self):
        return f"http://127.0.0.1:{self.client_port}"

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        return gateway(self.local, "/v3/maintenance/status", {}, timeout=1.0)


class EtcdCluster:
    """n members; clients reach each on every address in client_addrs
    (loopback always) at its own port."""

    def __init__(self, n=1, client_addrs=()):
        self.tag = f"c{n}"
        self.dir = tmpfs_dir(self.tag)
        addrs = ["127.0.0.1"] + list(client_addrs)
        ports = [(free_port(), free_port()) for _ in range(n)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p[1]}" for i, p in enumerate(ports))
        self.members = []
        for i, (cp, pp) in enumerate(ports):
            d = os.path.join(self.dir, f"m{i}")
            os.makedirs(d)
            self.members.append(Member(f"m{i}", d, addrs, cp, pp, cluster))

    def start(self, wait=True):
        for m in self.members:
            m.start()
        if wait:
            for m in self.members:
                wait_ready(m.local)
        return self

    def endpoints(self, addr="127.0.0.1"):
        """Every member's URL at addr, comma-separated (for --etcd)."""
        return ",".join(f"http://{addr}:{m.client_port}" for m in self.members)

    def leader(self, timeout=10.0):
        """The member that is the raft leader now."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                if not m.alive():
                    continue
                try:
                    st = m.status()
                except Exception:  # noqa: BLE001 - that member cannot answer now
                    continue
                lid = st.get("leader")
                for cand in self.members:
                    try:
                        if cand.alive() and cand.status()["header"]["member_id"] == lid:
                            return cand
                    except Exception:  # noqa: BLE001
                        continue
            time.sleep(0.05)
        raise TimeoutError("no etcd leader")

    def get_prefix(self, prefix):
        """{key: value} under prefix, through any live member."""
        import base64
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        b = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        for m in self.members:
            if not m.alive():
                continue
            try:
                r = gateway(m.local, "/v3/kv/range", {"key": b(prefix), "range_end": b(end)})
            except Exception:  # noqa: BLE001
                continue
            return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                    for kv in r.get("kvs", [])}
        raise RuntimeError("no etcd member answers")

    def close(self):
        for m in self.members:
            m.kill9()
            m.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def ip(*args, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns, "ip"] if ns else ["ip"]) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


class Net:
    """n namespaces, each joined to the root namespace by a veth pair."""

    def __init__(self, n):
        pid = os.getpid()
        self.octet = 16 + pid % 200
        self.tag = pid % 100000
        self.ns = [f"emberd-{pid}-h{i}" for i in range(n)]
        self.veth = [f"ed{self.tag}h{i}" for i in range(n)]    # etcd side
        self.peer = [f"ed{self.tag}p{i}" for i in range(n)]    # inside the namespace
        self.made = []

    def etcd_addr(self, i):
        return f"10.232.{self.octet}.{4 * i + 1}"

    def host_addr(self, i):
        return f"10.232.{self.octet}.{4 * i + 2}"

    def etcd_addrs(self):
        return [self.etcd_addr(i) for i in range(len(self.ns))]

    def up(self):
        for i, ns in enumerate(self.ns):
            ip("netns", "add", ns)
            self.made.append(i)
            ip("link", "add", self.veth[i], "type", "veth", "peer", "name", self.peer[i])
            ip("link", "set", self.peer[i], "netns", ns)
            ip("addr", "add", self.etcd_addr(i) + "/30", "dev", self.veth[i])
            ip("link", "set", self.veth[i], "up")
            ip("addr", "add", self.host_addr(i) + "/30", "dev", self.peer[i], ns=ns)
            ip("link", "set", self.peer[i], "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)
        return self

    def partition(self, i):
        ip("link", "set", self.veth[i], "down")

    def heal(self, i):
        ip("link", "set", self.veth[i], "up")

    def exec_prefix(self, i):
        return ["ip", "netns", "exec", self.ns[i]]

    def close(self):
        for i in self.made:
            ip("link", "del", self.veth[i], check=False)
            ip("netns", "del", self.ns[i], check=False)
        self.made = []
