"""The isolation audit's plan and judgement, on fabricated observations: a clean lab passes; each leak is named
with its host and path; the filter is compared rule for rule; leaks are never retried into passing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from orchestrator.lab import audit
from orchestrator.labfile import isolation
from orchestrator.labfile.load import load_lab

LABS = Path(__file__).resolve().parents[2] / "labs"
UPLINKS = ["192.0.2.1", "192.0.2.2"]


@pytest.fixture(scope="module")
def lab():
    return load_lab(LABS / "stopping-speed.yaml", machine_routes=["192.0.2.0/24"])


def nft_doc(chains) -> dict:
    """What `nft -j list table inet wt_isolation` prints for `chains` (nft 1.0.6: a set of one prints bare)."""
    def right(values):
        return values[0] if len(values) == 1 else {"set": sorted(values)}
    left = {"iifname": {"meta": {"key": "iifname"}}, "oifname": {"meta": {"key": "oifname"}},
            "ip daddr": {"payload": {"protocol": "ip", "field": "daddr"}}}
    items = [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "wt_isolation", "handle": 1}}]
    items += [{"chain": {"family": "inet", "table": "wt_isolation", "name": c.name, "handle": n, "type": c.type,
                         "hook": c.hook, "prio": c.priority, "policy": c.policy}} for n, c in enumerate(chains)]
    for c in chains:
        for r in c.rules:
            items.append({"rule": {"family": "inet", "table": "wt_isolation", "chain": c.name, "expr": [
                *({"match": {"op": m.op, "left": left[m.key], "right": right(m.values)}} for m in r.matches),
                {r.verdict: None}]}})
    return {"nftables": items}


def clean_observation(lab) -> dict:
    plans = audit.plan(lab, UPLINKS)
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
            "nft": {"json": nft_doc(isolation.chains(h))} if isolation.chains(h) else None,
            "probes": [{**p, "result": "refused" if p["expect"] == "reachable" else "unreachable",
                        "detail": "ECONNREFUSED"} for p in plans[h.name]["probes"]],
            "route_get": [{"addr": a, "ok": bool(h.default_via), "via": h.default_via} for a in UPLINKS],
        }
        pl = plans[h.name]
        if "frames" in pl:
            obs[h.name]["frames"] = {"sent": sum(len(t["addrs"]) for g in pl["frames"] for t in g["to"]),
                                     "answered": [], "errors": []}
        if "beacon" in pl:
            obs[h.name]["beacon"] = "ok"
        if "watch" in pl:
            obs[h.name]["watch"] = {"expected": pl["watch"]["senders"], "heard": pl["watch"]["senders"],
                                    "seen": [], "seen_total": 0, "errors": []}
    return obs


def failing(rep):
    return sorted((f.check, f.host, f.detail) for f in rep.problems)


def test_clean_lab_passes(lab):
    rep = audit.evaluate(lab, clean_observation(lab))
    assert rep.ok, failing(rep)
    checks = {f.check for f in rep.findings}
    assert {"forwarding", "uplink", "isolation", "connectivity", "filter", "sniffer-passive"} <= checks


def test_plan_probes_lans_a_host_is_not_on(lab):
    plans = audit.plan(lab, UPLINKS)
    admin = plans["admin-server"]["probes"]
    assert {p["segment"] for p in admin if p["expect"] == "unreachable"} == {
        "experimental.blades", "experimental.targets", "experimental.normal"}
    # the blade reaches the targets' subnet through the gateway; that is meant
    blade = plans["blade"]["probes"]
    assert all(p["expect"] == "reachable" for p in blade if p["segment"] == "experimental.targets")
    # the sniffer has no address on the experimental side: it must reach nothing there, and sends no frame
    assert all(p["expect"] == "unreachable" for p in plans["sniffer"]["probes"] if p["segment"].startswith("exp"))
    assert "frames" not in plans["sniffer"] and "frames" not in plans["admin-server"]
    assert plans["gateway"]["uplinks"] == UPLINKS


def test_plan_sends_on_link_to_every_control_address_on_the_segment_and_through_the_gateway(lab):
    plans = audit.plan(lab, UPLINKS, beacon_port=4242)
    [g] = plans["blade"]["frames"]
    assert (g["dev"], g["src"]) == ("exp0", lab.host("blade").ip("experimental.blades"))
    to = {(t["host"], t["via"]): t for t in g["to"]}
    # the blades' segment: the gateway and the injector (the sniffer's port is passive: not in the bridge)
    assert set(to) == {("gateway", "on-link"), ("injector", "on-link"), ("gateway", "gateway")}
    assert to[("gateway", "on-link")]["addrs"] == [[lab.host("gateway").ip("admin"), "admin"]]
    assert to[("gateway", "on-link")]["mac"] == lab.host("gateway").iface("experimental.blades").mac
    assert to[("injector", "on-link")]["addrs"] == [[lab.host("injector").ip("admin"), "admin"]]
    # through the gateway: to each control LAN (the admin server's address on it)
    srv = lab.host("admin-server")
    assert to[("gateway", "gateway")]["addrs"] == [[srv.ip("management"), "management"], [srv.ip("admin"), "admin"]]
    assert plans["blade"]["beacon"] == {"addr": lab.host("gateway").ip("experimental.blades"), "port": 4242,
                                        "wait": audit.BEACON_WAIT}
    # the gateway sends on-link from each of its experimental interfaces with a neighbour (exp2, the "normal"
    # subnet, has none), and watches its control side for everyone who sends through it
    gw = plans["gateway"]
    assert [x["dev"] for x in gw["frames"]] == ["exp0", "exp1"] and "beacon" not in gw
    senders = sorted(h for h, p in plans.items() if "beacon" in p)
    assert senders == ["blade", "injector", "target1", "target2"]
    assert gw["watch"] == {"ifaces": ["admin0"], "port": 4242, "senders": len(senders),
                           "nets": [s.subnet for s in lab.experimental_segments()],
                           "deadline": audit.watch_deadline(len(senders))}


def test_probes_stay_linear_in_the_hosts_on_a_segment_for_200_hosts(tmp_path):
    from tests.providers.netns.test_limits import LAB_200
    f = tmp_path / "big.yaml"
    f.write_text(LAB_200)
    big = load_lab(f)
    plans = audit.plan(big, UPLINKS)
    per_host = {h: sum(len(t["addrs"]) for g in p.get("frames", []) for t in g["to"]) for h, p in plans.items()}
    # a blade: admin + management of 194 other blades, admin of the injector, target and gateway, and 2 through
    assert per_host["blade1"] == 194 * 2 + 3 + 2
    assert per_host["injector"] == 195 * 2 + 2 + 2 == max(per_host.values()) and sum(per_host.values()) < 80_000
    assert max(len(json.dumps(p)) for p in plans.values()) < 64_000     # a plan is one line of stdin


def test_forwarding_on_a_dual_homed_host_is_a_leak(lab):
    obs = clean_observation(lab)
    obs["injector"]["sysctl"]["ip_forward"] = "1"
    assert failing(audit.evaluate(lab, obs)) == [
        ("forwarding", "injector", "forwarding is ON (only the gateway may forward)")]


def test_reaching_another_lan_is_a_leak(lab):
    obs = clean_observation(lab)
    for p in obs["admin-server"]["probes"]:
        if p["segment"] == "experimental.blades":
            p["result"] = "refused"
    problems = failing(audit.evaluate(lab, obs))
    assert problems and all(c == "isolation" and h == "admin-server" for c, h, _ in problems)
    assert "reaches experimental.blades address 198.18.8.1 (refused); it must not" in problems[0][2]


def test_a_route_through_a_non_gateway_is_a_leak(lab):
    obs = clean_observation(lab)
    obs["admin-server"]["routes"].append({"dst": "198.18.8.0/24", "gateway": lab.host("injector").ip("admin")})
    assert failing(audit.evaluate(lab, obs)) == [
        ("routes", "admin-server", "route to 198.18.8.0/24 via 198.18.1.7, which is not the lab's gateway")]


def test_a_route_to_the_uplink_is_a_leak(lab):
    obs = clean_observation(lab)
    obs["gateway"]["route_get"][0] = {"addr": "192.0.2.1", "ok": True, "via": None, "dev": "eth9"}
    obs["gateway"]["interfaces"].append({"name": "eth9", "flags": [], "addrs": ["192.0.2.9/24"], "tx_packets": 1})
    problems = failing(audit.evaluate(lab, obs))
    assert ("interfaces", "gateway", "unexpected interface eth9 (not made by the lab)") in problems
    assert ("uplink", "gateway", "has a route towards the machine's uplink address 192.0.2.1 (via eth9)") in problems
    # hosts whose default route leads to that gateway now leak too
    assert any(c == "uplink" and h == "blade" for c, h, _ in problems)


def test_a_talking_sniffer_is_a_leak(lab):
    obs = clean_observation(lab)
    sn = next(i for i in obs["sniffer"]["interfaces"] if i["name"] == "exp1")
    sn["tx_packets"], sn["flags"] = 3, ["UP"]
    assert failing(audit.evaluate(lab, obs)) == [
        ("sniffer-passive", "sniffer", "exp1: addresses none, ARP ON, sent 3 packets")]


def test_missing_filter_and_root_namespace_are_leaks(lab):
    obs = clean_observation(lab)
    obs["blade"]["nft"] = {"missing": True, "error": "Error: No such file or directory"}
    obs["target1"]["netns_is_root"] = True
    assert failing(audit.evaluate(lab, obs)) == [
        ("filter", "blade", "table inet wt_isolation is MISSING"),
        ("namespace", "target1", "runs in the machine's root network namespace")]


def test_a_flushed_filter_is_named_rule_by_rule(lab):
    obs = clean_observation(lab)
    obs["blade"]["nft"] = {"json": nft_doc([isolation.Chain("input", "input", "accept", ())])}
    ip = lab.host("blade").ip("experimental.blades")
    assert failing(audit.evaluate(lab, obs)) == [("filter", "blade", (
        "table inet wt_isolation is not the one the lab installed: chain input has 0 rule(s) where the lab "
        f"installed 2: missing 'iifname {{ \"exp0\" }} ip daddr != {{ {ip} }} drop'; "
        f"missing 'iifname {{ \"mgmt0\", \"admin0\" }} ip daddr {{ {ip} }} drop'"))]


def test_an_accepting_forward_chain_and_a_deleted_or_added_rule_are_differences(lab):
    gw = isolation.chains(lab.host("gateway"))
    obs = clean_observation(lab)
    accepting = (gw[0], isolation.Chain("forward", "forward", "accept", gw[1].rules))
    obs["gateway"]["nft"] = {"json": nft_doc(accepting)}
    assert failing(audit.evaluate(lab, obs)) == [("filter", "gateway", "table inet wt_isolation is not the one "
                                                 "the lab installed: chain forward policy is accept where the lab "
                                                 "installed drop")]
    inj = isolation.chains(lab.host("injector"))[0]
    fewer = isolation.Chain("input", "input", "accept", inj.rules[1:])
    more = isolation.Chain("input", "input", "accept", (*inj.rules, isolation.Rule((), "accept")))
    for chain, word in ((fewer, "missing"), (more, "extra")):
        obs = clean_observation(lab)
        obs["injector"]["nft"] = {"json": nft_doc([chain])}
        [(c, h, d)] = failing(audit.evaluate(lab, obs))
        assert (c, h) == ("filter", "injector") and f"{word} '" in d


def test_a_filter_listed_in_another_order_or_spelling_of_its_sets_is_the_same():
    doc = nft_doc([isolation.Chain("input", "input", "accept", (isolation.Rule(
        (isolation.Match("iifname", "==", ("exp1", "exp0")),), "drop"),))])
    want = (isolation.Chain("input", "input", "accept", (isolation.Rule(
        (isolation.Match("iifname", "==", ("exp0", "exp1")),), "drop"),)),)
    assert isolation.differences(want, isolation.loaded(doc)) == []
    doc["nftables"][-1]["rule"]["expr"].insert(0, {"counter": {"packets": 0, "bytes": 0}})
    assert isolation.differences(want, isolation.loaded(doc)) == [
        'chain input has 1 rule(s) where the lab installed 1: missing \'iifname { "exp0", "exp1" } drop\'; '
        'extra \'iifname { "exp0", "exp1" } {"counter": {"bytes": 0, "packets": 0}} drop\'']


def test_an_unreadable_filter_is_not_taken_for_a_good_one(lab):
    obs = clean_observation(lab)
    obs["sniffer"]["nft"] = {"error": "nft -j printed no JSON (nftables without JSON support?)"}
    assert failing(audit.evaluate(lab, obs)) == [("filter", "sniffer", "table inet wt_isolation could not be read: "
                                                 "nft -j printed no JSON (nftables without JSON support?)")]


def test_a_control_address_answering_on_link_names_the_host_the_address_and_who_reached_it(lab):
    obs = clean_observation(lab)
    inj = lab.host("injector")
    for prober in ("blade", "gateway"):
        obs[prober]["frames"]["answered"] = [{"dev": "exp0", "addr": inj.ip("admin"), "host": "injector",
                                              "segment": "admin", "via": "on-link", "detail": "RST"}]
    assert failing(audit.evaluate(lab, obs)) == [("isolation", "injector", (
        f"its admin address {inj.ip('admin')} answers on the experimental LAN: on-link from blade/exp0 (RST), "
        "gateway/exp0 (RST)"))]


def test_a_gateway_that_lets_experimental_traffic_out_on_a_control_lan_is_caught_by_its_watch(lab):
    obs = clean_observation(lab)
    srv = lab.host("admin-server").ip("admin")
    obs["gateway"]["watch"].update(seen_total=4, seen=[{"iface": "admin0", "dir": "out", "src": "198.18.8.2",
                                                        "dst": srv, "proto": 6, "dport": 9}])
    assert failing(audit.evaluate(lab, obs)) == [("forwarding", "gateway", (
        "4 packet(s) from the experimental LAN crossed its control interfaces while every host sent towards them, "
        f"e.g. 198.18.8.2 -> {srv} out of admin0 (proto 6, port 9)"))]
    # an answer that came back through it names the gateway too
    obs = clean_observation(lab)
    obs["blade"]["frames"]["answered"] = [{"dev": "exp0", "addr": srv, "host": "gateway", "segment": "admin",
                                           "via": "gateway", "detail": "SYN-ACK"}]
    assert failing(audit.evaluate(lab, obs)) == [("forwarding", "gateway", (
        f"forwards from the experimental LAN to admin address {srv}, which answered: from blade/exp0 (SYN-ACK)"))]


def test_a_watch_that_did_not_hear_everyone_does_not_pass(lab):
    obs = clean_observation(lab)
    obs["gateway"]["watch"]["heard"] -= 1
    obs["target2"]["beacon"] = "198.18.9.1:4739: Connection refused"
    rep = audit.evaluate(lab, obs)
    assert sorted((f.check, f.host, f.kind, f.detail) for f in rep.problems) == [
        ("forwarding", "gateway", "broken", f"its watch heard from {obs['gateway']['watch']['heard']} of "
         f"{obs['gateway']['watch']['expected']} hosts sending through it; the others' frames went unobserved"),
        ("forwarding", "target2", "broken", "could not check in with the gateway's watch (198.18.9.1:4739: "
         "Connection refused): its frames through the gateway went unobserved")]


def test_a_host_that_could_not_send_its_frames_is_not_called_isolated(lab):
    obs = clean_observation(lab)
    obs["blade"]["frames"]["errors"] = ["exp0: Operation not permitted"]
    rep = audit.evaluate(lab, obs)
    assert [(f.check, f.host, f.kind, f.detail) for f in rep.problems] == [
        ("isolation", "blade", "broken", "could not send its experimental-side probes: exp0: Operation not permitted")]


def test_unreachable_admin_server_is_broken_not_a_leak(lab):
    obs = clean_observation(lab)
    for p in obs["target2"]["probes"]:
        if p.get("purpose") == "admin-server":
            p["result"], p["detail"] = "unreachable", "timeout"
    rep = audit.evaluate(lab, obs)
    assert [(f.check, f.host, f.kind) for f in rep.problems] == [("connectivity", "target2", "broken")]


def test_the_admin_server_is_probed_once_and_a_timeout_is_one_finding(lab):
    # the admin LAN's sample holds the admin server already: one probe says it is the admin server (it was
    # probed twice, and one timeout at 1,000 hosts was listed as two findings)
    plans = audit.plan(lab, UPLINKS)
    admin_ip = lab.host("admin-server").ip("admin")
    for h in lab.hosts:
        addrs = [p["addr"] for p in plans[h.name]["probes"]]
        assert len(addrs) == len(set(addrs)), (h.name, addrs)
        if h.name != "admin-server" and h.on("admin"):
            (mine,) = [p for p in plans[h.name]["probes"] if p.get("purpose") == "admin-server"]
            assert mine["addr"] == admin_ip and mine["expect"] == "reachable"
    obs = clean_observation(lab)
    obs["blade"]["probes"] += [dict(p) for p in obs["blade"]["probes"] if p.get("purpose") == "admin-server"]
    for p in obs["blade"]["probes"]:
        if p.get("purpose") == "admin-server":
            p["result"], p["detail"] = "unreachable", "timeout"
    assert failing(audit.evaluate(lab, obs)) == [
        ("connectivity", "blade", f"cannot reach admin address {admin_ip} (timeout)")]


def test_a_host_that_cannot_be_probed_is_reported(lab):
    obs = clean_observation(lab)
    obs["blade"] = {"error": "python3: command not found"}
    assert failing(audit.evaluate(lab, obs)) == [("probe", "blade", "could not probe: python3: command not found")]


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
        inj = lab.host("injector")
        self.obs["blade"]["frames"]["answered"] = [{"dev": "exp0", "addr": inj.ip("admin"), "host": "injector",
                                                    "segment": "admin", "via": "on-link", "detail": "RST"}]

    def host_vars(self, name, host):
        return {"testbed_python": "/usr/bin/python3"}

    def remote_shells(self, name):
        return self.shells if hasattr(self, "shells") else []

    def underlays(self, name):
        return []

    def exec(self, lab, host, argv, *, input=None, timeout=None):
        from orchestrator.localrun import Result
        plan = json.loads(input.split("\n", 1)[0])
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
    monkeypatch.setattr(audit, "machine_uplinks", lambda pre=None: UPLINKS)
    prov = _SlowThenFine(lab, late)
    rep = audit.run_check(prov, lab)
    retries = [(h, p) for h, p in prov.plans if p["timeout"] == audit.RETRY_TIMEOUT]
    assert [h for h, _ in retries] == ["admin-server"]       # only the host with a slow reachable probe
    assert {q["expect"] for q in retries[0][1]["probes"]} == {"reachable"}
    assert {q["segment"] for q in retries[0][1]["probes"]} == {"management"}
    # the retry sends no leak probe again, and the leak found the first time stands
    assert all("frames" not in p and "watch" not in p and "beacon" not in p for _, p in retries)
    leak = ("isolation", "injector", "leak")
    if late:      # it answered the second time: connected, not broken
        assert [(f.check, f.host, f.kind) for f in rep.problems] == [leak]
    else:         # still silent: broken, and named
        assert [(f.check, f.host, f.kind) for f in rep.problems] == [("connectivity", "admin-server", "broken"), leak]
        assert "cannot reach management address" in rep.problems[0].detail


def test_an_extra_address_from_another_lan_is_a_leak_and_a_second_one_of_its_own_is_broken(lab):
    obs = clean_observation(lab)
    admin0 = next(i for i in obs["blade"]["interfaces"] if i["name"] == "admin0")
    admin0["addrs"].append("198.18.8.250/24")
    rep = audit.evaluate(lab, obs)
    own = lab.host("blade").iface("admin").address
    assert [(f.check, f.host, f.kind, f.detail) for f in rep.problems] == [
        ("addresses", "blade", "leak", f"admin0 has ['{own}', '198.18.8.250/24'], declared {own}: "
         "198.18.8.250/24 is not on its LAN")]
    admin0["addrs"][-1] = "198.18.1.250/24"
    assert [(f.kind, f.detail) for f in audit.evaluate(lab, obs).problems] == [
        ("broken", f"admin0 has ['{own}', '198.18.1.250/24'], declared {own}")]


def test_a_remote_hypervisors_uplinks_are_audited_beside_this_machines(lab, monkeypatch):
    asked = []

    def uplinks(pre=None):
        asked.append(pre)
        return ["203.0.113.9"] if pre else UPLINKS

    monkeypatch.setattr(audit, "machine_uplinks", uplinks)
    prov = _SlowThenFine(lab, True)
    prov.shells = [["ssh", "-p", "2222", "root@hv", "--"]]
    audit.run_check(prov, lab)
    assert asked == [None, ["ssh", "-p", "2222", "root@hv", "--"]]
    first = [p for _, p in prov.plans if p["timeout"] != audit.RETRY_TIMEOUT]
    assert first and all(p["uplinks"] == sorted([*UPLINKS, "203.0.113.9"]) for p in first)


def test_uplinks_are_read_from_ip_json():
    routes = '[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},{"dst":"default","dev":"wg0"}]'
    addrs = ('[{"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.10"}]},'
             '{"ifname":"eth1","addr_info":[{"family":"inet6","local":"2001:db8::1"}]}]')
    assert audit.uplinks_from(routes, addrs) == ["192.0.2.1", "192.0.2.10"]
    assert audit.uplinks_from("", "") == []
