"""Interlocks as pure functions: lab ranges, allow-list, route tables and namespaces (no I/O, fake /proc)."""

from __future__ import annotations

import pytest

from testworm.addrs import AddressSet, ip_int
from testworm.errors import InterlockError
from testworm.interlocks import (
    Environment,
    Route,
    TargetGuard,
    check_allow,
    check_environment,
    check_lab_ranges,
    check_targets,
    environment_problems,
    parse_ipv6_defaults,
    parse_route_table,
)

LAB = AddressSet.from_cidrs(["198.18.0.0/15"])

# /proc/net/route and /proc/net/ipv6_route of a real root namespace (little-endian host)
ROUTE_ROOT = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
ROUTE_LAB = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
lan1\t00C912C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
ROUTE_LAB_GW = ROUTE_LAB + "lan1\t00000000\t03C912C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
ROUTE_DEV_DEFAULT = ROUTE_LAB + "ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n"
IPV6_ROOT = """00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
"""


def env(routes=ROUTE_LAB, v6="", own=(4, 2), roots=((4, 1),), guest=False, probes=None) -> Environment:
    return Environment(own_netns=own, root_netns=list(roots), lab_guest=guest,
                       routes_v4=parse_route_table(routes, "little"), defaults_v6=parse_ipv6_defaults(v6),
                       probes=probes or {})


@pytest.mark.parametrize("cidr", ["8.8.8.0/24", "10.0.0.0/7", "192.0.2.0/24", "0.0.0.0/0", "127.0.0.0/8",
                                  "224.0.0.0/4", "198.16.0.0/13", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                  "100.64.0.0/10", "198.20.0.0/24"])
def test_lab_ranges_must_be_benchmark_space_never_public_or_private(cidr):
    with pytest.raises(InterlockError, match=r"outside the blocks a lab may use \(198\.18\.0\.0/15\)"):
        check_lab_ranges(AddressSet.from_cidrs([cidr]))


def test_benchmark_lab_ranges_are_accepted():
    check_lab_ranges(AddressSet.from_cidrs(["198.18.0.0/15"]))
    check_lab_ranges(AddressSet.from_cidrs(["198.18.8.0/24", "198.19.255.0/24"]))


def test_allow_list_and_targets_must_nest():
    lab = AddressSet.from_cidrs(["198.18.8.0/22"])
    with pytest.raises(InterlockError, match=r"allow-list reaches 198\.18\.12\.0, outside the lab ranges"):
        check_allow(AddressSet.from_cidrs(["198.18.8.0/21"]), lab)
    with pytest.raises(InterlockError, match="empty"):
        check_allow(AddressSet([]), lab)
    with pytest.raises(InterlockError, match=r"198\.18\.9\.0 is not inside the allow-list 198\.18\.8\.0/24"):
        check_targets(AddressSet.from_cidrs(["198.18.8.0/23"]), AddressSet.from_cidrs(["198.18.8.0/24"]))


def test_target_guard_checks_every_address():
    g = TargetGuard(AddressSet.from_cidrs(["198.18.8.0/24"]))
    g(ip_int("198.18.8.255"))
    with pytest.raises(InterlockError, match=r"198\.18\.9\.0 is outside the allow-list"):
        g(ip_int("198.18.9.0"))


def test_route_table_parsing():
    r = parse_route_table(ROUTE_ROOT, "little")
    assert r[0] == Route("eth0", 0, ip_int("192.0.2.1"), 3, 0)
    assert r[1].dest == ip_int("192.0.2.0") and r[1].mask == ip_int("255.255.255.0")
    assert parse_ipv6_defaults(IPV6_ROOT) == ["eth0"]  # the lo reject route is not a default route


def test_the_root_namespace_of_a_real_machine_is_refused_for_every_reason():
    problems = environment_problems(env(ROUTE_ROOT, IPV6_ROOT, own=(4, 1)), LAB)
    assert problems == [
        "this is the machine's root network namespace",
        "route 0.0.0.0/0 via 192.0.2.1 (dev eth0): gateway outside the lab ranges",
        "IPv6 default route on dev eth0",
    ]


def test_a_lab_namespace_passes_with_or_without_a_lab_gateway():
    assert environment_problems(env(ROUTE_LAB), LAB) == []
    assert environment_problems(env(ROUTE_LAB_GW, probes={"203.0.113.1": "198.18.201.1"}), LAB) == []


def test_uplinks_are_refused_even_in_a_namespace():
    assert environment_problems(env(ROUTE_DEV_DEFAULT), LAB) == ["default route on dev ppp0 (no lab gateway)"]
    outside = environment_problems(env(ROUTE_LAB_GW), AddressSet.from_cidrs(["198.19.0.0/16"]))
    assert outside == ["route 0.0.0.0/0 via 198.18.201.3 (dev lan1): gateway outside the lab ranges"]
    probed = environment_problems(env(probes={"203.0.113.1": "192.0.2.2", "2001:db8::1": "fd00::2"}), LAB)
    assert probed == ["a route to the outside exists (203.0.113.1 from 192.0.2.2, outside the lab ranges)",
                      "an IPv6 route to the outside exists (2001:db8::1 from fd00::2)"]


def test_unknown_namespace_fails_closed_unless_a_provisioned_vm_guest():
    assert environment_problems(env(roots=()), LAB)[0].startswith("cannot tell whether this is the machine's root")
    assert environment_problems(env(own=None), LAB)[0].startswith("cannot tell")
    assert environment_problems(env(own=(4, 1), guest=True), LAB) == []
    assert environment_problems(env(ROUTE_ROOT, own=(4, 1), guest=True), LAB) == [
        "route 0.0.0.0/0 via 192.0.2.1 (dev eth0): gateway outside the lab ranges"]


def test_check_environment_refuses_before_probing_and_override_only_warns():
    calls, warnings = [], []

    def read(probe: bool) -> Environment:
        calls.append(probe)
        return env(ROUTE_ROOT, own=(4, 1))
    with pytest.raises(InterlockError, match="refusing to run outside a lab: this is the machine's root network "
                                             "namespace.*--i-know-this-is-not-a-lab"):
        check_environment(LAB, read=read)
    assert calls == [False]  # no route probe (no socket at all) once the cheap checks refused
    got = check_environment(LAB, override=True, read=read, warn=warnings.append)
    assert got[0] == "this is the machine's root network namespace"
    assert "WARNING" in warnings[0]


def test_check_environment_probes_when_the_files_look_fine():
    calls = []

    def read(probe: bool) -> Environment:
        calls.append(probe)
        return env(probes={"203.0.113.1": "10.9.9.9"} if probe else None)
    with pytest.raises(InterlockError, match="a route to the outside exists"):
        check_environment(LAB, read=read)
    assert calls == [False, True]
