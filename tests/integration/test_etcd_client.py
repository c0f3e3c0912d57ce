"""ha/etcd.h against a real etcd 3.4 (one member, and three), through
tests/tools/etcd_probe: leases, keys bound to them, transactions that
compare create revisions (one winner among racing claims), the gateway's
pitfalls (a keepalive of a gone lease), endpoint failover, and etcd
unreachable."""
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import etcd_util
from conftest import ROOT

PROBE = os.path.join(os.path.dirname(os.environ.get("EMBER", os.path.join(ROOT, "build", "ember"))),
                     "tools", "etcd_probe")

pytestmark = pytest.mark.skipif(etcd_util.etcd_missing() is not None,
                                reason=etcd_util.etcd_missing() or "")


def probe(endpoints, *args, timeout_ms=1000):
    if not os.path.exists(PROBE):
        pytest.fail(f"{PROBE} missing: run make build/tools/etcd_probe")
    r = subprocess.run([PROBE, endpoints, str(timeout_ms)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def ok(endpoints, *args, **kw):
    out = probe(endpoints, *args, **kw)
    assert "ok" in out, out
    return out["ok"]


@pytest.fixture
def etcd1():
    c = etcd_util.EtcdCluster(1).start()
    yield c
    c.close()


@pytest.fixture
def etcd3():
    c = etcd_util.EtcdCluster(3).start()
    yield c
    c.close()


def test_keys_and_revisions(etcd1):
    ep = etcd1.endpoints()
    rev = ok(ep, "put", "ember/a", "hello")["revision"]
    got = ok(ep, "get", "ember/a")
    assert got["kvs"][0]["value"] == "hello"
    assert got["kvs"][0]["create_revision"] == rev
    assert got["kvs"][0]["version"] == 1
    assert got["kvs"][0]["lease"] == 0
    # a missing key: no kvs, count 0 (proto3 leaves both out)
    none = ok(ep, "get", "ember/none")
    assert none["kvs"] == [] and none["count"] == 0 and none["revision"] >= rev
    ok(ep, "put", "ember/b", "")
    ok(ep, "put", "embers", "not under the prefix")
    pre = ok(ep, "prefix", "ember/")
    assert [kv["key"] for kv in pre["kvs"]] == ["ember/a", "ember/b"]
    assert pre["kvs"][1]["value"] == ""
    assert ok(ep, "delprefix", "ember/")["deleted"] == 2
    assert ok(ep, "prefix", "ember/")["kvs"] == []


def test_lease_binds_keys(etcd1):
    ep = etcd1.endpoints()
    lease = ok(ep, "grant", 2)["id"]
    assert ok(ep, "keepalive", lease)["ttl"] == 2
    ok(ep, "put", "ember/hosts/h1", "{}", lease)
    assert ok(ep, "get", "ember/hosts/h1")["kvs"][0]["lease"] == lease
    ok(ep, "revoke", lease)
    assert ok(ep, "get", "ember/hosts/h1")["kvs"] == []
    # the gateway answers a gone lease's keepalive without a TTL
    gone = probe(ep, "keepalive", lease)
    assert gone["errno"] == "ENOENT", gone
    bad = probe(ep, "put", "ember/x", "v", lease)
    assert bad["errno"] == "ENOENT" and "lease not found" in bad["error"], bad


def test_lease_expires(etcd1):
    ep = etcd1.endpoints()
    lease = ok(ep, "grant", 1)["id"]
    ok(ep, "put", "ember/owner/vm", "h1", lease)
    deadline = time.monotonic() + 30
    while ok(ep, "get", "ember/owner/vm")["kvs"]:
        assert time.monotonic() < deadline, "a 1 s lease's key outlived 30 s"
        time.sleep(0.05)
    assert probe(ep, "keepalive", lease)["errno"] == "ENOENT"


def test_one_winner_per_claim(etcd1):
    ep = etcd1.endpoints()
    leases = [ok(ep, "grant", 10)["id"] for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: ok(ep, "claim", "ember/owner/vm", f"h{i}", leases[i]),
                             range(8)))
    winners = [i for i, o in enumerate(outs) if o["succeeded"]]
    assert len(winners) == 1, outs
    owner = ok(ep, "get", "ember/owner/vm")["kvs"][0]
    assert owner["value"] == f"h{winners[0]}"
    # the token: the winner's txn revision is the key's create revision
    assert outs[winners[0]]["revision"] == owner["create_revision"]
    # the losers read the winner back in the failure branch
    for o in outs:
        if not o["succeeded"]:
            assert o["ranges"][0]["kvs"][0]["value"] == owner["value"]


def test_compare_targets(etcd1):
    ep = etcd1.endpoints()
    rev = ok(ep, "put", "ember/snap/vm", "dir-1")["revision"]
    assert ok(ep, "cas", "ember/snap/vm", "create", "=", rev, "dir-2")["succeeded"]
    assert not ok(ep, "cas", "ember/snap/vm", "create", "=", rev + 100, "dir-3")["succeeded"]
    assert ok(ep, "cas", "ember/snap/vm", "create", "<", rev + 1, "dir-3")["succeeded"]
    assert not ok(ep, "cas", "ember/snap/vm", "mod", ">", 10 ** 9, "x")["succeeded"]
    assert ok(ep, "cas", "ember/snap/vm", "version", "=", 3, "dir-4")["succeeded"]
    assert ok(ep, "cas", "ember/snap/vm", "value", "=", "dir-4", "dir-5")["succeeded"]
    assert not ok(ep, "cas", "ember/snap/vm", "value", "!=", "dir-5", "x")["succeeded"]
    assert ok(ep, "get", "ember/snap/vm")["kvs"][0]["value"] == "dir-5"


def test_unreachable(etcd1):
    # nothing listens on a fresh port: refused, and the endpoint is named
    dead = f"http://127.0.0.1:{etcd_util.free_port()}"
    out = probe(dead, "get", "ember/a")
    assert out["errno"] == "ECONNREFUSED" and dead in out["error"], out
    # a dead first endpoint: the call fails over to the next
    ok(etcd1.endpoints(), "put", "ember/a", "1")
    assert ok(dead + "," + etcd1.endpoints(), "get", "ember/a")["kvs"][0]["value"] == "1"
    bad = probe("ftp://x", "get", "a")
    assert bad["errno"] == "EINVAL", bad


def test_three_members_failover(etcd3):
    ep = etcd3.endpoints()
    ok(ep, "put", "ember/a", "1")
    leader = etcd3.leader()
    lease = ok(leader.local, "grant", 5)["id"]
    leader.kill9()
    # the survivors elect a new leader; a client listing the dead member
    # first still gets through, and the lease survived the leader
    deadline = time.monotonic() + 30
    while True:
        out = probe(ep, "keepalive", lease)
        if "ok" in out:
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.1)
    assert ok(leader.local + "," + ep, "get", "ember/a")["kvs"][0]["value"] == "1"


def test_member_without_quorum_times_out(etcd3):
    alive = etcd3.members[0]
    for m in etcd3.members[1:]:
        m.kill9()
    out = probe(alive.local, "put", "ember/a", "1", timeout_ms=800)
    assert out["errno"] in ("ETIMEDOUT", "EHOSTUNREACH"), out
