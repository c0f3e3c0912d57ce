"""CPUID as the guest sees it, and the supported-CPUID cache."""
import os
import re

import pytest

from conftest import EMBER, guest, needs_kvm, run_guest

pytestmark = needs_kvm


def fields(out):
    m = re.search(r"cpuid: hypervisor=(\d) apic_id=(\d+) count=(\d+) apic=(\d) x2apic=(\d)", out)
    assert m, out
    return dict(zip(("hypervisor", "apic_id", "count", "apic", "x2apic"),
                    map(int, m.groups())))


def test_single_vcpu_without_irqchip_has_no_apic():
    r = run_guest("cpuid")
    assert r.returncode == 0, r.stderr
    f = fields(r.stdout)
    assert f == {"hypervisor": 1, "apic_id": 0, "count": 1, "apic": 0, "x2apic": 0}
    assert "signature=KVMKVMKVM" in r.stdout


def test_irqchip_shows_apic():
    f = fields(run_guest("cpuid", "--irqchip", "on").stdout)
    assert f["apic"] == 1 and f["hypervisor"] == 1


@pytest.mark.parametrize("n", [2, 7])
def test_smp_count_and_boot_apic_id(n):
    f = fields(run_guest("cpuid", "--vcpus", str(n)).stdout)
    assert f["count"] == n and f["apic_id"] == 0


def test_cpuid_cache_created_reused_and_repaired(tmp_path, monkeypatch):
    cache = tmp_path / "sub" / "cpuid"
    monkeypatch.setenv("EMBER_CPUID_CACHE", str(cache))
    first = run_guest("cpuid", "--stats")
    assert first.returncode == 0 and "cpuid from KVM" in first.stderr
    assert cache.exists() and cache.stat().st_size > 64
    good = cache.read_bytes()

    second = run_guest("cpuid", "--stats")
    assert "cpuid cached" in second.stderr
    assert fields(second.stdout) == fields(first.stdout)

    # A torn or corrupt cache is a miss, never a wrong CPUID: it is rebuilt.
    for bad in (good[:100], good[:64] + b"\xff" * (len(good) - 64), b"junk"):
        cache.write_bytes(bad)
        r = run_guest("cpuid", "--stats")
        assert r.returncode == 0 and "cpuid from KVM" in r.stderr
        assert fields(r.stdout) == fields(first.stdout)
        # rewritten whole: the next run uses it (the bytes may differ from
        # the first answer: KVM reports the APIC id of the CPU it ran on)
        assert len(cache.read_bytes()) == len(good)
        assert "cpuid cached" in run_guest("cpuid", "--stats").stderr
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_cpuid_cache_unwritable_still_boots(monkeypatch):
    monkeypatch.setenv("EMBER_CPUID_CACHE", "/proc/ember-cannot-write-here")
    r = run_guest("cpuid", "--stats")
    assert r.returncode == 0 and "cpuid from KVM" in r.stderr


def test_no_cpuid_cache_flag(tmp_path, monkeypatch):
    cache = tmp_path / "cpuid"
    monkeypatch.setenv("EMBER_CPUID_CACHE", str(cache))
    r = run_guest("cpuid", "--stats", "--no-cpuid-cache")
    assert r.returncode == 0 and "cpuid from KVM" in r.stderr
    assert not cache.exists()
