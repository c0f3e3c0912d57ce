"""emberd under systemd (docs/ha.md, "systemd"): the sd_notify protocol for
real (a datagram socket standing in for systemd: READY=1 with STATUS=,
WATCHDOG=1 keep-alives at half of WATCHDOG_USEC, STOPPING=1 at SIGTERM),
stderr in journald's conventions, and the unit that `make install` puts
in place, checked by systemd-analyze verify."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT

BUILD = os.path.join(ROOT, "build")
EMBERD = os.path.abspath(os.environ.get("EMBERD", os.path.join(BUILD, "emberd")))


@pytest.fixture
def top():
    d = tempfile.mkdtemp(prefix="emberd-systemd-test.")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def recv_all(s, until, timeout=60):
    """Datagrams from s until until(msgs) is true (fails after timeout)."""
    msgs = []
    end = time.monotonic() + timeout
    while not until(msgs):
        left = end - time.monotonic()
        if left <= 0:
            pytest.fail(f"notify messages so far: {msgs}")
        s.settimeout(left)
        try:
            msgs.append(s.recv(4096).decode())
        except socket.timeout:
            pass
    return msgs


@pytest.mark.skipif(os.geteuid() != 0, reason="emberd needs root")
def test_notify_and_watchdog(top):
    vms = os.path.join(top, "vms")
    os.makedirs(vms)
    ns = os.path.join(top, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(ns)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WATCHDOG_PID", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(NOTIFY_SOCKET=ns, WATCHDOG_USEC="200000")
    p = subprocess.Popen([EMBERD, "--vm-dir", vms, "--state-dir", os.path.join(top, "state"),
                          "--sock", os.path.join(top, "emberd.sock")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msgs = recv_all(s, lambda m: sum("WATCHDOG=1" in x for x in m) >= 4)
        ready = [m for m in msgs if "READY=1" in m]
        assert len(ready) == 1, msgs
        assert re.search(r"^STATUS=.+", ready[0], re.M), ready
        # READY first: systemd starts counting the watchdog from there
        assert msgs.index(ready[0]) == 0
        p.send_signal(signal.SIGTERM)
        msgs = recv_all(s, lambda m: any("STOPPING=1" in x for x in m))
        assert p.wait(120) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        s.close()
    err = p.stderr.read()
    # journald's conventions: each line has a "<N>" priority prefix
    lines = [l for l in err.splitlines() if l]
    assert lines and all(re.match(r"<[0-7]>", l) for l in lines), err


@pytest.mark.skipif(os.geteuid() != 0, reason="emberd needs root")
def test_not_under_systemd(top):
    """No $NOTIFY_SOCKET: nothing is sent, nothing fails."""
    vms = os.path.join(top, "vms")
    os.makedirs(vms)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["WATCHDOG_USEC"] = "200000"
    sock = os.path.join(top, "emberd.sock")
    p = subprocess.Popen([EMBERD, "--vm-dir", vms, "--state-dir", os.path.join(top, "state"),
                          "--sock", sock], env=env, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 60
        while not os.path.exists(sock) and time.monotonic() < end and p.poll() is None:
            time.sleep(0.05)
        r = subprocess.run([os.path.join(BUILD, "emberctl"), "--sock", sock, "status"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_make_install_and_unit(top):
    prefix = os.path.join(top, "usr")
    etc = os.path.join(top, "etc")
    r = subprocess.run(["make", "-C", ROOT, "install", f"PREFIX={prefix}",
                        f"SYSCONFDIR={etc}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for b in ("ember", "ember-jailer", "ember-migrate", "emberd", "emberctl"):
        assert os.access(os.path.join(prefix, "bin", b), os.X_OK), b
    unit = os.path.join(prefix, "lib", "systemd", "system", "emberd.service")
    text = open(unit).read()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=10s", "Restart=on-failure",
                 "RestartSec=1s", "KillMode=mixed", "TimeoutStopSec=90s",
                 f"EnvironmentFile=-{etc}/default/emberd",
                 f"ExecStart={prefix}/bin/emberd --vm-dir {etc}/ember/vms "
                 "--state-dir /var/lib/emberd $EMBERD_OPTS"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert os.path.isfile(os.path.join(etc, "default", "emberd"))
    assert os.path.isdir(os.path.join(etc, "ember", "vms"))
    # an existing /etc/default/emberd is the admin's: never overwritten
    with open(os.path.join(etc, "default", "emberd"), "w") as f:
        f.write('EMBERD_OPTS="--host mine"\n')
    r = subprocess.run(["make", "-C", ROOT, "install", f"PREFIX={prefix}",
                        f"SYSCONFDIR={etc}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "mine" in open(os.path.join(etc, "default", "emberd")).read()

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed: the unit was not verified")
    r = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=120)
    # verify reports every problem of the unit on stderr (and fails on them)
    assert r.returncode == 0 and "emberd.service" not in r.stderr, r.stderr
