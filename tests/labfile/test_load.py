"""Lab files: the shipped labs resolve as the paper describes; every bad input names file, key path and reason."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.labfile.load import load_lab
from orchestrator.labfile.models import json_schema
from orchestrator.labfile.topology import Lab

LABS = Path(__file__).resolve().parents[2] / "labs"
ROUTES = ["192.0.2.0/24", "127.0.0.0/8"]   # a stand-in for this machine's routes


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_lab(path, machine_routes=ROUTES)
    assert exc.value.exit_code == 2
    assert exc.value.source == str(path)
    return [f"{where}: {why}" for where, why in exc.value.problems]


MINIMAL = """\
name: t
hosts:
  admin-server: {role: admin-server}
  blade: {role: blade}
"""


def test_paper_testbed_has_21_hosts_on_three_lans():
    lab = load_lab(LABS / "paper-testbed.yaml", machine_routes=ROUTES)
    assert lab.name == "paper-testbed" and lab.provider == "netns"
    assert len(lab.hosts) == 21
    roles = sorted(h.role for h in lab.hosts)
    assert roles.count("blade") == 16
    assert {r for r in roles if r != "blade"} == {"admin-server", "target", "gateway", "sniffer", "injector"}
    assert [s.key for s in lab.segments] == ["management", "admin", "experimental"]
    assert [h.name for h in lab.by_role("blade")] == [f"blade{i}" for i in range(1, 17)]
    # management: admin server and blades only
    assert {h.name for h in lab.hosts if h.on("management")} == {"admin-server"} | {f"blade{i}" for i in range(1, 17)}
    # every host reachable for provisioning
    assert all(h.on("admin") for h in lab.hosts)


def test_addresses_are_deterministic_gateway_first_and_sniffer_passive():
    a = load_lab(LABS / "paper-testbed.yaml", machine_routes=ROUTES)
    b = load_lab(LABS / "paper-testbed.yaml", machine_routes=ROUTES)
    assert a == b and a.spec_hash == b.spec_hash
    assert a.host("gateway").ip("experimental") == "198.18.8.1"
    assert a.host("admin-server").ip("admin") == "198.18.1.1"
    assert a.host("admin-server").ip("management") == "198.18.0.1"
    assert a.host("blade1").ip("management") == "198.18.0.2"
    sn = a.host("sniffer")
    exp = sn.iface("experimental")
    assert exp is not None and exp.mirror and exp.address is None
    assert sn.ip("admin") is not None
    # experimental hosts route via the gateway; the gateway and the sniffer route nowhere
    assert a.host("blade3").default_via == "198.18.8.1"
    assert a.host("gateway").default_via is None and a.host("sniffer").default_via is None
    assert [h.name for h in a.hosts if h.forwarding] == ["gateway"]
    # stable MACs, locally administered unicast
    macs = [i.mac for h in a.hosts for i in h.interfaces]
    assert len(set(macs)) == len(macs) and all(m.startswith("02:") for m in macs)


def test_snapshot_round_trips():
    lab = load_lab(LABS / "stopping-speed.yaml", machine_routes=ROUTES)
    again = Lab.from_dict(json.loads(json.dumps(lab.to_dict())))
    assert again == lab


def test_stopping_speed_lab_is_one_blade_behind_a_gateway():
    lab = load_lab(LABS / "stopping-speed.yaml", machine_routes=ROUTES)
    assert lab.name == "stopping-speed"
    assert [s.key for s in lab.experimental_segments()] == ["experimental.blades", "experimental.targets",
                                                            "experimental.normal"]
    assert len(lab.by_role("blade")) == 1
    gw = lab.host("gateway")
    assert gw.ip("experimental.blades") == "198.18.8.1" and gw.ip("experimental.targets") == "198.18.9.1"
    assert lab.host("blade").default_via == "198.18.8.1"
    assert lab.host("target1").default_via == "198.18.9.1"
    assert [i.ifname for i in lab.host("sniffer").interfaces if i.mirror] == ["exp0", "exp1", "exp2"]
    assert lab.host("gateway").ip("experimental.normal") == "198.18.10.1"   # the blade's normal traffic goes there
    assert {h.role for h in lab.hosts} == {"admin-server", "gateway", "blade", "target", "sniffer", "injector"}


def test_counted_template_with_fixed_first_address(tmp_path):
    p = write(tmp_path, """\
        name: t
        hosts:
          admin-server: {role: admin-server}
          blade: {role: blade, count: 3, addresses: {admin: 198.18.1.100, experimental: 198.18.8.50}}
        """)
    lab = load_lab(p, machine_routes=ROUTES)
    assert [lab.host(f"blade{i}").ip("admin") for i in (1, 2, 3)] == ["198.18.1.100", "198.18.1.101", "198.18.1.102"]
    assert lab.host("blade3").ip("experimental") == "198.18.8.52"


def test_defaults_come_from_the_benchmark_range(tmp_path):
    lab = load_lab(write(tmp_path, MINIMAL), machine_routes=ROUTES)
    assert [s.subnet for s in lab.segments] == ["198.18.0.0/24", "198.18.1.0/24", "198.18.8.0/22"]
    assert lab.provider == "netns"


@pytest.mark.parametrize("text, expected", [
    (MINIMAL + "  blade: {role: blade}\n", "hosts.blade (line 4): duplicate key 'blade' (line 5)"),
    (MINIMAL.replace("name: t", "name: t\ncolour: red"), "colour (line 2): unknown key 'colour'; known keys here: "
     "name, description, provider, lans, hosts, libvirt"),
    (MINIMAL.replace("{role: blade}", "{role: blade, vlan: 3}"),
     "hosts.blade.vlan (line 4): unknown key 'vlan'; known keys here: role, count, lans, addresses"),
    (MINIMAL.replace("{role: blade}", "{role: worm}"),
     "hosts.blade.role (line 4): unknown role 'worm'; known roles: admin-server, blade, gateway, target, sniffer, "
     "injector"),
    (MINIMAL.replace("name: t", "name: t\nprovider: docker"),
     "provider (line 2): unknown provider 'docker'; known providers: "),
    (MINIMAL + "  b2: {role: blade, lans: [admin, dmz]}\n",
     "hosts.b2.lans.1 (line 5): host 'b2' is on undeclared LAN 'dmz'; declared: management, admin, experimental"),
    (MINIMAL + "  b: {role: blade, count: 2}\n  b1: {role: blade}\n",
     "hosts.b1 (line 6): duplicate host 'b1' (also from hosts.b)"),
    ("name: t\nlans:\n  admin: {subnet: 198.18.1.0/33}\n" + MINIMAL.split("\n", 1)[1],
     "lans.admin.subnet (line 3): '198.18.1.0/33' is not a valid CIDR"),
    ("name: t\nlans:\n  admin: {subnet: 198.18.1.7/24}\n" + MINIMAL.split("\n", 1)[1],
     "lans.admin.subnet (line 3): '198.18.1.7/24' has host bits set; did you mean 198.18.1.0/24?"),
    ("name: t\nlans:\n  admin: {subnet: 198.18.0.0/16}\n" + MINIMAL.split("\n", 1)[1],
     "lans (line 2): management (198.18.0.0/24) overlaps admin (198.18.0.0/16)"),
    ("name: t\nlans:\n  admin: {subnet: 192.0.2.0/24}\n" + MINIMAL.split("\n", 1)[1],
     "lans.admin.subnet (line 3): 192.0.2.0/24 overlaps 192.0.2.0/24, route(s) this machine already uses"),
    (MINIMAL.replace("{role: blade}", "{role: blade, addresses: {admin: 198.18.2.9}}"),
     "hosts.blade.addresses.admin (line 4): 198.18.2.9 (for blade) is not within the usable addresses of admin "
     "198.18.1.0/24"),
    (MINIMAL.replace("{role: blade}", "{role: blade, addresses: {admin: 198.18.1.9}}")
     + "  b2: {role: blade, addresses: {admin: 198.18.1.9}}\n",
     "hosts.b2.addresses.admin (line 5): 198.18.1.9 is given to both blade and b2"),
    (MINIMAL.replace("{role: blade}", "{role: blade, count: 4, addresses: {admin: 198.18.1.253}}"),
     "hosts.blade.addresses.admin (line 4): the block 198.18.1.253–198.18.2.0 (for blade1…blade4)"),
    (MINIMAL.replace("{role: blade}", "{role: blade, addresses: {admin: 198.18.1.255}}"),
     "is not within the usable addresses of admin 198.18.1.0/24"),
    ("name: t\nlans:\n  experimental: {subnet: 198.18.8.0/29}\n" + MINIMAL.split("\n", 1)[1].replace(
        "{role: blade}", "{role: blade, count: 7}"),
     "lans.experimental.subnet (line 3): subnet 198.18.8.0/29 holds 6 hosts; 7 are on it"),
    (MINIMAL + "  t2: {role: target, lans: [admin, experimental], addresses: {management: 198.18.0.9}}\n",
     "hosts.t2.addresses.management (line 5): 'management' is not a LAN this host is on"),
    (MINIMAL + "  x: {role: injector, lans: [experimental]}\n",
     "hosts.x.lans (line 5): x must be on the admin LAN"),
    (MINIMAL + "  x: {role: target, lans: [management, admin, experimental]}\n",
     "hosts.x.lans (line 5): a target may not sit on the management LAN (allowed: admin-server, blade)"),
    (MINIMAL + "  s: {role: sniffer, addresses: {experimental: 198.18.8.9}}\n",
     "hosts.s.addresses (line 5): the sniffer's experimental port is passive and carries no address"),
    ("name: Bad_Name\nhosts:\n  admin-server: {role: admin-server}\n",
     "name (line 1): invalid lab name 'Bad_Name'"),
    ("name: t\nhosts:\n  blade: {role: blade}\n", "hosts (line 2): a lab needs exactly one admin-server (where the orchestrator stands); found 0"),
    ("name: t\nhosts: {}\n", "hosts (line 2): "),  # min_length
    (MINIMAL.replace("{role: blade}", "{role: blade, count: 0}"), "hosts.blade.count (line 4): "),
    ("name: t\nlans:\n  experimental:\n    subnets: {a: 198.18.8.0/24, b: 198.18.9.0/24}\nhosts:\n"
     "  admin-server: {role: admin-server}\n  blade: {role: blade, lans: [admin, experimental]}\n",
     "the experimental LAN has several subnets (experimental.a, experimental.b); say which one"),
    ("name: t\nlans:\n  experimental:\n    subnets: {a: 198.18.8.0/24, b: 198.18.9.0/24}\nhosts:\n"
     "  admin-server: {role: admin-server}\n  blade: {role: blade, lans: [admin, experimental.a]}\n",
     "hosts (line 5): several experimental subnets need a gateway host to join them"),
    ("name: t\nlans:\n  experimental: {subnet: 198.18.8.0/24, subnets: {a: 198.18.9.0/24}}\n"
     + MINIMAL.split("\n", 1)[1], "lans.experimental (line 3): give exactly one of 'subnet' or 'subnets'"),
    ("name: t\nhosts:\n  - admin-server\n", "hosts (line 2): Input should be a valid dictionary"),
    ("- just\n- a list\n", "<top>: a lab file is a mapping with at least 'name' and 'hosts'"),
    ("name: t\nhosts: {a: [}\n", "line 2, column 13: not valid YAML"),
    (MINIMAL + "  switch: {role: blade}\n", "hosts.switch (line 5): 'switch' is reserved"),
    ("name: t\nlans:\n  admin: {subnet: 203.0.113.0/24}\n" + MINIMAL.split("\n", 1)[1],
     "lans.admin.subnet (line 3): 203.0.113.0/24 is outside 198.18.0.0/15, the benchmark range every lab address"),
    ("name: t\nlans:\n  experimental:\n    subnets: {a: 198.18.8.0/24, b: 198.20.0.0/24}\n" + MINIMAL.split("\n", 1)[1],
     "lans.experimental.subnets.b (line 4): 198.20.0.0/24 is outside 198.18.0.0/15"),
    ("name: t\nlans:\n  admin: {subnet: 127.0.0.0/24}\n" + MINIMAL.split("\n", 1)[1],
     "lans.admin.subnet (line 3): 127.0.0.0/24 is outside 198.18.0.0/15"),
])
def test_bad_lab_files_name_key_path_and_reason(tmp_path, text, expected):
    path = write(tmp_path, text)
    found = problems_of(path)
    assert any(expected in p for p in found), f"{expected!r} not in {found}"


def test_all_problems_are_reported_at_once(tmp_path):
    path = write(tmp_path, """\
        name: t
        provider: docker
        lans:
          admin: {subnet: 198.18.1.7/24}
        hosts:
          admin-server: {role: admin-server}
          x: {role: injector, lans: [experimental]}
          t: {role: target, lans: [admin, experimental, nowhere]}
        """)
    found = problems_of(path)
    assert len(found) == 4, found
    assert str(path) in str(SpecError(str(path), [("a", "b")]))


def test_missing_file_is_a_spec_error(tmp_path):
    assert problems_of(tmp_path / "nope.yaml") == ["<top>: no such file"]


def test_json_schema_is_generated_from_the_models():
    schema = json_schema()
    assert schema["title"] == "worm-testbed lab file"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "hosts"}
    host = schema["$defs"]["HostSpec"]
    assert host["properties"]["role"]["enum"] == ["admin-server", "blade", "gateway", "target", "sniffer", "injector"]
    assert host["additionalProperties"] is False
