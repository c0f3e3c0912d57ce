#!/usr/bin/env python3
"""Seeds for fuzz_snapstate: real state files of ember's test guests,
written into tests/fuzz/corpus/snapstate (committed; rerun after a change
to the state file's format).  Needs /dev/kvm and a built ember:
    python3 tests/fuzz/make_snapstate_seeds.py"""
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
from conftest import GUESTS, guest  # noqa: E402
from test_api import Ember  # noqa: E402

OUT = HERE / "corpus" / "snapstate"


def seed(name, run_args, wait):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        e = Ember(d, run_args=run_args, name="s")
        try:
            deadline = time.monotonic() + 30
            while wait not in e.stdout() and time.monotonic() < deadline:
                time.sleep(0.02)
            e.ok("PATCH", "/vm", {"state": "Paused"})
            e.ok("PUT", "/snapshot/create", {"snapshot_path": str(d / "s.state"),
                                             "mem_file_path": str(d / "s.mem")})
        finally:
            e.kill()
        (OUT / name).write_bytes((d / "s.state").read_bytes())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        disk = Path(d) / "disk.img"
        disk.write_bytes(bytes(1 << 20))
        counter = ["--kernel", guest("counter"), "--cmdline", "count=100000000", "--timeout", "60"]
        seed("counter", counter, "count 5\n")
        seed("counter-smp-devices", counter + [
            "--vcpus", "2", "--drive", f"d0,path={disk},read_only=on,bandwidth_size=1M,"
            "bandwidth_refill=100ms", "--rng", "--vsock", f"cid=3,uds={d}/v.sock",
            "--name", "seed"], "count 5\n")
        seed("hvt-blk", ["--block:storage=" + str(disk), "--timeout", "60", "--kernel",
                         os.path.join(GUESTS, "hvt", "blk.hvt"), "--cmdline", "pause"],
             "blk: written\n")
    print("\n".join(f"{p.name}: {p.stat().st_size} bytes" for p in sorted(OUT.iterdir())))


if __name__ == "__main__":
    main()
