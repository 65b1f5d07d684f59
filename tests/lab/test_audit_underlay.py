"""`testbed check`'s audit of the underlay between a lab's machines (orchestrator/lab/audit_underlay.py): what
the captures and the underlay namespaces showed, judged without root."""

from __future__ import annotations

import pytest

from orchestrator.lab import audit_underlay as au
from orchestrator.labfile.load import load_lab
from orchestrator.providers.base import Underlay
from tests.labfile.test_load import LABS, ROUTES

LAB = load_lab(LABS / "two-machines.yaml", machine_routes=ROUTES)
VTEPS = ("198.19.255.249", "198.19.255.250")
U = [Underlay(m, ["ip", "netns", "exec", f"u{m}"], "ul0", VTEPS, "198.19.255.248/29") for m in (0, 1)]


def static(m: int, **change) -> dict:
    st = {"addrs": [{"ifname": "lo", "addr_info": []},
                    {"ifname": "ul0", "addr_info": [{"family": "inet", "local": VTEPS[m], "prefixlen": 29}]}],
          "routes": [{"dst": "198.19.255.248/29"}], "ip_forward": "0",
          "chains": [{"name": "input", "policy": "drop"}, {"name": "output", "policy": "drop"},
                     {"name": "forward", "policy": "drop"}], "accepts": 2}
    return {**st, **change}


def clean() -> tuple[list[au.Seen], dict, au.Seen]:
    return ([au.Seen("underlay.m0", total=40, vxlan=38), au.Seen("underlay.m1", total=40, vxlan=38)],
            {0: static(0), 1: static(1)}, au.Seen("root"))


def problems(found) -> list[str]:
    return [f"{c} {w}: {d}" for c, w, ok, d, _ in found if not ok]


def test_a_clean_underlay_passes_every_audit_and_says_what_it_saw():
    found = au.judge(LAB, U, *clean())
    assert problems(found) == []
    assert ("underlay", "underlay.m1", True, "38 VXLAN packets between the lab's VTEPs on ul0, nothing else",
            "leak") in found
    assert {c for c, *_ in found} == {"underlay", "underlay-interfaces", "underlay-routes", "underlay-forwarding",
                                      "underlay-filter", "root-namespace"}


def test_a_packet_on_the_underlay_that_is_not_the_labs_vxlan_is_a_leak():
    seen, st, root = clean()
    seen[0] = au.Seen("underlay.m0", total=41, vxlan=38, leaks=1, examples=["IP 198.19.255.249.5 > 198.19.255.250.22"])
    (p,) = problems(au.judge(LAB, U, seen, st, root))
    assert p == ("underlay underlay.m0: 1 packet(s) on ul0 that are not the lab's VXLAN between its VTEPs, e.g. "
                 "IP 198.19.255.249.5 > 198.19.255.250.22")


def test_an_underlay_that_carried_nothing_is_broken_not_clean():
    seen, st, root = clean()
    seen[1] = au.Seen("underlay.m1")
    found = au.judge(LAB, U, seen, st, root)
    assert [(d, k) for c, w, ok, d, k in found if not ok] == [
        ("no VXLAN crossed ul0 while every host probed: the stretched LANs carried nothing", "broken")]


def test_anything_of_the_labs_in_the_root_namespace_is_a_leak():
    seen, st, _ = clean()
    (p,) = problems(au.judge(LAB, U, seen, st, au.Seen("root", total=2, examples=["IP 198.19.255.249.1 > x"])))
    assert p.startswith("root-namespace machine: 2 packet(s) of the lab's in the machine's root namespace")


@pytest.mark.parametrize("change, expect", [
    ({"addrs": [{"ifname": "ul0", "addr_info": []}, {"ifname": "vx100", "addr_info": []}]},
     "underlay-interfaces underlay.m0: unexpected interface(s) vx100"),
    ({"routes": [{"dst": "198.19.255.248/29"}, {"dst": "default"}]},
     "underlay-routes underlay.m0: routes ['198.19.255.248/29', 'default']; only 198.19.255.248/29"),
    ({"ip_forward": "1"}, "underlay-forwarding underlay.m0: forwarding is '1'"),
    ({"chains": []}, "underlay-filter underlay.m0: table inet wt_underlay: chains MISSING"),
    ({"accepts": 3}, "underlay-filter underlay.m0: table inet wt_underlay: chains"),
    ({"error": "nft: no such table"}, "underlay underlay.m0: could not read the underlay namespace: nft: no such"),
])
def test_an_underlay_namespace_that_is_not_as_the_lab_made_it_is_named(change, expect):
    seen, st, root = clean()
    st[0] = static(0, **change)
    got = problems(au.judge(LAB, U, seen, st, root))
    assert len(got) == 1 and got[0].startswith(expect), got


def test_the_capture_filters_name_the_vteps_the_port_and_the_underlay():
    assert au.leak_filter(U[0]) == ("not ((udp dst port 4789 and (src host 198.19.255.249 or src host "
                                    "198.19.255.250) and (dst host 198.19.255.249 or dst host 198.19.255.250)) or "
                                    "(arp and (src host 198.19.255.249 or src host 198.19.255.250) and (dst host "
                                    "198.19.255.249 or dst host 198.19.255.250)))")
    # no Ethernet addresses: `-i any` captures cooked frames, where libpcap refuses them
    assert au.root_filter(U) == "udp port 4789 or net 198.19.255.248/29"
