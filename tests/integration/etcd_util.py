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

from emberd_util import api_call, unmount_below  # the core's harness (needs pytest)

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


def wait_until(cond, timeout, period=0.02):
    """cond()'s first true value within timeout s, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(period)
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


# ---- emberd hosts in namespaces, and the checker ----

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.dirname(os.path.abspath(os.environ.get("EMBER", os.path.join(ROOT, "build", "ember"))))
EMBERD = os.path.abspath(os.environ.get("EMBERD", os.path.join(BUILD, "emberd")))
UP_KINDS = ("started", "restored", "restarted", "resumed")


def jail_root(pid):
    """Where a jailed process's root comes from: the mount at "/" in its
    mount namespace, as its file system names it (readlink of
    /proc/PID/root says only "/" after the jail's pivot_root)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == "/":
                return fields[3].replace("\\040", " ")
    return None


def ember_procs():
    """{pid: root} of every running ember (comm "ember")."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "ember":
                    continue
            root = jail_root(d)
        except OSError:
            continue  # gone, or a zombie: not running
        if root:
            out[int(d)] = root
    return out


class Host:
    """One emberd "host": its own state folder, jail base and socket; the
    VM folder and snapshots shared.  Runs inside namespace ns when given."""

    def __init__(self, base, name, vm_dir, snap_dir, ns=None):
        self.name = name
        self.dir = os.path.join(base, name)
        self.state = os.path.join(self.dir, "state")
        self.jail = os.path.join(self.dir, "jail")
        self.sock = os.path.join(self.dir, "emberd.sock")
        self.vm_dir, self.snap_dir, self.ns = vm_dir, snap_dir, ns
        os.makedirs(self.jail, exist_ok=True)
        self.proc = None
        self.log = None

    def start(self, etcd, *more, ttl=2, grace="0"):
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        cmd = prefix + [EMBERD, "--vm-dir", self.vm_dir, "--state-dir", self.state,
                        "--snap-dir", self.snap_dir, "--sock", self.sock, "--host", self.name,
                        "--jail-base", self.jail, "--ember", os.path.join(BUILD, "ember"),
                        "--jailer", os.path.join(BUILD, "ember-jailer"),
                        "--etcd", etcd, "--ttl", str(ttl), "--grace", grace] + list(more)
        self.log = open(os.path.join(self.dir, "emberd.stderr"), "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def events(self):
        p = os.path.join(self.state, "events.log")
        try:
            with open(p) as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "emberd.stderr"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def api(self, method, path):
        """(HTTP status, JSON) from its control socket."""
        return api_call(self.sock, method, path, timeout=10)

    def vm_of_root(self, root):
        """The VM name a jailed ember's root (JAIL/ember/VM/root, as its
        file system names it: see jail_root) belongs to, or None."""
        tail = "/".join(os.path.realpath(self.jail).split("/")[-3:]) + "/ember/"
        i = root.find("/" + tail)
        if i < 0:
            return None
        parts = root[i + 1 + len(tail):].split("/")
        return parts[0] if len(parts) == 2 and parts[1] == "root" else None

    def close(self):
        self.kill9()
        for pid, root in ember_procs().items():
            if self.vm_of_root(root):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.log:
            self.log.close()
        unmount_below(self.jail)


class Checker:
    """Polls every host's embers every 10 ms in a thread (never asking
    emberd): which VM runs under which host's jail.  Any VM under two
    hosts at once is a violation."""

    def __init__(self, hosts, period=0.01):
        import threading
        self.hosts = hosts
        self.period = period
        self.where = {}        # vm -> set of hosts now
        self.first_on = {}     # (vm, host) -> monotonic s when first seen there
        self.violations = []   # (monotonic s, vm, hosts)
        self.appeared = []     # (monotonic s, vm, host): began running there (scan to scan)
        self.scans = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            now = time.monotonic()
            where = {}
            for _, root in ember_procs().items():
                for h in self.hosts:
                    vm = h.vm_of_root(root)
                    if vm:
                        where.setdefault(vm, set()).add(h.name)
                        self.first_on.setdefault((vm, h.name), now)
            for vm, hs in where.items():
                for h in hs - self.where.get(vm, set()):
                    self.appeared.append((now, vm, h))
                if len(hs) > 1:
                    self.violations.append((now, vm, sorted(hs)))
            self.where = where
            self.scans += 1
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self._t.join()

    def appeared_since(self, t0, vm, not_on=None):
        """When vm was first seen running on a host (not not_on) at or
        after monotonic t0, or None."""
        for t, v, h in list(self.appeared):
            if t >= t0 and v == vm and h != not_on:
                return t
        return None

    def running(self):
        """{vm: host} for VMs running on exactly one host now."""
        return {vm: next(iter(hs)) for vm, hs in self.where.items() if len(hs) == 1}

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond(self.running()):
                return self.running()
            time.sleep(0.02)
        raise AssertionError(f"{what}: not within {timeout} s; running: {self.running()}")


class Cluster:
    """etcd (n_etcd members in the root namespace) + n_hosts emberd hosts,
    each in its own namespace joined by a veth pair; a shared VM folder and
    snapshot folder (the "shared storage")."""

    def __init__(self, base, n_hosts=3, n_etcd=1):
        self.base = base
        self.net = Net(n_hosts)
        self.vm_dir = os.path.join(base, "vms")
        self.snap_dir = os.path.join(base, "snapshots")
        os.makedirs(self.vm_dir, exist_ok=True)
        os.makedirs(self.snap_dir, exist_ok=True)
        self.etcd = None
        self.n_etcd = n_etcd
        self.hosts = [Host(base, f"h{i}", self.vm_dir, self.snap_dir, self.net.ns[i])
                      for i in range(n_hosts)]
        self.checker = Checker(self.hosts)

    def up(self, start_etcd=True):
        self.net.up()
        self.etcd = EtcdCluster(self.n_etcd, client_addrs=self.net.etcd_addrs())
        if start_etcd:
            self.etcd.start()
        self.checker.start()
        return self

    def endpoints(self, i):
        """What host i's --etcd is: every member, at host i's veth address."""
        return self.etcd.endpoints(self.net.etcd_addr(i))

    def start_hosts(self, *more, ttl=2, grace="0"):
        for i, h in enumerate(self.hosts):
            h.start(self.endpoints(i), *more, ttl=ttl, grace=grace)

    def write_vm(self, name, kernel, memory="16M", cmdline=None, emberd=None, extra_vm=None):
        lines = ["[vm]", f"kernel = {kernel}", f"memory = {memory}"]
        if cmdline:
            lines.append(f"cmdline = {cmdline}")
        lines += [f"{k} = {v}" for k, v in (extra_vm or {}).items()]
        if emberd:
            lines.append("[emberd]")
            lines += [f"{k} = {v}" for k, v in emberd.items()]
        with open(os.path.join(self.vm_dir, name + ".ini"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def host(self, name):
        return next(h for h in self.hosts if h.name == name)

    def events(self, kinds=None):
        """Every host's events, by mono_ms."""
        evs = [e for h in self.hosts for e in h.events() if kinds is None or e["kind"] in kinds]
        return sorted(evs, key=lambda e: e.get("mono_ms", 0))

    def diagnose(self):
        out = []
        for h in self.hosts:
            out.append(f"==== {h.name} stderr (tail)\n" + h.stderr()[-3000:])
        return "\n".join(out)

    def close(self):
        try:
            self.checker.stop()
        except Exception:  # noqa: BLE001 - never started
            pass
        for h in self.hosts:
            h.close()
        if self.etcd:
            self.etcd.close()
        self.net.close()
