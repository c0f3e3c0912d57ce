"""emberd on one host (docs/ha.md), with the real ember-jailer, real KVM
and the counting guest (build/guest/counter.elf: "count N" lines):

- a VM starts through the jailer (chrooted, its own mount namespace, the
  jail's uid) and its console log fills;
- kill -9 its ember: it is restored from its latest snapshot and counts on
  from the snapshot's number;
- a VM with a writable drive boots fresh instead; resume=rollback resumes
  with its drive rolled back to the snapshot's moment;
- restart limits and backoff (the delays recorded in the events), restart=
  never, on-failure with a clean exit;
- SIGTERM suspends every VM, and a new emberd resumes each;
- a malformed VM file is reported (file:line) and skipped, the others run;
- kill -9 emberd: its VMs die with it (ember-jailer --die-with-parent)."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import guest, needs_kvm
from emberd_util import JAIL_UID, JAILER, EMBER, emberd  # noqa: F401 (fixture)

pytestmark = [needs_kvm]

SPIN = "spin=20000000"  # seconds between a test's look and the guest's next lines


def counter_vm(ed, name, emberd_keys=None, **kw):
    keys = {"restart": "always", "restart_delay": "0"}
    keys.update(emberd_keys or {})
    return ed.write_vm(name, kernel=guest("counter"), cmdline=SPIN, emberd=keys, **kw)


def gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1][0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


def booted(header):
    """Whether a run's header (Emberd.runs) says emberd booted it."""
    return re.match(r"--- emberd: (\(the line above was cut\) )?boot ", header) is not None


def snapshot_now(ed, vm):
    """PUT /vms/VM/snapshot; (the highest count printed before the
    request, the highest after its reply): the snapshot's count lies
    between them."""
    before = ed.runs(vm)[-1][1][-1]
    st, body = ed.api("PUT", f"/vms/{vm}/snapshot")
    assert st == 200, body
    after = ed.runs(vm)[-1][1][-1]
    return before, after, body["dir"]


def test_starts_jailed(emberd):
    ed = emberd
    counter_vm(ed, "c1")
    ed.start()
    ev = ed.wait_event("started", vm="c1")
    pid = ed.vm_pid("c1")
    assert f"pid {pid}" in ev["detail"]
    ed.wait_count("c1", 3)
    # chrooted into its jail, in a mount namespace of its own, as the jail's uid
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    names = set(os.listdir(f"/proc/{pid}/root"))
    assert {"vm.ini", "vm", "snap", "api.sock", "ember", "dev"} <= names, names
    assert sorted(os.listdir(f"/proc/{pid}/root/vm")) == ["kernel"]
    with open(f"/proc/{pid}/status") as f:
        uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
    assert int(uid) == JAIL_UID
    # /vm.ini: the user's file, [emberd] left out, paths inside the jail
    with open(f"/proc/{pid}/root/vm.ini") as f:
        text = f.read()
    assert "[emberd]" not in text and "kernel = /vm/kernel" in text
    assert "output = stdout" in text
    st = ed.status("c1")
    assert st["state"] == "running" and st["policy"]["restart"] == "always"


def test_kill_restores_from_snapshot(emberd):
    ed = emberd
    counter_vm(ed, "c1")
    ed.start()
    ed.wait_count("c1", 10)
    lo, hi, d = snapshot_now(ed, "c1")
    ed.wait_count("c1", hi + 5)  # it runs on past the snapshot
    pid = ed.vm_pid("c1")
    mark = ed.last_seq()
    os.kill(pid, signal.SIGKILL)
    ex = ed.wait_event("exited", vm="c1", after=mark)
    assert "signal 9" in ex["detail"]
    ev = ed.wait_event("restored", vm="c1", after=mark)
    assert d in ev["detail"]
    assert ed.vm_pid("c1") != pid
    ed.wait_count("c1", hi + 3)
    runs = ed.runs("c1")
    assert len(runs) == 2 and "restore from " + d in runs[1][0]
    counts = runs[1][1]
    # on from the snapshot's count: nothing before it missing, never back past it
    assert lo < counts[0] <= hi + 1, (lo, hi, counts[:5])
    assert counts == list(range(counts[0], counts[0] + len(counts)))
    assert ed.status("c1")["restarts"] == 1


def test_retired_jails_removed_off_the_restart_path(emberd):
    """After a kill the old jail is renamed aside (.gone-PID-N) and removed
    by emberd's thread, not by the restart; one an earlier emberd (another
    pid) left is swept by the next start."""
    ed = emberd
    counter_vm(ed, "g1")
    ed.start()
    ed.wait_event("started", vm="g1")
    base = os.path.join(ed.jail_base, "ember")
    stale = os.path.join(base, "g1.gone-1-1")  # an earlier emberd's (pid 1 is never emberd)
    os.makedirs(os.path.join(stale, "root"))
    mark = ed.last_seq()
    os.kill(ed.vm_pid("g1"), signal.SIGKILL)
    ed.wait_event("restarted", vm="g1", after=mark)
    assert not os.path.exists(stale), "the start did not sweep an earlier emberd's jail"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [n for n in os.listdir(base) if ".gone-" in n]:
        time.sleep(0.05)
    assert not [n for n in os.listdir(base) if ".gone-" in n], os.listdir(base)
    assert "g1" in os.listdir(base)


def test_writable_drive_boots_fresh(emberd, tmp_path):
    ed = emberd
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (1 << 20))
    counter_vm(ed, "w1", drives={"d0": (str(disk), False)})
    ed.start()
    ed.wait_count("w1", 5)
    snapshot_now(ed, "w1")
    assert os.stat(disk).st_uid == JAIL_UID  # chowned for the jailed ember
    mark = ed.last_seq()
    os.kill(ed.vm_pid("w1"), signal.SIGKILL)
    ev = ed.wait_event("restarted", vm="w1", after=mark)
    assert "booted" in ev["detail"] and "writable drive" in ev["detail"]
    assert not [e for e in ed.all_events()[mark:] if e["kind"] == "restored"]
    ed.wait_count("w1", 2)
    runs = ed.runs("w1")
    assert booted(runs[-1][0]) and runs[-1][1][0] == 1


def test_rollback_resumes_with_its_drive(emberd, tmp_path):
    ed = emberd
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"A" * (1 << 20))
    counter_vm(ed, "r1", {"resume": "rollback"}, drives={"d0": (str(disk), False)})
    ed.start()
    ed.wait_count("r1", 5)
    lo, hi, d = snapshot_now(ed, "r1")
    assert os.path.exists(os.path.join(d, "drive-d0"))
    # what the guest "wrote" after the snapshot (the host writes it here)
    with open(disk, "r+b") as f:
        f.write(b"B" * 4096)
    mark = ed.last_seq()
    os.kill(ed.vm_pid("r1"), signal.SIGKILL)
    ev = ed.wait_event("restored", vm="r1", after=mark)
    assert "rollback" in ev["detail"]
    assert disk.read_bytes() == b"A" * (1 << 20)  # memory and disk from one moment
    ed.wait_count("r1", hi + 2)
    assert lo < ed.runs("r1")[-1][1][0] <= hi + 1


def test_restart_limits_and_backoff(emberd):
    ed = emberd
    ed.write_vm("f1", kernel=guest("exit_status"), cmdline="status=3",
                emberd={"restart": "on-failure", "restart_attempts": "3",
                        "restart_interval": "1m", "restart_delay": "100ms",
                        "restart_max_delay": "300ms"})
    ed.start()
    failed = ed.wait_event("failed", vm="f1")
    assert "3 restarts within 60000 ms" in failed["detail"]
    evs = [e for e in ed.all_events() if e["vm"] == "f1"]
    delays = [int(re.search(r"in (\d+) ms", e["detail"]).group(1))
              for e in evs if e["kind"] == "backoff"]
    assert delays == [100, 200, 300]  # doubling, up to the ceiling
    exits = [e for e in evs if e["kind"] == "exited"]
    assert len(exits) == 4 and all("exit code 3" in e["detail"] for e in exits)
    # each restart waited at least its delay (emberd's own clock)
    starts = [e for e in evs if e["kind"] in ("started", "restarted")]
    for ex, st, dl in zip(exits, starts[1:], delays):
        assert st["mono_ms"] - ex["mono_ms"] >= dl
    st = ed.status("f1")
    assert st["state"] == "failed" and st["last_exit"]["code"] == 3


def test_restart_never_and_clean_exit(emberd):
    ed = emberd
    ed.write_vm("n1", kernel=guest("exit_status"), cmdline="status=3",
                emberd={"restart": "never"})
    ed.write_vm("ok1", kernel=guest("exit_status"), cmdline="status=0",
                emberd={"restart": "on-failure"})
    ed.start()
    ev = ed.wait_event("failed", vm="n1")
    assert "restart=never" in ev["detail"]
    ev = ed.wait_event("stopped", vm="ok1")
    assert "cleanly" in ev["detail"]
    time.sleep(0.5)
    kinds = [e["kind"] for e in ed.all_events() if e["vm"] in ("n1", "ok1")]
    assert "backoff" not in kinds and kinds.count("exited") == 2  # no restart
    assert ed.status("ok1")["state"] == "stopped"
    assert ed.status("n1")["state"] == "failed"


def test_shutdown_suspends_and_start_resumes(emberd):
    ed = emberd
    counter_vm(ed, "s1")
    counter_vm(ed, "s2")
    ed.start()
    last = {}
    for vm in ("s1", "s2"):
        ed.wait_count(vm, 5)
    assert ed.stop() == 0
    for vm in ("s1", "s2"):
        ev = ed.wait_event("suspended", vm=vm)
        assert os.path.exists(os.path.join(ed.state_dir, "vms", vm, "suspended"))
        last[vm] = ed.runs(vm)[-1][1][-1]
    ed.start()
    for vm in ("s1", "s2"):
        ev = ed.wait_event("resumed", vm=vm)
        assert "suspended at host shutdown" in ev["detail"]
        ed.wait_count(vm, last[vm] + 3)
        # on from exactly where it stopped (the suspend paused it, maybe
        # in the middle of a line): no count lost or repeated
        counts = ed.counts(vm)
        assert counts == list(range(1, len(counts) + 1)), counts
        assert len(ed.runs(vm)) == 2
        assert not os.path.exists(os.path.join(ed.state_dir, "vms", vm, "suspended"))


def test_malformed_files_skipped(emberd):
    ed = emberd
    counter_vm(ed, "good")
    bad1 = ed.write_vm("bad1", kernel=guest("counter"), emberd={"restart": "sometimes"})
    bad2 = ed.write_vm("bad2", kernel=guest("counter"), extra={"serial": {"colour": "red"}})
    ed.start()
    errs = [e["detail"] for e in ed.all_events() if e["kind"] == "config-error"]
    assert any(e.startswith(f"{bad1}:5: [emberd] restart:") and "sometimes" in e
               for e in errs), errs
    assert any(e.startswith(f"{bad2}:5: [serial] colour: unknown key") for e in errs), errs
    ed.wait_event("started", vm="good")
    st, body = ed.api("GET", "/vms")
    assert [v["name"] for v in body] == ["good"]
    ed.wait_count("good", 2)


def test_vms_die_with_emberd(emberd):
    ed = emberd
    counter_vm(ed, "d1")
    ed.start()
    pid = ed.vm_pid("d1")
    ed.kill()  # SIGKILL: no suspend, no clean-up
    assert gone(pid), "the VM's ember outlived its supervisor"


def test_jailer_die_with_parent_refusals(tmp_path):
    r = subprocess.run([JAILER, "--id", "x", "--exec-file", EMBER, "--uid", "1", "--gid", "1",
                        "--die-with-parent", "--daemonize", "--", "run"],
                       capture_output=True, text=True)
    assert r.returncode == 121 and "--die-with-parent cannot go with --daemonize" in r.stderr


def test_periodic_snapshots_keep_the_latest(emberd):
    ed = emberd
    counter_vm(ed, "p1", {"snapshot_interval": "200ms"})
    ed.start()
    mark = ed.last_seq()
    for _ in range(3):
        ev = ed.wait_event("snapshot", vm="p1", after=mark)
        mark = ed.all_events().index(ev) + 1
    folder = os.path.join(ed.state_dir, "snapshots", "p1")
    with open(os.path.join(folder, "latest")) as f:
        latest = f.read().strip()
    # the committed one, and at most one newer being written
    dirs = sorted(d for d in os.listdir(folder) if d != "latest" and not d.endswith(".tmp"))
    assert latest in dirs and len(dirs) <= 2, dirs
    assert {"state", "mem", "meta"} <= set(os.listdir(os.path.join(folder, latest)))
    # the jailed uid writes a snapshot's files while it is made, nothing
    # else: the VM's folder (with `latest`) and a written snapshot are root's
    assert os.stat(folder).st_uid == 0 and os.stat(os.path.join(folder, latest)).st_uid == 0
    assert os.stat(os.path.join(folder, latest, "mem")).st_uid == JAIL_UID


def test_stop_is_not_restarted(emberd):
    ed = emberd
    counter_vm(ed, "t1")
    ed.start()
    pid = ed.vm_pid("t1")
    st, body = ed.api("PUT", "/vms/t1/stop", {"grace_ms": 2000})
    assert st == 204, body
    ed.wait_event("stopped", vm="t1")
    assert gone(pid)
    time.sleep(0.3)
    s = ed.status("t1")
    assert s["state"] == "stopped" and s["pid"] is None
    kinds = [e["kind"] for e in ed.all_events() if e["vm"] == "t1"]
    assert "backoff" not in kinds and "failed" not in kinds
    st, body = ed.api("PUT", "/vms/t1/start")
    assert st == 204, body
    ed.wait_event("started", vm="t1", after=len(ed.all_events()) - 1)


def test_reload_adds_and_removes(emberd):
    ed = emberd
    counter_vm(ed, "a1")
    ed.start()
    ed.vm_pid("a1")
    counter_vm(ed, "a2")
    os.unlink(os.path.join(ed.vm_dir, "a1.ini"))
    mark = ed.last_seq()
    ed.proc.send_signal(signal.SIGHUP)
    ed.wait_event("started", vm="a2", after=mark)
    ed.wait_event("stopped", vm="a1", after=mark)
    st, body = ed.api("GET", "/vms")
    assert [v["name"] for v in body] == ["a2"]


def test_snapshot_that_will_not_load_boots_if_lossless(emberd):
    ed = emberd
    counter_vm(ed, "x1")
    ed.start()
    ed.wait_count("x1", 3)
    _, _, d = snapshot_now(ed, "x1")
    with open(os.path.join(d, "state"), "r+b") as f:  # a damaged state file
        f.write(b"NOTASNAP")
    mark = ed.last_seq()
    os.kill(ed.vm_pid("x1"), signal.SIGKILL)
    ev = ed.wait_event("snapshot-failed", vm="x1", after=mark)
    assert "booting, which loses nothing" in ev["detail"]
    ed.wait_event("restarted", vm="x1", after=mark)
    ed.wait_count("x1", 2)
    assert booted(ed.runs("x1")[-1][0])


def test_jailer_die_with_parent(tmp_path):
    """ember-jailer --die-with-parent alone: kill -9 the process that ran
    the jailer, and the jailed ember dies with it."""
    if os.geteuid() != 0:
        pytest.skip("the jailer needs root")
    base = str(tmp_path / "jails")
    root = os.path.join(base, "ember", "dwp", "root")
    os.makedirs(root)
    shutil.copy(guest("counter"), os.path.join(root, "counter.elf"))
    parent = subprocess.Popen(
        ["sh", "-c", f'"$0" --id dwp --exec-file "$1" --uid {JAIL_UID} --gid {JAIL_UID} '
         f'--chroot-base-dir "$2" --die-with-parent -- run --kernel /counter.elf '
         f'--cmdline {SPIN} --serial none & echo $!; wait', JAILER, EMBER, base],
        stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the jailer has become ember
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ember\0run"):
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the jailer never exec'd ember")
        parent.kill()
        assert gone(pid), "ember outlived the jailer's caller"
    finally:
        parent.kill()
        parent.wait()
        try:
            os.kill(pid, signal.SIGKILL)
        except (OSError, UnboundLocalError):
            pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("args,msg", [
    ([], "--vm-dir and --state-dir are required"),
    (["--vm-dir", "v", "--state-dir", "s", "--uid", "0"], "--uid 0: a number, not 0"),
    (["--vm-dir", "v", "--state-dir", "s", "--gid", "x"], "--gid x: a number"),
    (["--vm-dir", "v", "--state-dir", "s", "--ttl", "0"], "--ttl 0"),
    (["--vm-dir", "v", "--state-dir", "s", "--grace", "5"], "--grace 5: a duration"),
    (["--vm-dir", "v", "--state-dir", "s", "--host", "a_b"], "--host \"a_b\""),
    (["--bogus", "1"], "unknown option --bogus"),
])
def test_usage_errors(args, msg):
    from emberd_util import EMBERD
    r = subprocess.run([EMBERD] + args, capture_output=True, text=True)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    r = subprocess.run([EMBERD, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--jail-base" in r.stdout and "--etcd" in r.stdout


def test_resume_never_boots(emberd):
    ed = emberd
    counter_vm(ed, "nv", {"resume": "never"})
    ed.start()
    ed.wait_count("nv", 3)
    snapshot_now(ed, "nv")
    mark = ed.last_seq()
    os.kill(ed.vm_pid("nv"), signal.SIGKILL)
    ev = ed.wait_event("restarted", vm="nv", after=mark)
    assert "booted" in ev["detail"]
    ed.wait_count("nv", 1)
    assert booted(ed.runs("nv")[-1][0])


def test_changed_file_counts_at_next_start(emberd):
    ed = emberd
    counter_vm(ed, "ch")
    ed.start()
    pid = ed.vm_pid("ch")
    counter_vm(ed, "ch", {"restart": "never"})  # changed while it runs
    st, rep = ed.api("PUT", "/reload")
    assert st == 200 and rep["changed"] == ["ch"], rep
    assert ed.status("ch")["policy"]["restart"] == "always"  # still the running one's
    assert ed.vm_pid("ch") == pid
    mark = ed.last_seq()
    st, body = ed.api("PUT", "/vms/ch/restart")
    assert st == 204, body
    ed.wait_event("restarted", vm="ch", after=mark)
    assert ed.status("ch")["policy"]["restart"] == "never"


def test_kills_and_shutdown_during_periodic_snapshots(emberd):
    """Snapshots every 100 ms (each on a thread of emberd's own) while the
    VM is killed at whatever moment, then a host shutdown: each restart
    resumes a whole snapshot, the suspend waits for the one in flight."""
    ed = emberd
    counter_vm(ed, "ps", {"snapshot_interval": "100ms", "restart_attempts": "50"})
    ed.start()
    for i in range(3):
        ed.wait_event("snapshot", vm="ps", after=ed.last_seq())
        time.sleep(0.03 * i)  # somewhere in the next one
        mark = ed.last_seq()
        os.kill(ed.vm_pid("ps"), signal.SIGKILL)
        ed.wait_event("restored", vm="ps", after=mark)
    ed.wait_count("ps", 3)
    assert ed.stop() == 0
    ed.wait_event("suspended", vm="ps")
    kinds = [e["kind"] for e in ed.all_events() if e["vm"] == "ps"]
    assert "failed" not in kinds
    before = ed.counts("ps")
    ed.start()
    ed.wait_event("resumed", vm="ps")
    ed.wait_count("ps", before[-1] + 2)
    after = ed.counts("ps")
    assert after[:len(before)] == before and after[len(before)] == before[-1] + 1
    dirs = os.listdir(os.path.join(ed.state_dir, "snapshots", "ps"))
    assert len([d for d in dirs if d != "latest"]) <= 2, dirs  # no half-written ones pile up
