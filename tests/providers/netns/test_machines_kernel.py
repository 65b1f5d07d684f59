"""A namespace lab on two simulated machines (root): labs/two-machines.yaml built by the provider — hosts on
both machines, their LANs stretched with VXLAN over a veth underlay — audited clean by `testbed check`,
underlay and root namespace included; a frame from a host on the far machine reaches the gateway on the near
one and the sniffer gets every frame of the segment exactly once (the kernel's counters, not the plan's word);
`down` leaves nothing."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time

import pytest

from orchestrator.lab import lifecycle
from orchestrator.providers.netns import namespaces
from orchestrator.providers.netns.provider import NetnsProvider
from tests.providers.netns.test_provider import LABS, lab_namespaces, root_links

pytestmark = pytest.mark.root
UDP5 = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for i in range(5): s.sendto(b'x%d'%i,('198.18.9.2',7))\n")


def tx_rx(ns: str, dev: str) -> tuple[int, int]:
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", dev], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    st = json.loads(out)[0]["stats64"]
    return st["tx"]["packets"], st["rx"]["packets"]


def test_a_lab_on_two_machines_is_checked_clean_carries_traffic_across_and_leaves_nothing(store, tmp_path):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (the underlay audit captures with it)")
    name = f"t{secrets.token_hex(3)}"
    f = tmp_path / "lab.yaml"
    f.write_text((LABS / "two-machines.yaml").read_text().replace("name: two-machines", f"name: {name}"))
    before = root_links()
    lifecycle.up(f, name=name, store=store)
    try:
        assert lab_namespaces(name) == {f"wt.{name}.{h}" for h in (
            "switch", "switch.m1", "underlay.m0", "underlay.m1", "admin-server", "gateway", "sniffer",
            "target-near", "blade", "injector", "target-far")}
        assert root_links() == before                         # nothing of the lab in the root namespace
        NetnsProvider(store).wait_booted(name)
        rep = lifecycle.check(name, store=store)
        assert rep.ok, [(f.host, f.check, f.detail) for f in rep.problems]
        under = {(f.check, f.host): f.detail for f in rep.findings if f.check.startswith(("underlay", "root-"))}
        assert {k for k in under} == {(c, f"underlay.m{m}") for m in (0, 1) for c in (
            "underlay", "underlay-interfaces", "underlay-routes", "underlay-forwarding", "underlay-filter")} | {
            ("root-namespace", "machine")}
        assert under[("underlay", "underlay.m1")].endswith("VXLAN packets between the lab's VTEPs on ul0, nothing else")

        # the blade (machine 1) to a target on machine 0, through the gateway (machine 0): every frame on the
        # blades' segment — the blade's, the injector's, the gateway's answers — copied to the sniffer once
        ns = {h: f"wt.{name}.{h}" for h in ("blade", "injector", "gateway", "sniffer")}
        seg = [(ns["blade"], "exp0"), (ns["injector"], "exp0"), (ns["gateway"], "exp0")]
        snf = (ns["sniffer"], "exp0")
        b = [tx_rx(*x) for x in seg] + [tx_rx(*snf)]
        r = NetnsProvider(store).exec(name, "blade", ["python3", "-c", UDP5])
        assert r.ok, r.stderr
        time.sleep(0.5)
        a = [tx_rx(*x) for x in seg] + [tx_rx(*snf)]
        sent = sum(a[k][0] - b[k][0] for k in range(3))
        gw_rx = a[2][1] - b[2][1]
        assert gw_rx >= 5                                     # the datagrams crossed the underlay to the gateway
        assert sent >= 5 and a[3][1] - b[3][1] == sent, (sent, a[3][1] - b[3][1])
    finally:
        lifecycle.down(name, store=store)
    assert lab_namespaces(name) == set() and not any(n.startswith(f"wt.{name}.") for n in namespaces.list_netns())
    assert root_links() == before
