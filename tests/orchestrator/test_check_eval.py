"""The isolation audit's judgement, on fabricated observations: a clean lab passes; each leak is named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from orchestrator import check, isolation
from orchestrator.spec import load_lab

LABS = Path(__file__).resolve().parents[2] / "labs"
UPLINKS = ["192.0.2.1", "192.0.2.2"]


@pytest.fixture(scope="module")
def lab():
    return load_lab(LABS / "stopping-speed.yaml", machine_routes=["192.0.2.0/24"])


def clean_observation(lab) -> dict:
    plans = check.plan(lab, UPLINKS)
    obs = {}
    for h in lab.hosts:
        ifs = []
        for i in h.interfaces:
            ifs.append({"name": i.ifname, "flags": ["BROADCAST", "UP", "LOWER_UP"] + (["NOARP"] if i.mirror else []),
                        "addrs": [i.address] if i.address else [], "tx_packets": 0 if i.mirror else 12})
        routes = [{"dst": s.subnet, "dev": i.ifname} for i in h.interfaces if i.address
                  for s in lab.segments if s.key == i.segment]
        if h.default_via:
            routes.append({"dst": "default", "gateway": h.default_via})
        obs[h.name] = {
            "netns_is_root": False,
            "interfaces": [{"name": "lo", "flags": [], "addrs": ["127.0.0.1/8"], "tx_packets": 0}, *ifs],
            "routes": routes,
            "sysctl": {"ip_forward": "1" if h.forwarding else "0",
                       "conf": {i.ifname: ("1" if h.forwarding and i.ifname.startswith("exp") else "0")
                                for i in h.interfaces}},
            "isolation_table": True if isolation.ruleset(h) else None,
            "probes": [{**p, "result": "refused" if p["expect"] == "reachable" else "unreachable",
                        "detail": "ECONNREFUSED"} for p in plans[h.name]["probes"]],
            "route_get": [{"addr": a, "ok": bool(h.default_via), "via": h.default_via} for a in UPLINKS],
        }
    return obs


def failing(rep):
    return sorted((f.check, f.host, f.detail) for f in rep.problems)


def test_clean_lab_passes(lab):
    rep = check.evaluate(lab, clean_observation(lab))
    assert rep.ok, failing(rep)
    checks = {f.check for f in rep.findings}
    assert {"forwarding", "uplink", "isolation", "connectivity", "filter", "sniffer-passive"} <= checks


def test_plan_probes_lans_a_host_is_not_on(lab):
    plans = check.plan(lab, UPLINKS)
    admin = plans["admin-server"]["probes"]
    assert {p["segment"] for p in admin if p["expect"] == "unreachable"} == {
        "experimental.blades", "experimental.targets", "experimental.normal"}
    # the blade reaches the targets' subnet through the gateway; that is meant
    blade = plans["blade"]["probes"]
    assert all(p["expect"] == "reachable" for p in blade if p["segment"] == "experimental.targets")
    # from its experimental side, the blade must not reach admin or management addresses
    bound = [p for p in blade if p.get("bind_dev") == "exp0"]
    assert {p["segment"] for p in bound} == {"management", "admin"} and all(p["expect"] == "unreachable" for p in bound)
    # the sniffer has no address on the experimental side: it must reach nothing there
    assert all(p["expect"] == "unreachable" for p in plans["sniffer"]["probes"] if p["segment"].startswith("exp"))
    assert plans["gateway"]["uplinks"] == UPLINKS


def test_forwarding_on_a_dual_homed_host_is_a_leak(lab):
    obs = clean_observation(lab)
    obs["injector"]["sysctl"]["ip_forward"] = "1"
    assert failing(check.evaluate(lab, obs)) == [
        ("forwarding", "injector", "forwarding is ON (only the gateway may forward)")]


def test_reaching_another_lan_is_a_leak(lab):
    obs = clean_observation(lab)
    for p in obs["admin-server"]["probes"]:
        if p["segment"] == "experimental.blades":
            p["result"] = "refused"
    problems = failing(check.evaluate(lab, obs))
    assert problems and all(c == "isolation" and h == "admin-server" for c, h, _ in problems)
    assert "reaches experimental.blades address 198.18.8.1 (refused); it must not" in problems[0][2]


def test_a_route_through_a_non_gateway_is_a_leak(lab):
    obs = clean_observation(lab)
    obs["admin-server"]["routes"].append({"dst": "198.18.8.0/24", "gateway": lab.host("injector").ip("admin")})
    assert failing(check.evaluate(lab, obs)) == [
        ("routes", "admin-server", "route to 198.18.8.0/24 via 198.18.1.7, which is not the lab's gateway")]


def test_a_route_to_the_uplink_is_a_leak(lab):
    obs = clean_observation(lab)
    obs["gateway"]["route_get"][0] = {"addr": "192.0.2.1", "ok": True, "via": None, "dev": "eth9"}
    obs["gateway"]["interfaces"].append({"name": "eth9", "flags": [], "addrs": ["192.0.2.9/24"], "tx_packets": 1})
    problems = failing(check.evaluate(lab, obs))
    assert ("interfaces", "gateway", "unexpected interface eth9 (not made by the lab)") in problems
    assert ("uplink", "gateway", "has a route towards the machine's uplink address 192.0.2.1 (via eth9)") in problems
    # hosts whose default route leads to that gateway now leak too
    assert any(c == "uplink" and h == "blade" for c, h, _ in problems)


def test_a_talking_sniffer_is_a_leak(lab):
    obs = clean_observation(lab)
    sn = next(i for i in obs["sniffer"]["interfaces"] if i["name"] == "exp1")
    sn["tx_packets"], sn["flags"] = 3, ["UP"]
    assert failing(check.evaluate(lab, obs)) == [
        ("sniffer-passive", "sniffer", "exp1: addresses none, ARP ON, sent 3 packets")]


def test_missing_filter_and_root_namespace_are_leaks(lab):
    obs = clean_observation(lab)
    obs["blade"]["isolation_table"] = False
    obs["target1"]["netns_is_root"] = True
    assert failing(check.evaluate(lab, obs)) == [
        ("filter", "blade", "table inet wt_isolation is MISSING"),
        ("namespace", "target1", "runs in the machine's root network namespace")]


def test_unreachable_admin_server_is_broken_not_a_leak(lab):
    obs = clean_observation(lab)
    for p in obs["target2"]["probes"]:
        if p.get("purpose") == "admin-server":
            p["result"], p["detail"] = "unreachable", "timeout"
    rep = check.evaluate(lab, obs)
    assert [(f.check, f.host, f.kind) for f in rep.problems] == [("connectivity", "target2", "broken")]


def test_a_host_that_cannot_be_probed_is_reported(lab):
    obs = clean_observation(lab)
    obs["blade"] = {"error": "python3: command not found"}
    assert failing(check.evaluate(lab, obs)) == [("probe", "blade", "could not probe: python3: command not found")]


def test_isolation_ruleset_for_gateway_and_sniffer(lab):
    gw = isolation.ruleset(lab.host("gateway"))
    assert 'iifname { "exp0", "exp1", "exp2" } ip daddr != { 198.18.10.1, 198.18.8.1, 198.18.9.1 } drop' in gw
    assert 'iifname "exp*" oifname "exp*" accept' in gw and "policy drop" in gw
    sn = isolation.ruleset(lab.host("sniffer"))
    assert 'iifname { "exp0", "exp1", "exp2" } drop' in sn and "forward" not in sn
    assert isolation.ruleset(lab.host("admin-server")) is None
    blade = isolation.ruleset(lab.host("blade"))
    assert 'iifname { "mgmt0", "admin0" } ip daddr { 198.18.8.2 } drop' in blade
    assert copy.deepcopy(blade) == isolation.ruleset(lab.host("blade"))


class _SlowThenFine:
    """A provider whose probe program sees the blade's management address time out once, then answer."""

    def __init__(self, lab, late: bool):
        self.obs, self.late, self.plans = clean_observation(lab), late, []

    def exec(self, lab, host, argv, *, input=None, timeout=None):
        import json

        from orchestrator.proc import Result
        plan = json.loads(argv[-1])
        self.plans.append((host, plan))
        out = copy.deepcopy(self.obs[host])
        if len([h for h, _ in self.plans if h == host]) > 1:     # the retry: only the probes it was given
            out["probes"] = [{**p, "result": "refused" if self.late else "unreachable",
                              "detail": "ECONNREFUSED" if self.late else "timeout"} for p in plan["probes"]]
        elif host == "admin-server":
            for p in out["probes"]:
                if p["expect"] == "reachable" and p["segment"] == "management":
                    p["result"], p["detail"] = "unreachable", "timeout"
        return Result(argv, 0, json.dumps(out), "")


@pytest.mark.parametrize("late", [True, False])
def test_a_reachable_address_that_timed_out_is_tried_once_more(lab, late, monkeypatch):
    monkeypatch.setattr(check, "machine_uplinks", lambda: UPLINKS)
    prov = _SlowThenFine(lab, late)
    rep = check.run_check(prov, lab)
    retries = [(h, p) for h, p in prov.plans if p["timeout"] == check.RETRY_TIMEOUT]
    assert [h for h, _ in retries] == ["admin-server"]       # only the host with a slow reachable probe
    assert {q["expect"] for q in retries[0][1]["probes"]} == {"reachable"}
    assert {q["segment"] for q in retries[0][1]["probes"]} == {"management"}
    if late:      # it answered the second time: connected, not broken
        assert rep.ok, failing(rep)
    else:         # still silent: broken, and named
        assert [(f.check, f.host, f.kind) for f in rep.problems] == [("connectivity", "admin-server", "broken")]
        assert "cannot reach management address" in rep.problems[0].detail
