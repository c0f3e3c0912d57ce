"""Snapshots from the outside: Firecracker's PUT /snapshot/create and
/snapshot/load, `ember run --api-sock` (a command-line VM driven by the
API), `ember run --restore`, and `ember snapshot create|load|merge`.

The first part needs no snapshot core: argument errors, the state rules
(create only when paused, load only into a fresh ember), and a failed
load that leaves ember up and fresh.  The tests marked needs_snapshots
take a counting guest through pause, snapshot, kill and restore: the
joined output of both runs must count on with no number lost or
repeated; they skip while vm_snapshot_create() says "not built yet"."""
import os
import re
import signal
import time

import pytest

from conftest import EXIT_CONFIG, guest, needs_kvm, run
from test_api import POST_BOOT, PRE_BOOT, RUNNING_MSG, Ember, start_loop

RUNNING_MSG_SNAP = "save/restore unavailable while running"
NOT_FRESH = ("Loading a microVM snapshot not allowed after configuring "
             "boot-specific resources.")
DIFF_OFF = "Diff snapshots are not allowed on uVMs with dirty page tracking disabled."
COUNT_TO = 3000  # the counting guest's last line (~0.7 ms a line here)


@pytest.fixture
def api(tmp_path):
    e = Ember(tmp_path)
    yield e
    e.kill()


class RunApi(Ember):
    """`ember run ... --api-sock PATH`: a command-line VM with the API."""

    def __init__(self, tmp_path, *run_args, name="run"):
        super().__init__(tmp_path, run_args=run_args, name=name)


def snap(*args, timeout=60):
    return run(["snapshot"] + list(args), timeout=timeout)


# ---- the API's rules (no snapshot core needed) ----

@pytest.mark.parametrize("path,body,message", [
    ("/snapshot/create", {"snapshot_path": "/s"}, 'missing field "mem_file_path"'),
    ("/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m",
                          "snapshot_type": "Half"}, '"Half" is not Full or Diff'),
    ("/snapshot/create", {"snapshot_path": 1, "mem_file_path": "/m"},
     "snapshot_path: must be a string"),
    ("/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m", "colour": 1},
     'unknown field "colour"'),
    ("/snapshot/load", {"mem_file_path": "/m"}, 'missing field "snapshot_path"'),
    ("/snapshot/load", {"snapshot_path": "/s"},
     "either `mem_backend` or `mem_file_path` is required"),
    ("/snapshot/load", {"snapshot_path": "/s", "mem_file_path": "/m",
                        "mem_backend": {"backend_type": "File", "backend_path": "/m"}},
     "too many fields"),
    ("/snapshot/load", {"snapshot_path": "/s",
                        "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}},
     '"Uffd" is not supported by ember'),
    ("/snapshot/load", {"snapshot_path": "/s", "mem_backend": {"backend_type": "File"}},
     'missing field "mem_backend.backend_path"'),
    ("/snapshot/load", {"snapshot_path": "/s", "mem_file_path": "/m",
                        "network_overrides": [{"iface_id": "eth0"}]},
     'missing field "network_overrides[0].host_dev_name"'),
    ("/snapshot/load", {"snapshot_path": "/s", "mem_file_path": "/m",
                        "clock_realtime": True}, "clock_realtime: not supported"),
])
def test_bad_bodies(api, path, body, message):
    assert message in api.fault("PUT", path, body)
    assert api.curl("GET", "/")[1]["state"] == "Not started"


def test_snapshot_routes_are_put_only(api):
    assert "Invalid request method and/or path" in api.fault("GET", "/snapshot/create")


def test_create_before_boot(api):
    assert api.fault("PUT", "/snapshot/create",
                     {"snapshot_path": "/s", "mem_file_path": "/m"}) == PRE_BOOT


@needs_kvm
def test_create_while_running_and_diff_without_tracking(api, tmp_path):
    start_loop(api, tmp_path, drive=False)
    body = {"snapshot_path": str(tmp_path / "s"), "mem_file_path": str(tmp_path / "m")}
    assert RUNNING_MSG_SNAP in api.fault("PUT", "/snapshot/create", body)
    api.ok("PATCH", "/vm", {"state": "Paused"})
    assert api.fault("PUT", "/snapshot/create", dict(body, snapshot_type="Diff")) == DIFF_OFF
    assert not os.path.exists(body["snapshot_path"]) and not os.path.exists(body["mem_file_path"])
    api.ok("PATCH", "/vm", {"state": "Resumed"})
    assert api.p.poll() is None


@needs_kvm
def test_load_after_boot(api, tmp_path):
    start_loop(api, tmp_path, drive=False)
    assert api.fault("PUT", "/snapshot/load",
                     {"snapshot_path": "/s", "mem_file_path": "/m"}) == POST_BOOT


@pytest.mark.parametrize("path,body", [
    ("/boot-source", None),
    ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
])
def test_load_after_configuring(api, path, body):
    api.ok("PUT", path, body or {"kernel_image_path": guest("hello")})
    assert api.fault("PUT", "/snapshot/load",
                     {"snapshot_path": "/s", "mem_file_path": "/m"}) == NOT_FRESH


def test_logger_does_not_count_as_configuring(api, tmp_path):
    log = tmp_path / "log"
    log.write_text("")
    api.ok("PUT", "/logger", {"log_path": str(log)})
    msg = api.fault("PUT", "/snapshot/load",
                    {"snapshot_path": str(tmp_path / "none"), "mem_file_path": "/m"})
    assert msg != NOT_FRESH and str(tmp_path / "none") in msg


@needs_kvm
@pytest.mark.parametrize("content", [None, b"", b"garbage" * 100])
def test_failed_load_leaves_ember_fresh(api, tmp_path, content):
    state = tmp_path / "state"
    if content is not None:
        state.write_bytes(content)
    msg = api.fault("PUT", "/snapshot/load",
                    {"snapshot_path": str(state), "mem_file_path": str(tmp_path / "mem")})
    assert str(state) in msg  # vm_snapshot_open's reason names the file
    assert api.p.poll() is None
    assert api.curl("GET", "/")[1]["state"] == "Not started"
    # a second try is refused the same way, then a plain boot works
    assert api.fault("PUT", "/snapshot/load",
                     {"snapshot_path": str(state), "mem_file_path": "/m"}) == msg
    start_loop(api, tmp_path, drive=False)
    assert api.curl("GET", "/")[1]["state"] == "Running"


# ---- ember run --api-sock ----

@needs_kvm
def test_run_with_api_sock(tmp_path):
    e = RunApi(tmp_path, "--kernel", guest("loop"), "--vcpus", "2", "--timeout", "30")
    try:
        st, js = e.curl("GET", "/")
        assert st == 200 and js["state"] == "Running"  # from the first request on
        e.wait_output(RUNNING_MSG)
        st, js = e.curl("GET", "/machine-config")
        assert (js["vcpu_count"], js["mem_size_mib"]) == (2, 64)
        assert e.curl("GET", "/vm/config")[1]["boot-source"]["kernel_image_path"] == \
            guest("loop")
        e.ok("PATCH", "/vm", {"state": "Paused"})
        assert e.curl("GET", "/")[1]["state"] == "Paused"
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        st, js = e.curl("GET", "/ember/status")
        assert js["state"] == "Running" and js["vcpus"] == 2 and js["boot_time_us"] > 0
        assert e.fault("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}) \
            == POST_BOOT
        assert e.fault("PUT", "/actions", {"action_type": "InstanceStart"}) == POST_BOOT
        assert e.fault("PUT", "/snapshot/load",
                       {"snapshot_path": "/s", "mem_file_path": "/m"}) == POST_BOOT
        assert "metrics are not configured" in e.fault("PUT", "/actions",
                                                       {"action_type": "FlushMetrics"})
        assert RUNNING_MSG_SNAP in e.fault("PUT", "/snapshot/create",
                                           {"snapshot_path": "/s", "mem_file_path": "/m"})
        assert e.p.poll() is None
    finally:
        e.kill()


@needs_kvm
def test_run_with_api_sock_exit_code_is_the_guests(tmp_path):
    r = run(["run", "--kernel", guest("exit_status"), "--cmdline", "status=7", "--api-sock",
             str(tmp_path / "a.sock")])
    assert r.returncode == 7 and "exiting with 7" in r.stdout, r.stderr


def test_run_api_sock_bad_socket(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = run(["run", "--kernel", guest("loop"), "--api-sock", str(f), "--timeout", "5"])
    assert r.returncode == EXIT_CONFIG and "is not a socket" in r.stderr


# ---- ember run --restore, ember snapshot: arguments ----

@pytest.mark.parametrize("args,message", [
    (["run", "--restore", "/nonexistent/state", "--memory-file", "/m"], "/nonexistent/state"),
    (["run", "--restore", "/s"], "--restore needs --memory-file"),
    (["run", "--memory-file", "/m", "--kernel", "k"], "go with --restore"),
    (["run", "--restore", "/s", "--memory-file", "/m", "--paused"], "--paused needs --api-sock"),
    (["run", "x.ini", "--restore", "/s", "--memory-file", "/m"], "takes no INI file"),
    (["run", "--restore"], "--restore needs a value"),
    (["snapshot", "load", "/nonexistent/state", "--memory-file", "/m"], "/nonexistent/state"),
    (["snapshot", "load"], "give the state file first"),
    (["snapshot"], "give create, load or merge"),
    (["snapshot", "bogus"], "unknown subcommand bogus"),
    (["snapshot", "create", "--api-sock", "/x"], "create needs --api-sock PATH, --state"),
    (["snapshot", "create", "--api-sock", "/x", "--state", "s", "--memory", "m", "--x"],
     "unknown argument --x"),
    (["snapshot", "create", "--state"], "--state needs a value"),
    (["snapshot", "merge", "base"], "merge takes BASE_MEM DIFF_MEM"),
])
def test_argument_errors(args, message):
    r = run(args)
    assert r.returncode == EXIT_CONFIG, (r.stdout, r.stderr)
    assert message in r.stderr


def test_snapshot_create_without_ember(tmp_path):
    r = snap("create", "--api-sock", str(tmp_path / "none.sock"), "--state", "s",
             "--memory", "m")
    assert r.returncode == 1
    assert "cannot reach ember at" in r.stderr and "none.sock" in r.stderr


def test_snapshot_create_before_boot(api):
    r = snap("create", "--api-sock", api.sock, "--state", "s", "--memory", "m")
    assert r.returncode == 1 and "Not started" in r.stderr


def test_help_snapshot():
    r = run(["help", "snapshot"])
    assert r.returncode == 0
    for word in ("snapshot create", "snapshot load", "snapshot merge", "--diff", "--resume"):
        assert word in r.stdout
    assert "snapshot" in run(["help"]).stdout
    assert "--restore" in run(["run", "--help"]).stdout


# ---- with the snapshot core: counting on across a restore ----

_have_snapshots = None


def snapshots_built(tmp_path_factory):
    """Whether vm_snapshot_create works: one create on a paused loop guest."""
    global _have_snapshots
    if _have_snapshots is None:
        d = tmp_path_factory.mktemp("probe")
        e = RunApi(d, "--kernel", guest("loop"), "--timeout", "30")
        try:
            e.ok("PATCH", "/vm", {"state": "Paused"})
            st, js = e.curl("PUT", "/snapshot/create", {"snapshot_path": str(d / "s"),
                                                        "mem_file_path": str(d / "m")})
            _have_snapshots = st == 204 or "not built yet" not in str(js)
        finally:
            e.kill()
    return _have_snapshots


@pytest.fixture
def needs_snapshots(tmp_path_factory):
    if not snapshots_built(tmp_path_factory):
        pytest.skip("snapshots are not built yet (vm_snapshot_create)")


def counts(text):
    """The numbers of the 'count N' lines, checked to be 1, 2, 3, ..."""
    nums = [int(n) for n in re.findall(r"count (\d+)\n", text)]
    assert nums, text[-300:]
    bad = [(i + 1, n) for i, n in enumerate(nums) if n != i + 1]
    assert not bad, f"first out of order (expected, got): {bad[:3]}"
    return nums


def count_and_snapshot(tmp_path, *run_args, at=200, diff=False):
    """The counting guest under `ember run --api-sock`, snapshotted with
    `ember snapshot create` once it passed count `at`, then killed.
    Returns (raw output, state, mem)."""
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    e = RunApi(tmp_path, "--kernel", guest("counter"), "--cmdline", f"count={COUNT_TO}",
               "--timeout", "60", *run_args, name="first")
    try:
        e.wait_output(f"count {at}\n")
        r = snap("create", "--api-sock", e.sock, "--state", str(state), "--memory", str(mem))
        assert r.returncode == 0, r.stderr
        assert e.curl("GET", "/")[1]["state"] == "Paused"
        out = e.out_path.read_bytes()
        time.sleep(0.05)
        assert e.out_path.read_bytes() == out, "a paused guest went on writing"
        e.p.send_signal(signal.SIGKILL)
        e.wait()
    finally:
        e.kill()
    assert f"count {COUNT_TO}\n" not in out.decode()
    return out.decode(errors="replace"), state, mem


@needs_kvm
def test_restore_with_ember_run_counts_on(tmp_path, needs_snapshots):
    first, state, mem = count_and_snapshot(tmp_path)
    r = run(["run", "--restore", str(state), "--memory-file", str(mem), "--timeout", "30"])
    assert r.returncode == 0, r.stderr
    assert counts(first + r.stdout)[-1] == COUNT_TO


@needs_kvm
def test_restore_with_snapshot_load_and_memory_copy(tmp_path, needs_snapshots):
    first, state, mem = count_and_snapshot(tmp_path)
    r = snap("load", str(state), "--memory-file", str(mem), "--memory-copy", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    assert counts(first + r.stdout)[-1] == COUNT_TO


@needs_kvm
def test_restore_with_api_load_resume(tmp_path, needs_snapshots, api):
    first, state, mem = count_and_snapshot(tmp_path)
    api.ok("PUT", "/snapshot/load", {"snapshot_path": str(state),
                                     "mem_backend": {"backend_type": "File",
                                                     "backend_path": str(mem)},
                                     "resume_vm": True})
    assert api.wait(timeout=30) == 0
    assert counts(first + api.stdout())[-1] == COUNT_TO


@needs_kvm
def test_restore_paused_then_resumed(tmp_path, needs_snapshots, api):
    first, state, mem = count_and_snapshot(tmp_path)
    # a failed load first: the next one must still work
    assert api.fault("PUT", "/snapshot/load", {"snapshot_path": str(state),
                                               "mem_file_path": str(tmp_path / "none")})
    api.ok("PUT", "/snapshot/load", {"snapshot_path": str(state), "mem_file_path": str(mem),
                                     "resume_vm": False})
    assert api.curl("GET", "/")[1]["state"] == "Paused"
    time.sleep(0.1)
    assert api.stdout() == ""
    api.ok("PATCH", "/vm", {"state": "Resumed"})
    assert api.wait(timeout=30) == 0
    assert counts(first + api.stdout())[-1] == COUNT_TO


@needs_kvm
def test_run_restore_paused_over_the_api(tmp_path, needs_snapshots):
    first, state, mem = count_and_snapshot(tmp_path)
    e = RunApi(tmp_path, "--restore", str(state), "--memory-file", str(mem), "--paused",
               "--timeout", "30", name="second")
    try:
        assert e.curl("GET", "/")[1]["state"] == "Paused"
        e.ok("PATCH", "/vm", {"state": "Resumed"})
        assert e.wait(timeout=30) == 0
        assert counts(first + e.stdout())[-1] == COUNT_TO
    finally:
        e.kill()


@needs_kvm
def test_snapshot_twice_then_restore(tmp_path, needs_snapshots):
    """Snapshot, resume (--resume), snapshot again later: the second one
    restores where the second left off."""
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    e = RunApi(tmp_path, "--kernel", guest("counter"), "--cmdline", f"count={COUNT_TO}",
               "--timeout", "60", name="first")
    try:
        e.wait_output("count 100\n")
        r = snap("create", "--api-sock", e.sock, "--state", str(state), "--memory", str(mem),
                 "--resume")
        assert r.returncode == 0, r.stderr
        assert e.curl("GET", "/")[1]["state"] == "Running"
        e.wait_output("count 300\n")
        r = snap("create", "--api-sock", e.sock, "--state", str(state), "--memory", str(mem))
        assert r.returncode == 0, r.stderr
        e.p.send_signal(signal.SIGKILL)
        e.wait()
    finally:
        e.kill()
    first = e.stdout()
    r = run(["run", "--restore", str(state), "--memory-file", str(mem), "--timeout", "30"])
    assert r.returncode == 0, r.stderr
    assert counts(first + r.stdout)[-1] == COUNT_TO


@needs_kvm
def test_diff_snapshot_merged(tmp_path, needs_snapshots):
    """--track-dirty: a full snapshot, then a diff one; merge the diff's
    memory into the full one and restore from the diff's state."""
    full_s, full_m = tmp_path / "full.state", tmp_path / "full.mem"
    diff_s, diff_m = tmp_path / "diff.state", tmp_path / "diff.mem"
    e = RunApi(tmp_path, "--kernel", guest("counter"), "--cmdline", f"count={COUNT_TO}",
               "--timeout", "60", "--track-dirty", name="first")
    try:
        e.wait_output("count 100\n")
        r = snap("create", "--api-sock", e.sock, "--state", str(full_s), "--memory",
                 str(full_m), "--resume")
        assert r.returncode == 0, r.stderr
        e.wait_output("count 300\n")
        r = snap("create", "--api-sock", e.sock, "--state", str(diff_s), "--memory",
                 str(diff_m), "--diff")
        assert r.returncode == 0, r.stderr
        e.p.send_signal(signal.SIGKILL)
        e.wait()
    finally:
        e.kill()
    r = snap("merge", str(full_m), str(diff_m))
    if "not built yet" in r.stderr:
        pytest.skip("ember snapshot merge is not built yet")
    assert r.returncode == 0, r.stderr
    r = run(["run", "--restore", str(diff_s), "--memory-file", str(full_m), "--timeout", "30"])
    assert r.returncode == 0, r.stderr
    assert counts(e.stdout() + r.stdout)[-1] == COUNT_TO


@needs_kvm
@pytest.mark.parametrize("args,message", [
    (["--memory", "128M"], "--memory: not with --restore"),
    (["--kernel", "/k"], "--kernel: not with --restore"),
    (["--drive", "nosuch,path=/x"], "the snapshot has no such drive"),
    (["--net", "nosuch,tap=tap0"], "the snapshot has no such network device"),
    (["--vsock", "uds=/tmp/v.sock"], "the snapshot has no vsock device"),
])
def test_restore_overrides_refused(tmp_path, needs_snapshots, args, message):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    e = RunApi(tmp_path, "--kernel", guest("loop"), "--timeout", "30")
    try:
        r = snap("create", "--api-sock", e.sock, "--state", str(state), "--memory", str(mem))
        assert r.returncode == 0, r.stderr
    finally:
        e.kill()
    r = run(["run", "--restore", str(state), "--memory-file", str(mem)] + args)
    assert r.returncode == EXIT_CONFIG and message in r.stderr, r.stderr
