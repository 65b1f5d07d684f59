"""LANs stretched over two "machines" with VXLAN (orchestrator/providers/netns/vxlan.py): the plan's rules,
without root (test_vxlan_kernel.py applies them to two machines simulated as namespaces)."""

from __future__ import annotations

import pytest

from orchestrator.providers.netns import vxlan

M = [vxlan.Machine(0, "s0", "u0", "ul0", "198.19.255.1/30"), vxlan.Machine(1, "s1", "u1", "ul0", "198.19.255.2/30")]
LAN, MIRROR = vxlan.Stretch("br0", 100), vxlan.Stretch("", 101)


def test_the_underlay_namespace_makes_the_devices_and_hands_them_to_the_switch():
    lines = vxlan.underlay_lines(M[0], M, [LAN], [MIRROR], mtu=1500)
    assert lines[0] == "addr add 198.19.255.1/30 dev ul0"
    assert "link add vx100 type vxlan id 100 local 198.19.255.1 dstport 4789 dev ul0 nolearning" in lines
    assert "link set vx100 mtu 1450 netns s0" in lines and "link set vx101 mtu 1450 netns s0" in lines
    assert vxlan.switch_lines(M[0], [LAN], [MIRROR]) == ["link set vx100 master br0 up", "link set vx101 up"]


def test_flooding_and_remote_macs_go_to_the_other_vtep_only():
    fdb = vxlan.fdb_lines(M[1], M, [LAN], {100: {0: ["02:00:00:00:00:01"], 1: ["02:00:00:00:00:02"]}})
    assert fdb == ["fdb append 00:00:00:00:00:00 dev vx100 dst 198.19.255.1",
                   "fdb add 02:00:00:00:00:01 dev vx100 dst 198.19.255.1 static"]


def test_the_mirror_copies_local_ports_and_on_the_sniffers_machine_the_mirror_vni():
    far = vxlan.mirror_lines(M[1], 0, ["p-h1"], "p-snf", MIRROR)
    assert far[1].endswith("action mirred egress mirror dev vx101") and len(far) == 2
    near = vxlan.mirror_lines(M[0], 0, ["p-h0"], "p-snf", MIRROR)
    assert [ln.split()[3] for ln in near if ln.startswith("filter")] == ["p-h0", "vx101"]
    assert all(ln.endswith("mirror dev p-snf") for ln in near if ln.startswith("filter"))


def test_the_underlay_filter_admits_only_vxlan_between_vteps():
    nft = vxlan.underlay_nft(M[0], M)
    assert "ip saddr { 198.19.255.2 } ip daddr 198.19.255.1 udp dport 4789 accept" in nft
    assert nft.count("policy drop") == 3


@pytest.mark.parametrize("vteps, msg", [
    (("10.0.0.1/30", "10.0.0.2/30"), "outside 198.18.0.0/15"),
    (("198.19.255.1/30", "198.19.255.1/30"), "share a VTEP"),
    (("198.19.255.1/30", "198.19.254.2/30"), "not on one underlay subnet"),
])
def test_bad_vteps_are_refused(vteps, msg):
    ms = [vxlan.Machine(i, f"s{i}", f"u{i}", "ul0", v) for i, v in enumerate(vteps)]
    with pytest.raises(ValueError, match=msg):
        vxlan.underlay_lines(ms[0], ms, [LAN], [])
