"""Hosts placed on simulated machines (orchestrator/labfile/placement.py): `netns: {machines, underlay}` and a
host's `machine`, resolved into the lab's options, every mistake named with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.labfile.load import load_lab
from tests.labfile.test_load import LABS, ROUTES, problems_of, write

TWO = """\
name: t
netns: {machines: 2}
hosts:
  admin-server: {role: admin-server}
  gateway: {role: gateway}
  blade: {role: blade, count: 3, machine: 1}
"""


def test_the_shipped_two_machine_lab_places_its_hosts_and_addresses_its_vteps():
    lab = load_lab(LABS / "two-machines.yaml", machine_routes=ROUTES)
    assert lab.options == {"machines": 2, "underlay": "198.19.255.248/29",
                           "vteps": ["198.19.255.249/29", "198.19.255.250/29"]}
    where = {h.name: h.options.get("machine", 0) for h in lab.hosts}
    assert where == {"admin-server": 0, "gateway": 0, "sniffer": 0, "target-near": 0, "blade": 1, "injector": 1,
                     "target-far": 1}


def test_a_counted_template_puts_every_copy_on_its_machine_and_the_rest_stay_on_machine_0(tmp_path: Path):
    lab = load_lab(write(tmp_path, TWO), machine_routes=ROUTES)
    assert [(h.name, h.options.get("machine", 0)) for h in lab.hosts] == [
        ("admin-server", 0), ("gateway", 0), ("blade1", 1), ("blade2", 1), ("blade3", 1)]
    assert lab.options["vteps"] == ["198.19.255.249/29", "198.19.255.250/29"]     # the default underlay


def test_a_lab_on_one_machine_has_no_netns_options(tmp_path: Path):
    lab = load_lab(write(tmp_path, TWO.replace("netns: {machines: 2}\n", "").replace(", machine: 1", "")),
                   machine_routes=ROUTES)
    assert lab.options == {} and all("machine" not in h.options for h in lab.hosts)


@pytest.mark.parametrize("change, expect", [
    (("netns: {machines: 2}\n", ""), "hosts.blade.machine: a host is placed on a machine but the lab has one"),
    (("machine: 1", "machine: 2"), "hosts.blade.machine: blade is placed on machine 2; the lab has machines 0…1"),
    (("machines: 2}", "machines: 2, underlay: 10.0.0.0/29}"),
     "netns.underlay: 10.0.0.0/29 is outside 198.18.0.0/15"),
    (("machines: 2}", "machines: 2, underlay: 198.18.1.0/29}"),
     "netns.underlay: the underlay 198.18.1.0/29 overlaps admin (198.18.1.0/24)"),
    (("machines: 2}", "machines: 2, underlay: 198.19.255.253/30}"), "netns.underlay: '198.19.255.253/30' is not a "
     "valid IPv4 CIDR"),
    (("machines: 2}", "machines: 3}"), "netns.machines: 3 machines: the netns provider simulates at most 2"),
    (("name: t\n", "name: t\nprovider: libvirt\n"), "netns: 'netns' options are for the netns provider"),
])
def test_bad_placements_are_refused_with_their_key_path(tmp_path: Path, change, expect):
    got = problems_of(write(tmp_path, TWO.replace(*change)))
    where, why = expect.split(": ", 1)
    assert any(p.split(" (line")[0] == where and why in p for p in got), got
