"""emberd's metrics and dashboard (docs/ha.md "Metrics and dashboard") with
the real consumers: Debian's Prometheus scrapes emberd's /metrics (its own
temp config and storage, on loopback) and its query API must show the VMs
and a restart counter going up after a VM's ember is killed; promtool
checks the exposition text; headless Chromium (through chromedriver and
Debian's python3-selenium) loads the dashboard from a 3-host cluster
(network namespaces + etcd, as test_emberd_cluster.py) and must show every
host with its VMs, then follow a host's death and a maintenance action
without a reload, and show its error banner once emberd is gone; there
Prometheus scrapes all three hosts and counts the failovers."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import etcd_util
from conftest import guest, needs_kvm
from emberd_util import EMBERD, Emberd, needs_root

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def http(url, method="GET", body=None, timeout=10, headers=None):
    """(status, body text) of one request."""
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def halt(ed_or_cluster, name, **emberd):
    """An idle guest (hlt under the in-kernel irqchip)."""
    if isinstance(ed_or_cluster, Emberd):
        ed_or_cluster.write_vm(name, guest("halt"), memory="16M",
                               extra={"vm": {"kernel": guest("halt"), "memory": "16M",
                                             "irqchip": "on"}},
                               emberd=emberd or None)
    else:
        ed_or_cluster.write_vm(name, guest("halt"), extra_vm={"irqchip": "on"},
                               emberd=emberd or None)


class Prometheus:
    """Debian's prometheus with a temp config scraping targets every 1 s."""

    def __init__(self, base, targets):
        self.dir = os.path.join(base, "prometheus")
        os.makedirs(os.path.join(self.dir, "data"))
        self.port = etcd_util.free_port()
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: emberd\n    scrape_timeout: 1s\n"
                    "    static_configs:\n      - targets: [" +
                    ", ".join(f"'{t}'" for t in targets) + "]\n")
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file", cfg, "--storage.tsdb.path",
             os.path.join(self.dir, "data"), "--web.listen-address", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def query(self, q):
        """The instant query's result vector: [(labels, value)]."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            st, body = http(url, timeout=5)
        except OSError:
            return []
        if st != 200:
            return []
        data = json.loads(body)["data"]["result"]
        return [(r["metric"], float(r["value"][1])) for r in data]

    def wait(self, what, q, cond, timeout=90):
        last = []

        def ok():
            last[:] = self.query(q)
            return cond(last)
        if etcd_util.wait_until(ok, timeout, 0.5):
            return last
        with open(os.path.join(self.dir, "log")) as f:
            log = f.read()[-2000:]
        targets = http(f"http://127.0.0.1:{self.port}/api/v1/targets")[1][:2000]
        pytest.fail(f"Prometheus: {what}: not within {timeout} s; {q} = {last}\n"
                    f"targets: {targets}\nlog: {log}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@needs_kvm
@needs_root
@pytest.mark.skipif(not PROMETHEUS, reason="no prometheus (apt-get install prometheus)")
def test_prometheus_scrapes_vms_and_restarts(tmp_path):
    port = etcd_util.free_port()
    addr = f"127.0.0.1:{port}"
    ed = Emberd(tmp_path, args=["--http", addr, "--load-interval", "500ms"])
    prom = None
    try:
        # m1 busy (a counter that spins between its lines: its CPU is measured),
        # m2 idle
        ed.write_vm("m1", guest("counter"), cmdline="spin=20000000", memory="16M",
                    emberd={"restart": "always", "restart_delay": "0"})
        halt(ed, "m2", restart="always", restart_delay="0")
        ed.start()
        pid = ed.vm_pid("m1")
        ed.vm_pid("m2")
        # the exposition text itself: promtool's lint, the families we promise
        st, text = http(f"http://{addr}/metrics")
        assert st == 200, text
        if PROMTOOL:
            r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                               capture_output=True)
            assert r.returncode == 0, r.stdout + r.stderr + text
        for name in ("ember_host_vms", "ember_host_cpu_capacity_cores",
                     "ember_host_cpu_used_cores", "ember_host_memory_capacity_bytes",
                     "ember_host_memory_used_bytes", "ember_vm_up",
                     "ember_vm_cpu_seconds_total", "ember_vm_memory_rss_bytes",
                     "ember_vm_restarts_total", "ember_failovers_total",
                     "ember_migrations_total", "ember_migrations_in_progress",
                     "ember_cluster_imbalance", "ember_host_fenced", "ember_snapshots_total",
                     "ember_events_total"):
            assert f"# TYPE {name} " in text and f"# HELP {name} " in text, name
        # the dashboard's JSON: this host, both VMs
        st, body = http(f"http://{addr}/api/cluster")
        doc = json.loads(body)
        assert st == 200 and doc["mode"] == "local", body
        assert sorted(v["name"] for v in doc["hosts"][0]["vms"]) == ["m1", "m2"], body
        # read-mostly: no writes here, clear refusals
        assert http(f"http://{addr}/api/hosts/x/maintenance", "POST",
                    {"enter": True})[0] == 403
        assert http(f"http://{addr}/metrics", "POST", {})[0] == 405
        assert http(f"http://{addr}/nope")[0] == 404
        with urllib.request.urlopen(f"http://{addr}/", timeout=10) as r:
            assert r.status == 200 and "<title>ember cluster</title>" in r.read().decode()
            # nothing from elsewhere, never framed (its buttons)
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
            assert "unsafe-inline" not in csp and "'sha256-" in csp, csp

        prom = Prometheus(str(tmp_path), [addr])
        prom.wait("ember_host_vms = 2", "ember_host_vms",
                  lambda r: len(r) == 1 and r[0][1] == 2)
        prom.wait("ember_vm_up for m1 and m2", "ember_vm_up == 1",
                  lambda r: sorted(m["vm"] for m, _ in r) == ["m1", "m2"])
        prom.wait("CPU seconds counted", "ember_vm_cpu_seconds_total{vm='m1'}",
                  lambda r: len(r) == 1 and r[0][1] > 0)
        prom.wait("m1's demand measured", "ember_vm_cpu_used_cores{vm='m1'}",
                  lambda r: len(r) == 1 and r[0][1] > 0.05)
        prom.wait("the host's use is its VMs'", "ember_host_cpu_used_cores",
                  lambda r: len(r) == 1 and r[0][1] > 0.05)
        prom.wait("RSS seen", "ember_vm_memory_rss_bytes{vm='m1'}",
                  lambda r: len(r) == 1 and r[0][1] > 1 << 20)
        prom.wait("no restarts yet", "ember_vm_restarts_total{vm='m1'}",
                  lambda r: len(r) == 1 and r[0][1] == 0)
        mark = ed.last_seq()
        os.kill(pid, signal.SIGKILL)
        ed.wait_event("restarted", vm="m1", after=mark)
        prom.wait("m1's restart counted", "ember_vm_restarts_total{vm='m1'}",
                  lambda r: len(r) == 1 and r[0][1] >= 1)
        prom.wait("the exit counted by kind", "ember_events_total{kind='exited'}",
                  lambda r: len(r) == 1 and r[0][1] >= 1)
        prom.wait("m2 not restarted", "ember_vm_restarts_total{vm='m2'}",
                  lambda r: len(r) == 1 and r[0][1] == 0)
    finally:
        if prom:
            prom.close()
        ed.close()


@needs_root
def test_bad_http_address_refused(tmp_path):
    """--http and --load-interval: a bad value is named, and emberd exits."""
    base = [EMBERD, "--vm-dir", str(tmp_path), "--state-dir", str(tmp_path / "state"),
            "--sock", str(tmp_path / "s.sock"), "--jail-base", str(tmp_path / "jail")]
    busy = etcd_util.free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", busy))
        held.listen()
        for args, want in ((["--http", "nohost"], "give ADDR:PORT"),
                           (["--http", "127.0.0.1:99999"], "port must be 1..65535"),
                           (["--http", "not-an-ip:80"], "--http not-an-ip:80:"),
                           (["--http", f"127.0.0.1:{busy}"], "Address already in use"),
                           (["--load-interval", "10ms"], "100ms..1h")):
            r = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
            assert r.returncode != 0 and want in r.stderr, (args, r.returncode, r.stderr)


# ---- the dashboard in headless Chromium, over a 3-host cluster ----

def _browser_missing():
    if not (CHROMIUM and CHROMEDRIVER):
        return "no chromium / chromedriver (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no python3-selenium (apt-get install python3-selenium)"
    return None


def _cluster_missing():
    if os.geteuid() != 0:
        return "emberd needs root"
    if not os.path.exists(EMBERD):
        return f"{EMBERD} missing: run make all"
    return etcd_util.etcd_missing() or etcd_util.netns_missing()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions"):
        o.add_argument(a)
    try:
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    except Exception as e:  # noqa: BLE001 - any failure to start is a skip
        pytest.skip(f"headless chromium cannot start here: {e}")


PAGE_STATE = """
var out = {updates: Number(document.body.dataset.updates), marker: window.__marker || null,
           error: document.getElementById('error').className === 'shown'
                  ? document.getElementById('error').textContent : null, hosts: {}};
document.querySelectorAll('section.host').forEach(function (h) {
  out.hosts[h.dataset.host] = {
    dead: h.classList.contains('dead'), maint: h.classList.contains('maint'),
    vms: Array.prototype.map.call(h.querySelectorAll('li.vm'), function (v) {
      return [v.dataset.vm, v.dataset.state]; })};
});
return out;
"""


@needs_kvm
@pytest.mark.skipif(_cluster_missing() is not None, reason=_cluster_missing() or "")
@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_dashboard_in_chromium_follows_the_cluster(tmp_path):
    flags = os.statvfs(str(tmp_path)).f_flag
    if flags & (os.ST_NODEV | os.ST_NOEXEC):
        pytest.skip(f"{tmp_path} is nodev or noexec: the jails need exec and devices")
    c = etcd_util.Cluster(str(tmp_path), n_hosts=3)
    drv = prom = None
    try:
        c.up()
        names = ["d0", "d1", "d2", "d3"]
        for n in names:
            halt(c, n)
        halt(c, "d4", avoid_hosts="nohost")  # a file's rule for the rules table
        names.append("d4")
        port = 9120
        urls = {}
        for i, h in enumerate(c.hosts):
            a = c.net.host_addr(i)
            urls[h.name] = f"http://{a}:{port}/"
            h.start(c.endpoints(i), "--http", f"{a}:{port}", "--http-allow-actions",
                    "--load-interval", "500ms", ttl=2, grace="0")
        where = c.checker.wait(lambda r: all(n in r for n in names), 90, "VMs placed")
        if PROMETHEUS:  # every host scraped: the cluster's VMs, once each
            prom = Prometheus(str(tmp_path), [u[7:-1] for u in urls.values()])
            prom.wait("5 VMs over the hosts", "sum(ember_host_vms)",
                      lambda r: len(r) == 1 and r[0][1] == len(names))
            prom.wait("each VM up once", "ember_vm_up == 1",
                      lambda r: sorted(m["vm"] for m, _ in r) == sorted(names))
        drv = browser()
        drv.set_script_timeout(10)
        view = c.hosts[0]
        drv.get(urls[view.name])
        drv.execute_script("window.__marker = 'no reload';")

        def page_shows(cond, what, timeout=60):
            last = {}

            def ok():
                last.clear()
                last.update(drv.execute_script(PAGE_STATE))
                return cond(last)
            if etcd_util.wait_until(ok, timeout, 0.25):
                return last
            pytest.fail(f"the dashboard: {what}: not within {timeout} s; it shows {last}\n"
                        f"{c.diagnose()}")

        def as_running(vms):
            """The page shows each of vms running where its ember runs now
            (the checker's view, read at each poll: a host starved on this
            shared machine may fence and its VMs move meanwhile)."""
            def cond(s):
                now = c.checker.running()
                return s["marker"] == "no reload" and all(
                    vm in now and
                    dict(s["hosts"].get(now[vm], {}).get("vms", [])).get(vm) == "running"
                    for vm in vms)
            return cond

        s = page_shows(as_running(names), f"every VM on its host {where}")
        assert set(s["hosts"]) == {h.name for h in c.hosts}, s
        assert s["error"] is None, s
        # its inline style ran too (the CSP allows it by its hash, as the script)
        assert drv.execute_script("return getComputedStyle(document.querySelector('header'))"
                                  ".backgroundColor;") == "rgb(38, 50, 56)"
        # the JSON behind it names the same
        def doc_ok():
            d = json.loads(http(urls[view.name] + "api/cluster")[1])
            return d if (d["mode"] == "cluster" and d["etcd"]["ok"] and
                         all(h["alive"] and h["cpu_capacity_m"] > 0 for h in d["hosts"]) and
                         isinstance(d["imbalance"], float) and d["imbalance"] >= 0) else None
        assert etcd_util.wait_until(doc_ok, 30, 0.25), http(urls[view.name] + "api/cluster")

        def load_ok():  # load/<h> of every host; d0's entry where d0 runs now
            now, load = c.checker.running(), c.etcd.get_prefix("ember/load/")
            if set(load) != {f"ember/load/{h.name}" for h in c.hosts} or "d0" not in now:
                return None
            one = json.loads(load[f"ember/load/{now['d0']}"])
            return one if one["vms"].get("d0", {}).get("mem") == 16 << 20 else None
        assert etcd_util.wait_until(load_ok, 30, 0.25), c.etcd.get_prefix("ember/load/")

        # a rule put in etcd (one already kept: nothing for a balancer to do)
        # and a VM file's hosts list show in the rules table
        import base64
        b64 = lambda t: base64.b64encode(t.encode()).decode()  # noqa: E731
        etcd_util.gateway(c.etcd.members[0].local, "/v3/kv/put", {
            "key": b64("ember/rules/keep-off"),
            "value": b64(json.dumps({"kind": "must-not-run-on", "vms": ["d1"],
                                     "hosts": ["nohost"]}))})
        rules = lambda: drv.execute_script(  # noqa: E731
            "return Array.prototype.map.call(document.querySelectorAll('#rules tbody tr'),"
            " function (r) { return r.textContent; });")
        assert etcd_util.wait_until(
            lambda: any("keep-off" in r and "nohost" in r for r in rules()) and
            any("file:d4" in r and "must-not-run-on" in r for r in rules()), 30, 0.25), \
            f"rules not shown: {rules()}"

        # actions only as the page sends them: JSON, to this listener's own name
        # (a cross-site form post, a DNS-rebound name: refused, nothing written)
        act = urls[view.name] + f"api/hosts/{c.hosts[1].name}/maintenance"
        st, body = http(act, "POST", {"enter": True})
        assert st == 415 and "application/json" in body, body
        st, body = http(act, "POST", {"enter": True},
                        headers={"Content-Type": "application/json", "Host": "evil.example:9120"})
        assert st == 403 and "evil.example" in body, body
        st, body = http(act, "POST", {"enter": "yes"},
                        headers={"Content-Type": "application/json"})
        assert st == 400 and "enter" in json.loads(body)["fault_message"], body
        assert not c.etcd.get_prefix("ember/maint/")

        # maintenance from the page: the button puts maint/<h>, the card shows it
        target = c.hosts[1].name
        drv.find_element("css selector",
                         f"section.host[data-host='{target}'] button[data-action='enter']").click()
        page_shows(lambda s: s["hosts"].get(target, {}).get("maint"), f"{target} in maintenance")
        assert f"ember/maint/{target}" in c.etcd.get_prefix("ember/maint/")
        drv.find_element("css selector",
                         f"section.host[data-host='{target}'] button[data-action='exit']").click()
        page_shows(lambda s: not s["hosts"].get(target, {}).get("maint"), f"{target} back")

        # a host dies: its VMs show on the survivors, without a reload
        where = c.checker.running()
        victim = next(h for h in c.hosts[1:] if h.name in where.values())
        lost = [v for v, h in where.items() if h == victim.name]
        victim.kill9()
        after = c.checker.wait(lambda r: all(v in r and r[v] != victim.name for v in lost),
                               90, f"{lost} moved off {victim.name}")
        s = page_shows(as_running(lost), f"{lost} shown on their new hosts {after}")
        if prom:
            prom.wait("the failovers counted", "sum(ember_failovers_total)",
                      lambda r: len(r) == 1 and r[0][1] >= len(lost))
        page_shows(lambda s: victim.name not in s["hosts"] or s["hosts"][victim.name]["dead"],
                   f"{victim.name} shown down or gone")
        # the emberd behind the page goes away: the error banner says so
        view.kill9()
        page_shows(lambda s: s["error"] and "cannot reach emberd" in s["error"],
                   "an error banner", timeout=30)
    finally:
        if drv:
            drv.quit()
        if prom:
            prom.close()
        c.close()


@needs_kvm
@pytest.mark.skipif(_cluster_missing() is not None, reason=_cluster_missing() or "")
@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_dashboard_follows_a_live_move(tmp_path):
    """Once live moves exist (emberd-move's move_util and PUT
    /vms/NAME/migrate): the page shows the VM on its new host without a
    reload, and the target counts the migration."""
    mu = pytest.importorskip("move_util", reason="no live moves on this branch (emberd-move)")
    flags = os.statvfs(str(tmp_path)).f_flag
    if flags & (os.ST_NODEV | os.ST_NOEXEC):
        pytest.skip(f"{tmp_path} is nodev or noexec: the jails need exec and devices")
    c = mu.make(tmp_path, n_hosts=2)
    drv = None
    try:
        c.write_vm("mv0", guest("halt"), extra_vm={"irqchip": "on"})
        urls = []
        for i, h in enumerate(c.hosts):
            a = f"{c.net.host_addr(i)}:9120"
            urls.append(f"http://{a}/")
            h.start(c.endpoints(i), "--migrate-listen", f"{c.addrs[i]}:{mu.PORT}",
                    "--migrate-psk", c.psk, "--http", a, "--load-interval", "500ms")
        c.checker.wait(lambda r: "mv0" in r, 60, "mv0 running")
        src = c.host(c.checker.running()["mv0"])
        dst = next(h for h in c.hosts if h is not src)
        drv = browser()
        drv.get(urls[0])
        drv.execute_script("window.__marker = 'no reload';")

        def shows_on(host):
            s = drv.execute_script(PAGE_STATE)
            return s["marker"] == "no reload" and \
                dict(s["hosts"].get(host, {}).get("vms", [])).get("mv0") == "running"
        assert etcd_util.wait_until(lambda: shows_on(src.name), 60, 0.25), \
            drv.execute_script(PAGE_STATE)
        st, body = mu.api(src, "PUT", "/vms/mv0/migrate", {"to": dst.name})
        assert st == 202, body
        c.checker.wait(lambda r: r.get("mv0") == dst.name, 90, f"mv0 on {dst.name}")
        assert etcd_util.wait_until(lambda: shows_on(dst.name), 60, 0.25), \
            f"{drv.execute_script(PAGE_STATE)}\n{c.diagnose()}"
        i = c.hosts.index(dst)
        assert etcd_util.wait_until(
            lambda: 'ember_migrations_total{result="ok"} 1' in http(urls[i] + "metrics")[1],
            30, 0.25), http(urls[i] + "metrics")[1]
    finally:
        if drv:
            drv.quit()
        mu.close(c)
