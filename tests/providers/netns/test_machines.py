"""A netns lab on two simulated machines (orchestrator/providers/netns/machines.py): the namespaces, each
machine's switch (its own hosts' ports, the VXLAN devices in the bridges, remote MACs at their VTEP, the
sniffer's copies) and underlay, as batch lines — without root (test_machines_kernel.py builds it)."""

from __future__ import annotations

from orchestrator.labfile.load import load_lab
from orchestrator.providers.netns import machines
from tests.labfile.test_load import LABS, ROUTES

LAB = load_lab(LABS / "two-machines.yaml", machine_routes=ROUTES)
ONE = load_lab(LABS / "stopping-speed.yaml", machine_routes=ROUTES)


def test_the_namespaces_of_two_machines_and_of_one():
    assert machines.namespaces(LAB) == ["wt.two-machines.switch", "wt.two-machines.switch.m1",
                                        "wt.two-machines.underlay.m0", "wt.two-machines.underlay.m1"]
    assert machines.namespaces(ONE) == ["wt.stopping-speed.switch"]


def test_on_one_machine_the_switch_is_todays():
    p = machines.switch_plan(ONE, 0)
    ports = {i.port for h in ONE.hosts for i in h.interfaces}
    assert {ln.split()[2] for ln in p.ip if ln.endswith("up") and "master" in ln} == ports - {
        i.port for i in ONE.host("sniffer").interfaces if i.mirror}
    assert not any("vx" in ln for ln in p.ip + p.bridge + p.tc)
    blade = ONE.host("blade").iface("experimental.blades")
    snf = ONE.host("sniffer").iface("experimental.blades")
    assert f"filter add dev {blade.port} ingress protocol all prio 1 u32 match u32 0 0 action mirred egress mirror " \
           f"dev {snf.port}" in p.tc


def test_each_machine_plugs_in_only_its_own_hosts_and_every_lan_has_a_vxlan_device():
    m1 = machines.switch_plan(LAB, 1)
    mine = {i.port for h in LAB.hosts if h.options.get("machine") == 1 for i in h.interfaces}
    plugged = {ln.split()[2] for ln in m1.ip if " master br-" in ln and not ln.split()[2].startswith("vx")}
    assert plugged == mine
    assert [ln for ln in m1.ip if ln.startswith("link set vx")] == [
        "link set vx100 master br-mgmt up", "link set vx101 master br-admin up", "link set vx102 master br-exp0 up",
        "link set vx103 master br-exp1 up", "link set vx104 master br-exp2 up",
        "link set vx202 up", "link set vx203 up", "link set vx204 up"]


def test_remote_macs_are_known_at_the_far_vtep_and_on_the_bridge_port():
    m1 = machines.switch_plan(LAB, 1)
    gw = LAB.host("gateway").iface("experimental.blades")      # on machine 0
    assert f"fdb add {gw.mac} dev vx102 dst 198.19.255.249 static" in m1.bridge
    assert f"fdb add {gw.mac} dev vx102 master static" in m1.bridge
    assert "fdb append 00:00:00:00:00:00 dev vx102 dst 198.19.255.249" in m1.bridge
    blade = LAB.host("blade").iface("experimental.blades")     # mine: on its port, not at a VTEP
    assert f"fdb add {blade.mac} dev {blade.port} master static" in m1.bridge
    assert not any(blade.mac in ln and "vx" in ln for ln in m1.bridge)
    snf = LAB.host("sniffer").iface("experimental.blades")     # passive: never in a bridge, anywhere
    assert not any(snf.mac in ln for m in (0, 1) for ln in machines.switch_plan(LAB, m).bridge)


def test_the_sniffers_copies_from_the_far_machine_cross_in_the_mirror_vni_once():
    far, near = machines.switch_plan(LAB, 1), machines.switch_plan(LAB, 0)
    blade = LAB.host("blade").iface("experimental.blades")
    assert [ln for ln in far.tc if ln.startswith("filter")] == [
        f"filter add dev {blade.port} ingress protocol all pref 1 u32 match u32 0 0 action mirred egress mirror dev "
        "vx202",
        f"filter add dev {LAB.host('injector').iface('experimental.blades').port} ingress protocol all pref 1 u32 "
        "match u32 0 0 action mirred egress mirror dev vx202",
        f"filter add dev {LAB.host('target-far').iface('experimental.targets').port} ingress protocol all pref 1 u32 "
        "match u32 0 0 action mirred egress mirror dev vx203"]
    snf = {i.segment: i.port for i in LAB.host("sniffer").interfaces}
    sources = {ln.split()[3]: ln.split()[-1] for ln in near.tc if ln.startswith("filter")}
    assert sources["vx202"] == snf["experimental.blades"] and sources["vx203"] == snf["experimental.targets"]
    assert sources["vx204"] == snf["experimental.normal"]
    assert all(not ln.split()[3].startswith("vx10") for ln in near.tc if ln.startswith("filter"))  # LAN VNIs: not
    # copied again where they arrive — every frame was copied where it entered a bridge from a host's port


def test_the_underlay_makes_every_vni_there_and_filters_all_but_vxlan():
    lines, nft = machines.underlay_plan(LAB, 1)
    assert lines[:2] == ["addr add 198.19.255.250/29 dev ul0", "link set ul0 mtu 1550 up"]
    assert "link set vx104 mtu 1500 netns wt.two-machines.switch.m1" in lines
    assert "link add vx203 type vxlan id 203 local 198.19.255.250 dstport 4789 dev ul0 nolearning" in lines
    assert "ip saddr { 198.19.255.249 } ip daddr 198.19.255.250 udp dport 4789 accept" in nft
    assert machines.underlay_link(LAB) == ("link add ul0 netns wt.two-machines.underlay.m0 type veth peer name ul0 "
                                           "netns wt.two-machines.underlay.m1")
