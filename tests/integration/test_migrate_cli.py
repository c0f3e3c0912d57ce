"""`ember migrate`, the live-migration controller (build/ember-migrate).

Without the VMM side, against stand-ins (migrate_fake.py) that speak the
API of docs/migration.md: the TLS relay between two network namespaces
joined by a veth pair (addresses inside those namespaces only), with
certificates made here by the openssl CLI and with a pre-shared key; a
wrong key, an untrusted certificate and a plain peer are dropped before
the target's API socket sees a single connection; the hand-over rules,
case by case, with scripted ends.

With the real VMMs (a counting guest moved on the same host, and between
the namespaces over TLS): skipped while `GET /migration` on a fresh ember
is 400 "Invalid request method and/or path" (the VMM side not merged)."""
import json
import os
import re
import shutil
import socket
import signal
import subprocess
import threading
import time

import pytest

from conftest import EMBER, ROOT, guest, needs_kvm
from migrate_fake import INVALID, FakeVmm

MIGRATE = os.path.abspath(os.environ.get("EMBER_MIGRATE",
                                         os.path.join(os.path.dirname(EMBER), "ember-migrate")))
WAIT = 60  # seconds: a bound for hangs, never a measure of speed


def migrate(*args, timeout=WAIT, netns=None):
    cmd = ([] if netns is None else ["ip", "netns", "exec", netns]) + [MIGRATE] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start(*args, netns=None):
    cmd = ([] if netns is None else ["ip", "netns", "exec", netns]) + [MIGRATE] + list(args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(stdout):
    """The JSON summary: the last line of stdout."""
    lines = stdout.strip().splitlines()
    assert lines, "no summary on stdout"
    return json.loads(lines[-1])


def finish(p, timeout=WAIT):
    """(exit code, stdout, stderr) of a started ember-migrate; one that
    hangs is killed and fails the test."""
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    out, err = p.communicate()
    killer.cancel()
    assert p.returncode != -9, f"ember-migrate did not end in {timeout} s: {out} {err}"
    return p.returncode, out, err


# ---- the command line ----

def test_help_and_dispatch():
    r = subprocess.run([EMBER, "migrate", "--help"], capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    for opt in ("--from", "--to-host", "--listen", "--tls-cert", "--tls-key", "--tls-ca",
                "--psk-file", "--insecure-plain", "--downtime-ms", "--max-bandwidth",
                "--timeout", "--converge", "--resolve", "handover-unknown", "JSON"):
        assert opt in r.stdout, opt
    r = subprocess.run([EMBER, "help"], capture_output=True, text=True, timeout=WAIT)
    assert "migrate" in r.stdout and "ember-migrate" in r.stdout


@pytest.mark.parametrize("args, why", [
    (["--from", "a", "--to-host", "10.1.1.1:1"], "no authentication chosen"),
    (["--listen", "10.1.1.1:1", "--to", "b"], "--insecure-plain"),
    (["--from", "a", "--to", "b", "--psk-file", "k"], "socketpair"),
    (["--from", "a", "--to", "b", "--max-bandwidth", "fast"], "--max-bandwidth"),
])
def test_refusals(args, why):
    r = subprocess.run([EMBER, "migrate"] + args, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 121 and why in r.stderr, r.stderr


# ---- two network namespaces joined by a veth pair ----

def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


@pytest.fixture(scope="module")
def nets():
    """{"send": ns, "recv": ns, "addr": receiver's address}: 10.231.0.1
    and .2, on a veth pair that exists only inside the two namespaces."""
    if not shutil.which("ip"):
        pytest.skip("no ip(8)")
    tag = f"embm{os.getpid() % 100000}"
    a, b = f"{tag}s", f"{tag}r"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b)
        _ip("-n", a, "addr", "add", "10.231.0.1/24", "dev", "v0")
        _ip("-n", b, "addr", "add", "10.231.0.2/24", "dev", "v1")
        for ns, dev in ((a, "v0"), (b, "v1")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except RuntimeError as e:
        for ns in (a, b):
            _ip("netns", "del", ns, check=False)
        pytest.skip(f"cannot make network namespaces (needs root): {e}")
    yield {"send": a, "recv": b, "addr": "10.231.0.2"}
    for ns in (a, b):
        _ip("netns", "del", ns, check=False)


_port = iter(range(47000, 48000))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a receiver certificate (SAN IP 10.231.0.2), a sender
    certificate, and a second CA's certificate nobody trusts."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    d = tmp_path_factory.mktemp("pki")

    def ossl(*args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=d)
        assert r.returncode == 0, r.stderr

    def ca(name):
        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}")

    def leaf(name, ca_name, san):
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.pem", "-CAkey",
             f"{ca_name}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext")

    ca("ca")
    ca("evil")
    leaf("recv", "ca", "IP:10.231.0.2")
    leaf("send", "ca", "DNS:sender.test")
    leaf("intruder", "evil", "DNS:sender.test")
    leaf("wrongname", "ca", "IP:10.231.0.77")
    return d


def tls_args(pki, who, ca="ca"):
    return ["--tls-cert", str(pki / f"{who}.pem"), "--tls-key", str(pki / f"{who}.key"),
            "--tls-ca", str(pki / f"{ca}.pem")]


def psk_file(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return ["--psk-file", str(path)]


def cross_host(tmp_path, nets, recv_auth, send_auth, src_script="ok", nbytes=1 << 20):
    """A fake source and target, the receiver in one namespace, the
    sender in the other: (recv (rc, out, err), send (rc, out, err), src, dst)."""
    src = FakeVmm(tmp_path / "a.sock", "source", src_script, nbytes)
    dst = FakeVmm(tmp_path / "b.sock", "target", nbytes=nbytes)
    port = next(_port)
    where = f"{nets['addr']}:{port}"
    try:
        recv = start("--listen", where, "--to", dst.path, "--timeout", "60", *recv_auth,
                     netns=nets["recv"])
        # The receiver says when it listens (stderr), before anything else.
        line = recv.stderr.readline()
        assert "listening on" in line, line + recv.stderr.read()
        send = migrate("--from", src.path, "--to-host", where, "--timeout", "60", *send_auth,
                       netns=nets["send"])
        rc, out, err = finish(recv)
        return (rc, out, line + err), (send.returncode, send.stdout, send.stderr), src, dst
    finally:
        src.close()
        dst.close()


def assert_moved(recv, send, src, dst):
    assert recv[0] == 0, recv
    assert send[0] == 0, send
    assert summary(recv[1])["result"] == "completed"
    assert summary(send[1])["result"] == "completed"
    assert summary(send[1])["handover"] == "gogo"
    assert src.stream_ok and dst.stream_ok and dst.got_gogo
    assert dst.phase == "running"


def assert_target_untouched(dst):
    assert dst.connections == 0, dst.requests
    assert dst.phase == "none"


def test_tls_certificates_both_ways(tmp_path, nets, pki):
    recv, send, src, dst = cross_host(tmp_path, nets, tls_args(pki, "recv"), tls_args(pki, "send"))
    assert_moved(recv, send, src, dst)
    assert "certificates verified both ways" in recv[2] and "TLSv1.3" in send[2]


def test_tls_psk(tmp_path, nets):
    key = "hostpair:" + "5a" * 32 + "\n"
    # 32 MiB: many TLS records, partial writes, both buffers full
    recv, send, src, dst = cross_host(tmp_path, nets, psk_file(tmp_path / "r.psk", key),
                                      psk_file(tmp_path / "s.psk", key), nbytes=32 << 20)
    assert_moved(recv, send, src, dst)
    assert "TLS_AES_128_GCM_SHA256, pre-shared key" in send[2]


def test_insecure_plain_by_name(tmp_path, nets):
    recv, send, src, dst = cross_host(tmp_path, nets, ["--insecure-plain"], ["--insecure-plain"])
    assert_moved(recv, send, src, dst)
    assert "not authenticated" in recv[2]


def test_wrong_psk_dropped(tmp_path, nets):
    recv, send, src, dst = cross_host(tmp_path, nets,
                                      psk_file(tmp_path / "r.psk", "ab" * 32),
                                      psk_file(tmp_path / "s.psk", "cd" * 32))
    assert recv[0] == 1 and "failed authentication" in recv[2], recv
    assert send[0] == 1 and "failed authentication" in send[2], send
    assert_target_untouched(dst)
    assert src.connections == 0, src.requests  # the source never started either


def test_wrong_psk_identity_dropped(tmp_path, nets):
    recv, send, src, dst = cross_host(tmp_path, nets,
                                      psk_file(tmp_path / "r.psk", "one:" + "ab" * 32),
                                      psk_file(tmp_path / "s.psk", "two:" + "ab" * 32))
    assert recv[0] == 1 and send[0] == 1, (recv, send)
    assert_target_untouched(dst)


def test_untrusted_sender_certificate_dropped(tmp_path, nets, pki):
    recv, send, src, dst = cross_host(tmp_path, nets, tls_args(pki, "recv"),
                                      tls_args(pki, "intruder", ca="ca"))
    assert recv[0] == 1 and "failed authentication" in recv[2], recv
    assert send[0] == 1, send
    assert_target_untouched(dst)
    assert src.connections == 0


def test_receiver_with_wrong_name_dropped_by_sender(tmp_path, nets, pki):
    recv, send, src, dst = cross_host(tmp_path, nets, tls_args(pki, "wrongname"),
                                      tls_args(pki, "send"))
    assert send[0] == 1 and "certificate" in send[2], send
    assert recv[0] == 1, recv
    assert_target_untouched(dst)
    assert src.connections == 0


def test_plain_sender_dropped_by_tls_receiver(tmp_path, nets):
    """A peer that speaks plain TCP to a TLS receiver: its bytes never
    reach the target (the relay starts only after a handshake)."""
    recv, send, src, dst = cross_host(tmp_path, nets, psk_file(tmp_path / "r.psk", "ab" * 32),
                                      ["--insecure-plain"])
    assert recv[0] == 1 and "failed authentication" in recv[2], recv
    assert send[0] != 0, send
    assert_target_untouched(dst)


def test_gogo_lost_between_hosts_reported_on_both_sides(tmp_path, nets):
    """Each side sees only its own VMM: the source in handover-unknown and
    the target left in ready are reported (exit 2) for --resolve by hand,
    and neither is resumed by a controller that cannot see the other."""
    recv, send, src, dst = cross_host(tmp_path, nets, ["--insecure-plain"], ["--insecure-plain"],
                                      src_script="lose-gogo")
    assert send[0] == 2 and "handover-unknown" in send[2], send
    assert recv[0] == 2 and "waits in ready" in recv[2], recv
    assert summary(recv[1])["result"] == "unknown"
    assert src.phase == "handover-unknown" and dst.phase == "ready"
    r = migrate("--resolve", "resume", "--api-sock", str(tmp_path / "b.sock"))
    assert r.returncode == 1 and "Connection refused" in r.stderr, r.stderr  # closed by now


def test_resolve_by_hand(tmp_path):
    dst = FakeVmm(tmp_path / "b.sock", "target")
    try:
        r = migrate("--resolve", "stop", "--api-sock", dst.path)
        assert r.returncode == 1 and "nothing to resolve in phase none" in r.stderr, r.stderr
        dst.phase = "ready"
        r = migrate("--resolve", "resume", "--api-sock", dst.path)
        assert r.returncode == 0, r.stderr
        assert dst.phase == "running" and dst.events == [("target", "resume")]
    finally:
        dst.close()


def test_psk_file_readable_by_others_refused(tmp_path):
    key = tmp_path / "k.psk"
    key.write_text("ab" * 32)
    key.chmod(0o644)
    dst = FakeVmm(tmp_path / "b.sock", "target")
    try:
        r = migrate("--listen", "127.0.0.1:0", "--to", dst.path, "--psk-file", str(key))
    finally:
        dst.close()
    assert r.returncode == 1 and "chmod 600" in r.stderr, r.stderr
    assert_target_untouched(dst)


# ---- same host, and the hand-over rules, with scripted ends ----

def same_host(tmp_path, src_script="ok", dst_script="ok", extra=()):
    events = []
    src = FakeVmm(tmp_path / "a.sock", "source", src_script, events=events)
    dst = FakeVmm(tmp_path / "b.sock", "target", dst_script, events=events)
    try:
        r = migrate("--from", src.path, "--to", dst.path, "--timeout", "60", *extra)
    finally:
        src.close()
        dst.close()
    return r, src, dst, events


def test_same_host_moves_and_reports(tmp_path):
    r, src, dst, events = same_host(tmp_path, extra=["--downtime-ms", "20", "--max-bandwidth",
                                                     "1G", "--converge", "throttle"])
    assert r.returncode == 0, r.stderr
    s = summary(r.stdout)
    assert s["result"] == "completed" and s["error"] is None, s
    assert set(s) >= {"result", "total_ms", "downtime_ms", "bytes_sent", "rounds",
                      "throttle_pct", "error"}
    assert src.stream_ok and dst.got_gogo
    put = [q for q in src.requests if q[1] == "/migration/send"][0]
    assert put[3], "the stream fd did not come with PUT /migration/send"
    assert put[2] == {"downtime_ms": 20, "max_bandwidth": 1 << 30, "converge": "throttle",
                      "timeout_ms": 60000}
    # The target got its end first: the source then has a reader.
    assert [q[1] for q in dst.requests if q[0] == "PUT"] == ["/migration/receive"]
    # Not a terminal: plain lines, one per phase or round.
    assert re.search(r"^migrate: precopy", r.stdout, re.M) or "migrate: " in r.stdout
    assert "\r" not in r.stdout and "resolve" not in str(events)


def test_gogo_lost_target_ready_resumed_then_source_stopped(tmp_path):
    r, src, dst, events = same_host(tmp_path, src_script="lose-gogo")
    assert r.returncode == 0, r.stderr
    assert [e for e in events if e[1] != "gone"] == [("target", "resume"), ("source", "stop")]
    assert dst.phase == "running"
    assert "target resumed" in summary(r.stdout)["handover"]


def test_gogo_lost_target_gone_source_resumed(tmp_path):
    r, src, dst, events = same_host(tmp_path, src_script="lose-gogo", dst_script="die-at-ready")
    assert r.returncode == 1, r.stderr
    assert ("source", "resume") in events and ("target", "resume") not in events
    assert summary(r.stdout)["result"] == "failed"


def test_source_gone_target_ready_resumed(tmp_path):
    r, src, dst, events = same_host(tmp_path, src_script="die-after-redy")
    assert r.returncode == 0, r.stderr
    assert events == [("source", "gone"), ("target", "resume")], events
    assert dst.phase == "running"


def test_source_failed_target_ready_stopped(tmp_path):
    r, src, dst, events = same_host(tmp_path, src_script="fail-after-redy")
    assert r.returncode == 1, r.stderr
    assert ("target", "stop") in events and ("target", "resume") not in events
    s = summary(r.stdout)
    assert s["result"] == "failed" and "timed out (scripted)" in s["error"], s


def test_sigint_cancels_at_the_source(tmp_path):
    events = []
    src = FakeVmm(tmp_path / "a.sock", "source", "wait-cancel", events=events)
    dst = FakeVmm(tmp_path / "b.sock", "target", events=events)
    try:
        p = start("--from", src.path, "--to", dst.path)
        deadline = time.monotonic() + WAIT
        while not any(q[0] == "GET" for q in src.requests) and time.monotonic() < deadline:
            time.sleep(0.01)  # the watch has begun: a signal now cancels
        p.send_signal(signal.SIGINT)
        rc, out, err = finish(p)
    finally:
        src.close()
        dst.close()
    assert rc == 1 and "cancelling" in err, err
    assert ("source", "cancel") in events
    assert summary(out)["result"] == "cancelled"
    assert dst.phase == "failed"  # it read the end of the stream


def test_listen_times_out(tmp_path):
    dst = FakeVmm(tmp_path / "b.sock", "target")
    try:
        r = migrate("--listen", "127.0.0.1:0", "--to", dst.path, "--insecure-plain",
                    "--timeout", "0.2")
    finally:
        dst.close()
    assert r.returncode == 1 and "no connection came" in r.stderr, r.stderr
    assert_target_untouched(dst)


def test_target_refuses(tmp_path):
    """A target that is not fresh refuses the stream: the source is never
    asked to send."""
    src = FakeVmm(tmp_path / "a.sock", "source")
    dst = FakeVmm(tmp_path / "b.sock", "target")
    dst.phase = "running"
    try:
        r = migrate("--from", src.path, "--to", dst.path)
    finally:
        src.close()
        dst.close()
    assert r.returncode == 1 and "not fresh" in r.stderr, r.stderr
    assert src.connections == 0
    assert summary(r.stdout)["result"] == "failed"


def test_unreachable_source(tmp_path):
    dst = FakeVmm(tmp_path / "b.sock", "target")
    try:
        r = migrate("--from", str(tmp_path / "nobody.sock"), "--to", dst.path)
    finally:
        dst.close()
    assert r.returncode == 1 and "nobody.sock" in r.stderr, r.stderr


# ---- the real thing: ember on both ends ----

COUNT = 400
SPIN = 20000000  # as test_snapshot.py: seconds between the lines the test waits on


def vmm_side_merged(tmp_path):
    """True when ember serves /migration; False while it answers 400
    "Invalid request method and/or path" (the VMM side not merged)."""
    from test_api import Ember
    e = Ember(tmp_path, name="probe")
    try:
        st, js = e.curl("GET", "/migration")
    finally:
        e.kill()
    return not (st == 400 and INVALID in (js or {}).get("fault_message", ""))


@pytest.fixture
def real_vmms(tmp_path):
    if not vmm_side_merged(tmp_path):
        pytest.skip("ember has no /migration API yet (GET /migration: 400 "
                    f"\"{INVALID}\"): the VMM side is not merged")


def counting_pair(tmp_path):
    from test_api import Ember
    src = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--cmdline",
                                    f"count={COUNT} spin={SPIN} dirty=16", "--timeout", "120"],
                name="src")
    dst = Ember(tmp_path, name="dst")
    src.wait_output("count 20\n", timeout=WAIT)
    return src, dst


def check_moved(src, dst):
    from test_snapshot import counts_on
    assert src.wait(timeout=WAIT) == 0, src.stderr()  # the source exits 0 after GOGO
    assert dst.wait(timeout=120) == 0, dst.stderr()   # the guest counted to its end there
    counts_on(src.stdout(), dst.stdout())


@needs_kvm
def test_real_same_host(tmp_path, real_vmms):
    src, dst = counting_pair(tmp_path)
    try:
        r = migrate("--from", src.sock, "--to", dst.sock, "--timeout", "60",
                    "--downtime-ms", "50", timeout=120)
        assert r.returncode == 0, r.stderr
        s = summary(r.stdout)
        assert s["result"] == "completed" and s["bytes_sent"] > 0, s
        check_moved(src, dst)
    finally:
        src.kill()
        dst.kill()


@needs_kvm
def test_real_target_killed_source_runs_on(tmp_path, real_vmms):
    """The target dies mid-precopy: the source fails the migration and
    runs on; the controller says so (exit 1).  The bandwidth cap keeps
    precopy longer than the test's reaction, however fast the machine."""
    from test_api import Ember
    src = Ember(tmp_path, run_args=["--kernel", guest("counter"), "--memory", "256M",
                                    "--cmdline", f"count={COUNT} spin={SPIN} fill=200",
                                    "--timeout", "120"], name="src")
    dst = Ember(tmp_path, name="dst")
    try:
        src.wait_output("count 5\n", timeout=WAIT)
        p = start("--from", src.sock, "--to", dst.sock, "--max-bandwidth", "10M")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            st, js = src.curl("GET", "/migration")
            if js and js.get("phase") == "precopy" and js.get("bytes_sent", 0) > 0:
                break
            time.sleep(0.05)
        dst.kill()
        rc, out, err = finish(p, timeout=120)
        assert rc == 1, err
        assert summary(out)["result"] == "failed"
        st, js = src.curl("GET", "/")
        assert js["state"] == "Running", js
        before = src.stdout().count("count ")
        src.wait_output(f"count {before + 1}\n", timeout=WAIT)  # it counts on
    finally:
        src.kill()
        dst.kill()


@needs_kvm
@pytest.mark.parametrize("auth", ["psk", "certificates"])
def test_real_between_namespaces(tmp_path, nets, pki, real_vmms, auth):
    src, dst = counting_pair(tmp_path)
    key = "ab" * 32
    port = next(_port)
    if auth == "psk":
        recv_auth = psk_file(tmp_path / "r.psk", key)
        send_auth = psk_file(tmp_path / "s.psk", key)
    else:
        recv_auth, send_auth = tls_args(pki, "recv"), tls_args(pki, "send")
    try:
        recv = start("--listen", f"{nets['addr']}:{port}", "--to", dst.sock, "--timeout", "60",
                     *recv_auth, netns=nets["recv"])
        assert "listening on" in recv.stderr.readline()
        send = migrate("--from", src.sock, "--to-host", f"{nets['addr']}:{port}", "--timeout",
                       "60", *send_auth, netns=nets["send"], timeout=120)
        rc, out, err = finish(recv, timeout=120)
        assert rc == 0, err
        assert summary(out)["result"] == "completed"
        assert send.returncode == 0, send.stderr
        assert summary(send.stdout)["handover"] == "gogo"  # told by the stream's last record
        check_moved(src, dst)
    finally:
        src.kill()
        dst.kill()
