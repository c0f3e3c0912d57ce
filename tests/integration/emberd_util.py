"""A harness for emberd's integration tests (test_emberd*.py, the cluster's
and the control CLI's tests import it): VM files written into a temp
folder, emberd started with its own state folder, jail base and control
socket, its events read back from STATE/events.log, the control API
called over its unix socket, and everything (emberd, its VMs, the jails'
mounts, the folders) cleaned up even when a test fails.

    ed = Emberd(tmp_path)
    ed.write_vm("c1", kernel=guest("counter"), cmdline="spin=20000000",
                emberd={"restart": "always", "restart_delay": "0"})
    ed.start()
    ev = ed.wait_event("started", vm="c1")
    ...
    ed.close()            # or use it as a context manager / the fixture

emberd needs root (ember-jailer, bind mounts): tests skip without it.
EMBER_JAIL_BASE moves the jails (the temp folder must allow exec and
device nodes)."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

from conftest import EMBER

BUILD = os.path.dirname(EMBER)
EMBERD = os.path.abspath(os.environ.get("EMBERD", os.path.join(BUILD, "emberd")))
JAILER = os.path.abspath(os.environ.get("EMBER_JAILER", os.path.join(BUILD, "ember-jailer")))
JAIL_UID = 65534  # emberd's default --uid/--gid

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="emberd needs root (ember-jailer, bind mounts)")


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def api_call(sock, method, path, body=None, timeout=30):
    """(status, parsed JSON body or text or None) of one request to a
    unix-socket HTTP server (emberd's control socket, ember's API)."""
    c = _UnixHTTP(sock, timeout)
    try:
        data = json.dumps(body) if body is not None else None
        c.request(method, path, body=data,
                  headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
    finally:
        c.close()
    try:
        return r.status, json.loads(raw) if raw else None
    except ValueError:
        return r.status, raw.decode(errors="replace")


def unmount_below(path):
    """Detach every mount at or below path, deepest first."""
    path = os.path.realpath(path)
    mps = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                mps.append(mp)
    for mp in sorted(mps, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def ini(sections):
    """INI text from {"vm": {"kernel": ...}, "emberd": {...}, ...}."""
    out = []
    for sec, keys in sections.items():
        out.append(f"[{sec}]")
        out += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(out) + "\n"


class Emberd:
    def __init__(self, tmp_path, args=(), jail_base=None):
        self.dir = str(tmp_path)
        self.vm_dir = os.path.join(self.dir, "vms")
        self.state_dir = os.path.join(self.dir, "state")
        self.sock = os.path.join(self.dir, "emberd.sock")
        root = os.environ.get("EMBER_JAIL_BASE")
        self.jail_base = jail_base or (os.path.join(root, uuid.uuid4().hex[:8]) if root
                                       else os.path.join(self.dir, "jails"))
        os.makedirs(self.vm_dir, exist_ok=True)
        os.makedirs(self.jail_base, exist_ok=True)
        flags = os.statvfs(self.jail_base).f_flag
        if flags & (os.ST_NODEV | os.ST_NOEXEC):
            pytest.skip(f"{self.jail_base} is nodev or noexec: set EMBER_JAIL_BASE")
        self.args = list(args)
        self.proc = None
        self.starts = 0
        self.vm_pids = set()  # every ember pid seen, for the clean-up

    # ---- VM files ----
    def write_vm(self, name, kernel, cmdline=None, memory="32M", emberd=None, drives=None,
                 extra=None, text=None):
        """Write vms/NAME.ini; drives: {ID: (path, read_only)}; extra:
        more sections {section: {key: value}}; text: the whole file as
        given instead.  Returns the path."""
        path = os.path.join(self.vm_dir, name + ".ini")
        if text is None:
            secs = {"vm": {"kernel": kernel, "memory": memory}}
            if cmdline:
                secs["vm"]["cmdline"] = cmdline
            for i, (p, ro) in (drives or {}).items():
                secs[f"drive.{i}"] = {"path": p, "read_only": "on" if ro else "off"}
            secs.update(extra or {})
            if emberd:
                secs["emberd"] = emberd
            text = ini(secs)
        with open(path, "w") as f:
            f.write(text)
        return path

    # ---- emberd itself ----
    def start(self, *more):
        """Start emberd; returns once its "ready" event is written."""
        assert self.proc is None or self.proc.poll() is not None, "emberd runs already"
        self.starts += 1
        self.stderr_path = os.path.join(self.dir, f"emberd-{self.starts}.stderr")
        since = self.last_seq()
        cmd = [EMBERD, "--vm-dir", self.vm_dir, "--state-dir", self.state_dir,
               "--sock", self.sock, "--jail-base", self.jail_base,
               "--ember", EMBER, "--jailer", JAILER] + self.args + list(more)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=open(self.stderr_path, "w"),
                                     stderr=subprocess.STDOUT)
        self.wait_event("ready", after=since, vm=None)
        return self.proc

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout=60):
        """SIGTERM (a host shutdown: every VM suspended); its exit code."""
        self._track()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"emberd did not exit {timeout} s after SIGTERM:\n{self.stderr()}")

    def kill(self):
        self._track()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def close(self):
        """Kill emberd and every ember it started; unmount and remove."""
        self.kill()
        for pid in self.vm_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        unmount_below(self.jail_base)
        shutil.rmtree(self.jail_base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- events ----
    def all_events(self):
        """Every event of STATE/events.log (all emberd runs), oldest first."""
        p = os.path.join(self.state_dir, "events.log")
        if not os.path.exists(p):
            return []
        with open(p) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def last_seq(self):
        """A mark for wait_event(after=): the number of events so far."""
        return len(self.all_events())

    def wait_event(self, kind, vm="", after=0, timeout=60, where=None):
        """The first event of kind (and of vm unless vm is "": None is a
        host event) among those after the mark `after` (last_seq()); and
        where(event) true if given.  Fails with the events seen."""
        deadline = time.monotonic() + timeout
        while True:
            evs = self.all_events()[after:]
            for ev in evs:
                if ev["kind"] == kind and (vm == "" or ev["vm"] == vm) and \
                        (where is None or where(ev)):
                    return ev
            if self.proc is not None and self.proc.poll() is not None and kind != "stopped":
                pytest.fail(f"emberd exited ({self.proc.returncode}) while waiting for "
                            f"{kind} {vm}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {kind!r} event for {vm!r} in {timeout} s; events:\n" +
                            "\n".join(json.dumps(e) for e in evs))
            time.sleep(0.02)

    # ---- control API ----
    def api(self, method, path, body=None, timeout=60):
        return api_call(self.sock, method, path, body, timeout)

    def status(self, vm):
        st, body = self.api("GET", f"/vms/{vm}")
        assert st == 200, body
        return body

    def vm_pid(self, vm, timeout=60):
        """The pid of vm's ember once it runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status(vm)
            if s["state"] == "running" and s["pid"]:
                self.vm_pids.add(s["pid"])
                return s["pid"]
            time.sleep(0.02)
        pytest.fail(f"{vm} not running in {timeout} s: {self.status(vm)}")

    def _track(self):
        if self.proc and self.proc.poll() is None and os.path.exists(self.sock):
            try:
                st, body = self.api("GET", "/vms", timeout=5)
                if st == 200:
                    self.vm_pids.update(v["pid"] for v in body if v.get("pid"))
            except OSError:
                pass

    # ---- console ----
    def console_path(self, vm):
        return os.path.join(self.state_dir, "vms", vm, "console.log")

    def console(self, vm):
        p = self.console_path(vm)
        if not os.path.exists(p):
            return ""
        with open(p, errors="replace") as f:
            return f.read()

    def runs(self, vm):
        """The console log split at emberd's "--- emberd: ..." lines: one
        [(header, [counts...])] per run of the VM."""
        out = []
        text = self.console(vm)
        if not text.endswith("\n"):  # the line being written
            text = text[:text.rfind("\n") + 1]
        for line in text.splitlines():
            if line.startswith("--- emberd:"):
                out.append((line, []))
            else:
                m = re.fullmatch(r"count (\d+)", line.strip())
                if m and out:
                    out[-1][1].append(int(m.group(1)))
        return out

    def counts(self, vm):
        """Every count vm printed, across its runs, with the line a kill or
        a suspend cut joined to what the next run printed first (emberd's
        header says "(the line above was cut)" where it put a newline):
        over a suspend and resume this is 1, 2, 3... without a gap."""
        text = self.console(vm)
        if not text.endswith("\n"):  # the line being written
            text = text[:text.rfind("\n") + 1]
        text = re.sub(r"\n--- emberd: \(the line above was cut\) [^\n]*\n", "", text)
        text = re.sub(r"--- emberd: [^\n]*\n", "", text)
        return [int(m) for m in re.findall(r"^count (\d+)$", text, re.M)]

    def wait_count(self, vm, n, timeout=60):
        """Wait until the current run of vm has printed count >= n."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.runs(vm)
            if r and r[-1][1] and r[-1][1][-1] >= n:
                return r[-1][1][-1]
            time.sleep(0.02)
        pytest.fail(f"{vm} never counted to {n}: {self.console(vm)[-2000:]}")


@pytest.fixture
def emberd(tmp_path):
    """An Emberd in tmp_path, closed after the test."""
    if os.geteuid() != 0:
        pytest.skip("emberd needs root (ember-jailer, bind mounts)")
    for b in (EMBERD, JAILER, EMBER):
        if not os.path.exists(b):
            pytest.fail(f"{b} missing: run make all")
    ed = Emberd(tmp_path)
    yield ed
    ed.close()
