"""ember's Firecracker-compatible API: `ember --api-sock PATH` driven with
Debian's curl through Firecracker's getting-started sequence, every kind
of bad request (each gets 400 and a fault_message naming what is wrong,
and the running guest never notices), stalled and concurrent clients, and
`--config-file`."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import EMBER, EXIT_CONFIG, guest, needs_kvm

RUNNING_MSG = "looping forever"
POST_BOOT = "The requested operation is not supported after starting the microVM."
PRE_BOOT = "The requested operation is not supported before starting the microVM."


class Ember:
    """One `ember --api-sock` process and a curl client for it."""

    def __init__(self, tmp_path, *args, sock=None, run_args=None, name=None):
        """`ember --api-sock SOCK ARGS...`, or with run_args
        `ember run RUN_ARGS... --api-sock SOCK` (a command-line VM with the
        API); name keeps several in one tmp_path apart."""
        self.sock = str(sock or tmp_path / (f"{name}.sock" if name else "api.sock"))
        # ember writes through its own file descriptions; the test reads
        # the files afresh.  (A shared one would let our seek(0) move
        # ember's write offset: output would land on top of itself.)
        self.out_path = tmp_path / (f"{name}.out" if name else "stdout")
        self.err_path = tmp_path / (f"{name}.err" if name else "stderr")
        argv = ([EMBER, "run"] + list(run_args) + ["--api-sock", self.sock]
                if run_args is not None else [EMBER, "--api-sock", self.sock] + list(args))
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(argv, stdout=out, stderr=err)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                s.close()
                return
            except OSError:
                if self.p.poll() is not None:
                    break
                time.sleep(0.002)
        self.kill()
        pytest.fail(f"{' '.join(argv[:3])}: the API socket never accepted; stderr: "
                    + self.stderr())

    def curl(self, method, path, body=None, raw=None):
        """(status, parsed JSON or None)."""
        cmd = ["curl", "-s", "--max-time", "10", "--unix-socket", self.sock, "-X", method,
               "-w", "\n%{http_code}", "http://localhost" + path]
        if body is not None or raw is not None:
            data = raw if raw is not None else json.dumps(body)
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        else:
            data = None
        r = subprocess.run(cmd, input=data, capture_output=True, text=True, timeout=20)
        text, _, code = r.stdout.rpartition("\n")
        return int(code), (json.loads(text) if text.strip() else None)

    def ok(self, method, path, body=None):
        st, js = self.curl(method, path, body)
        assert st == 204, (method, path, js)

    def fault(self, method, path, body=None, raw=None):
        st, js = self.curl(method, path, body, raw)
        assert st == 400, (method, path, st, js)
        assert set(js) == {"fault_message"}, js
        return js["fault_message"]

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def wait_output(self, text, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout():
                return
            time.sleep(0.01)
        pytest.fail(f"no {text!r} on stdout: {self.stdout()!r}; stderr {self.stderr()!r}")

    def wait(self, timeout=20):
        return self.p.wait(timeout=timeout)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def api(tmp_path):
    e = Ember(tmp_path)
    yield e
    e.kill()


def start_loop(api, tmp_path, drive=True):
    """Firecracker's getting-started sequence with the spinning guest."""
    api.ok("PUT", "/boot-source", {"kernel_image_path": guest("loop"),
                                   "boot_args": "console=ttyS0"})
    api.ok("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64})
    if drive:
        disk = tmp_path / "rootfs.img"
        disk.write_bytes(b"\0" * (1 << 20))
        api.ok("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(disk),
                                         "is_root_device": True, "is_read_only": False})
    api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    api.wait_output(RUNNING_MSG)


def test_info_and_version(api):
    st, js = api.curl("GET", "/")
    assert st == 200
    assert js["state"] == "Not started" and js["id"] == "anonymous-instance"
    assert js["app_name"] == "ember" and js["vmm_version"]
    st, js = api.curl("GET", "/version")
    assert st == 200 and "firecracker_version" in js


def test_machine_config_defaults_put_patch(api):
    st, js = api.curl("GET", "/machine-config")
    assert st == 200
    assert js["vcpu_count"] == 1 and js["mem_size_mib"] == 128 and js["smt"] is False
    api.ok("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256,
                                      "track_dirty_pages": True})
    api.ok("PATCH", "/machine-config", {"mem_size_mib": 512})
    st, js = api.curl("GET", "/machine-config")
    assert (js["vcpu_count"], js["mem_size_mib"], js["track_dirty_pages"]) == (2, 512, True)
    # PUT resets what it does not give
    api.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})
    st, js = api.curl("GET", "/machine-config")
    assert js["track_dirty_pages"] is False


@needs_kvm
def test_getting_started_sequence(api, tmp_path):
    start_loop(api, tmp_path)
    st, js = api.curl("GET", "/machine-config")
    assert st == 200 and js["vcpu_count"] == 2 and js["mem_size_mib"] == 64
    assert api.curl("GET", "/")[1]["state"] == "Running"
    api.ok("PATCH", "/vm", {"state": "Paused"})
    assert api.curl("GET", "/")[1]["state"] == "Paused"
    api.ok("PATCH", "/vm", {"state": "Paused"})  # already paused: still 204
    api.ok("PATCH", "/vm", {"state": "Resumed"})
    assert api.curl("GET", "/")[1]["state"] == "Running"
    st, js = api.curl("GET", "/vm/config")
    assert st == 200
    assert js["drives"][0]["drive_id"] == "rootfs"
    assert js["boot-source"]["kernel_image_path"] == guest("loop")
    st, js = api.curl("GET", "/ember/status")
    assert js["state"] == "Running" and js["vcpus"] == 2 and js["boot_time_us"] > 0
    assert api.p.poll() is None


@needs_kvm
@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/boot-source", {"kernel_image_path": "/x"}),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
    ("PATCH", "/machine-config", {"mem_size_mib": 64}),
    ("PUT", "/drives/d2", {"drive_id": "d2", "path_on_host": "/x", "is_root_device": False}),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0"}),
    ("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/tmp/v.sock"}),
    ("PUT", "/entropy", {}),
    ("PUT", "/logger", {"log_path": "/tmp/x"}),
    ("PUT", "/metrics", {"metrics_path": "/tmp/x"}),
    ("PUT", "/actions", {"action_type": "InstanceStart"}),
])
def test_pre_boot_calls_after_boot(api, tmp_path, method, path, body):
    start_loop(api, tmp_path, drive=False)
    assert api.fault(method, path, body) == POST_BOOT
    assert api.curl("GET", "/")[1]["state"] == "Running"
    assert api.p.poll() is None


@needs_kvm
def test_patch_rate_limiters_after_boot(api, tmp_path):
    """Firecracker's post-boot PATCH of a drive's rate limiter; the path
    cannot change (no new files once the sandbox is closed)."""
    assert "before starting" in api.fault(
        "PATCH", "/drives/rootfs", {"drive_id": "rootfs", "rate_limiter": {}})
    start_loop(api, tmp_path)
    limiter = {"bandwidth": {"size": 1 << 20, "refill_time": 100},
               "ops": {"size": 100, "one_time_burst": 10, "refill_time": 1000}}
    api.ok("PATCH", "/drives/rootfs", {"drive_id": "rootfs", "rate_limiter": limiter})
    api.ok("PATCH", "/drives/rootfs", {"drive_id": "rootfs",
                                        "rate_limiter": {"ops": {"size": 0, "refill_time": 0}}})
    assert "path_on_host: ember cannot open a new file" in api.fault(
        "PATCH", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "/x"})
    assert 'no drive "other"' in api.fault(
        "PATCH", "/drives/other", {"drive_id": "other", "rate_limiter": limiter})
    assert 'is not the path' in api.fault(
        "PATCH", "/drives/rootfs", {"drive_id": "x", "rate_limiter": limiter})
    assert 'no network interface "eth0"' in api.fault(
        "PATCH", "/network-interfaces/eth0", {"iface_id": "eth0", "rx_rate_limiter": limiter})
    assert "size: must be" in api.fault(
        "PATCH", "/drives/rootfs", {"drive_id": "rootfs",
                                    "rate_limiter": {"ops": {"size": -1, "refill_time": 1}}})
    assert api.curl("GET", "/")[1]["state"] == "Running"
    assert api.p.poll() is None


@pytest.mark.parametrize("body", [{"state": "Paused"}, {"state": "Resumed"}])
def test_post_boot_calls_before_boot(api, body):
    assert api.fault("PATCH", "/vm", body) == PRE_BOOT


def test_ctrl_alt_del_before_boot(api):
    assert api.fault("PUT", "/actions", {"action_type": "SendCtrlAltDel"}) == PRE_BOOT


@pytest.mark.parametrize("method,path,body,raw,message", [
    ("PUT", "/machine-config", None, '{"vcpu_count": 1,', "invalid JSON"),
    ("PUT", "/machine-config", None, "[1, 2]", "expected a JSON object, not an array"),
    ("PUT", "/machine-config", None, "", "Empty PUT request."),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "colour": "blue"}, None,
     'unknown field "colour"'),
    ("PUT", "/machine-config", {"vcpu_count": "two", "mem_size_mib": 64}, None,
     "vcpu_count: must be a non-negative integer, not a string"),
    ("PUT", "/machine-config", {"vcpu_count": 1.5, "mem_size_mib": 64}, None,
     "vcpu_count: must be a non-negative integer"),
    ("PUT", "/machine-config", {"mem_size_mib": 64}, None, 'missing field "vcpu_count"'),
    ("PUT", "/machine-config", {"vcpu_count": 33, "mem_size_mib": 64}, None,
     "vcpu_count: \"33\" is out of range"),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 0}, None, "mem_size_mib:"),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "smt": True}, None,
     "smt:"),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"},
     None, "cpu_template:"),
    ("PATCH", "/machine-config", {"vcpu_count": -1}, None, "vcpu_count:"),
    ("PUT", "/machine-config", None, '{"vcpu_count": 1, "vcpu_count": 2, "mem_size_mib": 8}',
     "duplicate"),
    ("PUT", "/boot-source", {"kernel_image_path": "/nonexistent/vmlinux"}, None,
     "kernel_image_path: cannot open /nonexistent/vmlinux: No such file or directory"),
    ("PUT", "/boot-source", {"kernel_image_path": "/tmp"}, None,
     "kernel_image_path: cannot open /tmp: is a directory, not a regular file"),
    ("PUT", "/boot-source", {"kernel_image_path": 7}, None,
     "kernel_image_path: must be a string, not an integer"),
    ("PUT", "/boot-source", {"boot_args": "x"}, None, 'missing field "kernel_image_path"'),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "/nonexistent.img",
                               "is_root_device": True}, None,
     "path_on_host: cannot open /nonexistent.img"),
    ("PUT", "/drives/rootfs", {"drive_id": "other", "path_on_host": "/x",
                               "is_root_device": True}, None,
     "The id from the path does not match the id from the body!"),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "/x"}, None,
     'missing field "is_root_device"'),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "is_root_device": True,
                               "rate_limiter": {"bandwidth": {"size": "big",
                                                              "refill_time": 100}}},
     None, "rate_limiter.bandwidth.size: must be a non-negative integer"),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "t" * 20}, None,
     "host_dev_name:"),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                         "guest_mac": "zz"}, None, "guest_mac:"),
    ("PUT", "/vsock", {"guest_cid": 2, "uds_path": "/tmp/v.sock"}, None, "guest_cid:"),
    ("PUT", "/metrics", {"metrics_path": "/nonexistent/dir/m"}, None,
     "metrics_path: cannot open"),
    ("PUT", "/logger", {"level": "Loud"}, None, "level:"),
    ("PUT", "/actions", {"action_type": "Reboot"}, None, "action_type:"),
    ("PUT", "/actions", {"action_type": "FlushMetrics"}, None, "metrics are not configured"),
    ("PUT", "/actions", {"action_type": "InstanceStart"}, None,
     "Cannot start microvm without kernel configuration."),
    ("PATCH", "/vm", {"state": "Frozen"}, None, "state:"),
    ("GET", "/nowhere", None, None, "Invalid request method and/or path: GET /nowhere."),
    ("DELETE", "/machine-config", None, None, "Invalid request method and/or path"),
    ("PUT", "/version", {"x": 1}, None, "Invalid request method and/or path"),
])
def test_bad_requests(api, method, path, body, raw, message):
    got = api.fault(method, path, body, raw)
    assert message in got, got
    # nothing was lost: the configuration still answers
    assert api.curl("GET", "/machine-config")[0] == 200


def test_refused_value_changes_nothing(api):
    api.ok("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256})
    api.fault("PUT", "/machine-config", {"vcpu_count": 99, "mem_size_mib": 64})
    api.fault("PATCH", "/machine-config", {"mem_size_mib": 0})
    js = api.curl("GET", "/machine-config")[1]
    assert (js["vcpu_count"], js["mem_size_mib"]) == (2, 256)


def test_one_root_drive(api, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"\0" * 4096)
    api.ok("PUT", "/drives/a", {"drive_id": "a", "path_on_host": str(tmp_path / "a"),
                                "is_root_device": True})
    msg = api.fault("PUT", "/drives/b", {"drive_id": "b", "path_on_host": str(tmp_path / "b"),
                                         "is_root_device": True})
    assert msg == "A root block device already exists!"
    msg = api.fault("PUT", "/drives/c", {"drive_id": "c", "path_on_host": str(tmp_path / "b"),
                                         "is_root_device": False, "partuuid": "1234"})
    assert "partuuid" in msg
    drives = api.curl("GET", "/vm/config")[1]["drives"]
    assert [d["drive_id"] for d in drives] == ["a"]


def test_oversized_body(api):
    big = json.dumps({"kernel_image_path": "x" * 51200})
    msg = api.fault("PUT", "/boot-source", raw=big)
    assert "larger than the limit of 51200" in msg
    assert api.curl("GET", "/")[0] == 200


def raw_request(sock_path, data, timeout=5):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(data)
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_malformed_http(api):
    out = raw_request(api.sock, b"GARBAGE / HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    assert api.curl("GET", "/")[0] == 200


@needs_kvm
def test_stalled_client_does_not_block_others(tmp_path):
    api = Ember(tmp_path, "--api-idle-timeout", "1")
    try:
        start_loop(api, tmp_path, drive=False)
        stall = socket.socket(socket.AF_UNIX)
        stall.connect(api.sock)
        stall.sendall(b"PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        t0 = time.monotonic()
        for _ in range(5):
            assert api.curl("GET", "/")[1]["state"] == "Running"
        assert time.monotonic() - t0 < 2
        stall.settimeout(5)
        got = b""
        while chunk := stall.recv(4096):  # a 408, then closed by the idle sweep
            got += chunk
        assert got.startswith(b"HTTP/1.1 408 Request Timeout"), got
        assert time.monotonic() - t0 < 4
        assert api.curl("GET", "/ember/status")[1]["state"] == "Running"
    finally:
        api.kill()


@needs_kvm
def test_100_concurrent_clients(api, tmp_path):
    start_loop(api, tmp_path, drive=False)
    conns = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(api.sock)
        conns.append(s)
    bad = b'PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}'
    for i, s in enumerate(conns):
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if i % 2 else bad)
    results = [None] * len(conns)

    def read(i, s):
        data = b""
        while b"}" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        results[i] = data
        s.close()

    threads = [threading.Thread(target=read, args=(i, s)) for i, s in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for i, data in enumerate(results):
        if i % 2:
            assert data.startswith(b"HTTP/1.1 200") and b'"Running"' in data, data
        else:
            assert data.startswith(b"HTTP/1.1 400") and b"not supported after" in data, data
    assert api.p.poll() is None
    assert api.curl("GET", "/")[1]["state"] == "Running"


@needs_kvm
def test_guest_exit_code_is_embers(api):
    api.ok("PUT", "/boot-source", {"kernel_image_path": guest("exit_status"),
                                   "boot_args": "status=5"})
    api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    assert api.wait() == 5


@needs_kvm
def test_hello_output_on_stdout(api):
    api.ok("PUT", "/boot-source", {"kernel_image_path": guest("hello")})
    api.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32})
    api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    assert api.wait() == 0
    assert "Hello from ember guest" in api.stdout()


@needs_kvm
def test_metrics_and_logger(api, tmp_path):
    metrics, log = tmp_path / "metrics.json", tmp_path / "log"
    metrics.write_text("")
    log.write_text("")
    api.ok("PUT", "/metrics", {"metrics_path": str(metrics)})
    api.ok("PUT", "/logger", {"log_path": str(log), "level": "Info", "show_level": True})
    assert "Reinitialization" in api.fault("PUT", "/metrics", {"metrics_path": str(metrics)})
    api.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
    api.ok("PUT", "/entropy", {})
    start_loop(api, tmp_path, drive=True)
    api.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert len(lines) == 2
    assert "utc_timestamp_ms" in lines[0] and "vcpu" in lines[0]
    assert lines[1]["ember"]["boot_time_us"] > 0
    assert lines[1]["vcpu"]["exits"] > 0
    assert lines[1]["api_server"]["put_requests"] >= 3
    # each device's counters, Firecracker's names (the loop guest uses none)
    assert lines[1]["block_rootfs"]["read_count"] == 0
    assert lines[1]["block_rootfs"]["device_needs_reset"] == 0
    assert lines[1]["entropy"]["entropy_bytes"] == 0
    text = log.read_text()
    assert "PUT /boot-source: 204" in text and "INFO" in text


@needs_kvm
def test_sandboxed_threads(api, tmp_path):
    start_loop(api, tmp_path, drive=False)
    tasks = f"/proc/{api.p.pid}/task"

    def modes():
        out = []
        for tid in os.listdir(tasks):
            with open(f"{tasks}/{tid}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
            out.append((st["Seccomp"].strip(), st["CapEff"].strip()))
        return out
    # The guest's first output comes from vCPU 0; the AP's thread loads
    # its filter when it starts, which may be a moment later.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(m[0] == "2" for m in modes()):
        time.sleep(0.01)
    m = modes()
    assert len(m) >= 4  # vmm, api, two vCPUs
    assert all(x == ("2", "0000000000000000") for x in m), m


def test_stale_socket_replaced_other_file_refused(tmp_path):
    sock = tmp_path / "api.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # a dead server's socket file
    api = Ember(tmp_path, sock=sock)
    assert api.curl("GET", "/")[0] == 200
    # a live one is not taken over
    r = subprocess.run([EMBER, "--api-sock", str(sock)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == EXIT_CONFIG and "another process serves it" in r.stderr
    api.kill()
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    r = subprocess.run([EMBER, "--api-sock", str(plain)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == EXIT_CONFIG and "not a socket" in r.stderr
    assert plain.read_text() == "keep me"


@needs_kvm
def test_config_file_boots_without_api(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": guest("exit_status"), "boot_args": "status=3"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
        "drives": [], "network-interfaces": [], "balloon": None,
    }))
    r = subprocess.run([EMBER, "--config-file", str(cfg), "--no-api"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 3, r.stderr


@pytest.mark.parametrize("doc,message", [
    ("{", "vm.json:1:"),
    ({"machine-config": {"vcpu_count": 0, "mem_size_mib": 32}}, "machine-config: vcpu_count"),
    ({"boot-source": {"kernel_image_path": "/nonexistent"}}, "kernel_image_path: cannot open"),
    ({"balloon": {"amount_mib": 1}}, "balloon: not supported"),
    ({"colour": 1}, 'unknown field "colour"'),
])
def test_config_file_errors(tmp_path, doc, message):
    cfg = tmp_path / "vm.json"
    cfg.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    r = subprocess.run([EMBER, "--config-file", str(cfg)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert message in r.stderr, r.stderr


@needs_kvm
def test_config_file_with_api(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"boot-source": {"kernel_image_path": guest("loop")}}))
    api = Ember(tmp_path, "--config-file", str(cfg))
    try:
        api.wait_output(RUNNING_MSG)
        assert api.curl("GET", "/")[1]["state"] == "Running"
        assert api.fault("PUT", "/actions", {"action_type": "InstanceStart"}) == POST_BOOT
    finally:
        api.kill()


def test_option_errors(tmp_path):
    r = subprocess.run([EMBER, "--no-api"], capture_output=True, text=True, timeout=10)
    assert r.returncode == EXIT_CONFIG and "--no-api needs --config-file" in r.stderr
    r = subprocess.run([EMBER, "--api-sock", str(tmp_path / "s"), "--frob"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == EXIT_CONFIG and "unknown option --frob" in r.stderr
    r = subprocess.run([EMBER, "--api-sock", "x", "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0 and "--config-file" in r.stdout
