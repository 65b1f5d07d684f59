"""Resolution of a lab spec into a topology.Lab, with the semantic pass: overlaps with the machine's routes,
capacities, roles on LANs, fixed addresses — checked here because they need the same expansion of templates
and LAN references that resolution does. Every problem is collected, so one run shows them all."""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from orchestrator.labfile import constants, hypervisors, models, placement
from orchestrator.labfile.ipv4 import cidr_notation_problem
from orchestrator.labfile.topology import Host, Interface, Lab, Segment, mac_for

# host-side interface names are the same on every host: playbooks and captures can rely on them
_IFNAME = {"management": "mgmt0", "admin": "admin0"}
_BRIDGE = {"management": "br-mgmt", "admin": "br-admin"}
_PORT = {"management": "m", "admin": "a"}


class _Entry(NamedTuple):
    """One host after template expansion, before addresses are assigned."""

    name: str
    role: str
    lans: list[str]                              # segment keys
    fixed: dict[str, ipaddress.IPv4Address]      # segment key -> fixed address
    spec: models.HostSpec
    template: str | None
    path: tuple



def _network(cidr: Any, path: tuple, problems) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(str(cidr), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(str(cidr), strict=False)
            problems.add(path, f"'{cidr}' has host bits set; did you mean {loose}?")
        except ValueError:
            problems.add(path, f"'{cidr}' is not a valid CIDR ({exc})")
        return None
    if not isinstance(net, ipaddress.IPv4Network):
        problems.add(path, f"'{cidr}' is not IPv4; lab networks are IPv4")
        return None
    if why := cidr_notation_problem(str(cidr)):
        problems.add(path, f"'{cidr}' is not a valid CIDR: {why}")
        return None
    if net.prefixlen > 30:
        problems.add(path, f"'{cidr}' is too small for a LAN (a /30 holds 2 hosts; use /30 or larger)")
        return None
    if not net.subnet_of(ipaddress.IPv4Network(constants.LAB_RANGE)):
        problems.add(path, f"{cidr} is outside {constants.LAB_RANGE}, the benchmark range every lab address comes from")
    return net          # still checked for overlaps with this machine's routes, so every problem is said


def _segments(spec: models.LabFile, problems) -> list[tuple[Segment, ipaddress.IPv4Network | None]]:
    segs: list[tuple[Segment, ipaddress.IPv4Network | None]] = []
    for kind in ("management", "admin"):
        lan = getattr(spec.lans, kind)
        net = _network(lan.subnet, ("lans", kind, "subnet"), problems)
        segs.append((Segment(kind, kind, str(net or lan.subnet), _IFNAME[kind], _BRIDGE[kind], _PORT[kind]), net))
    exp = spec.lans.experimental
    if (exp.subnet is None) == (exp.subnets is None):
        problems.add(("lans", "experimental"), "give exactly one of 'subnet' or 'subnets'")
        return segs
    if exp.subnet is not None:
        net = _network(exp.subnet, ("lans", "experimental", "subnet"), problems)
        segs.append((Segment("experimental", "experimental", str(net or exp.subnet), "exp0", "br-exp0", "x0-"), net))
    else:
        assert exp.subnets is not None
        if not exp.subnets:
            problems.add(("lans", "experimental", "subnets"), "at least one subnet is needed")
        for i, (name, cidr) in enumerate(exp.subnets.items()):
            if not name.replace("-", "").isalnum() or not name[0].isalpha() or len(name) > 16:
                problems.add(("lans", "experimental", "subnets", name),
                             f"invalid subnet name '{name}': letters, digits, dashes; at most 16")
            net = _network(cidr, ("lans", "experimental", "subnets", name), problems)
            segs.append((Segment(f"experimental.{name}", "experimental", str(net or cidr), f"exp{i}",
                                 f"br-exp{i}", f"x{i}-"), net))
    # overlaps between the lab's own segments
    for i, (a, na) in enumerate(segs):
        for b, nb in segs[i + 1:]:
            if na and nb and na.overlaps(nb):
                problems.add(("lans",), f"{a.key} ({na}) overlaps {b.key} ({nb})")
    return segs


def _lan_refs(name: str, role: str, lans: list[str], segs: dict[str, Segment], path: tuple,
              problems) -> list[str]:
    """Turn a host's LAN references into segment keys (experimental = its only subnet, or all for gateway/sniffer)."""
    exp_keys = [k for k, s in segs.items() if s.kind == "experimental"]
    out: list[str] = []
    for i, ref in enumerate(lans):
        if ref in ("management", "admin"):
            keys = [ref]
        elif ref == "experimental":
            if len(exp_keys) > 1 and role not in ("gateway", "sniffer"):
                problems.add((*path, i), "the experimental LAN has several subnets "
                             f"({', '.join(exp_keys)}); say which one, e.g. {exp_keys[0]}")
                continue
            keys = exp_keys
        elif ref in segs:
            keys = [ref]
        else:
            known = ["management", "admin", "experimental", *[k for k in exp_keys if k != "experimental"]]
            problems.add((*path, i), f"host '{name}' is on undeclared LAN '{ref}'; declared: {', '.join(known)}")
            continue
        for k in keys:
            if k in out:
                problems.add((*path, i), f"LAN '{ref}' is listed twice")
            else:
                out.append(k)
    return out


def resolve(spec: models.LabFile, source: str, problems, *, machine_routes: list[str]) -> Lab | None:
    """The lab `spec` describes, or None with every problem added to `problems`."""
    seg_list = _segments(spec, problems)
    segs = {s.key: s for s, _ in seg_list}
    nets = {s.key: n for s, n in seg_list}
    _route_clashes(nets, machine_routes, problems)
    expanded = _expand(spec, segs, problems)
    _role_rules(expanded, segs, problems)
    assigned = _assign(expanded, segs, nets, problems)
    options = placement.options(spec, nets, problems)           # {} unless the hosts are on several machines
    if spec.libvirt:
        options = hypervisors.options(spec, problems)
    if problems.items:
        return None
    gateway = next((e for e in expanded if e.role == "gateway"), None)
    hosts = [_host(spec.name, idx, e, segs, nets, assigned, gateway) for idx, e in enumerate(expanded)]
    return Lab(spec.name, spec.provider, source, models.spec_hash(spec), tuple(segs.values()), tuple(hosts), options)


def _route_clashes(nets: dict[str, ipaddress.IPv4Network | None], machine_routes: list[str], problems) -> None:
    """A lab subnet that overlaps a route this machine already uses."""
    for key, net in nets.items():
        if net is None:
            continue
        clash = [str(rn) for r in machine_routes
                 if (rn := ipaddress.ip_network(r, strict=False)).version == 4 and rn.prefixlen > 0
                 and net.overlaps(rn)]
        if clash:
            problems.add(_seg_path(key), f"{net} overlaps {', '.join(clash)}, route(s) this machine already "
                         f"uses; choose another part of {constants.LAB_RANGE}")


def _expand(spec: models.LabFile, segs: dict[str, Segment], problems) -> list[_Entry]:
    """Hosts and templates expanded, in file order (a template's count makes name1…nameN)."""
    expanded: list[_Entry] = []
    seen: dict[str, str] = {}
    for entry, hs in spec.hosts.items():
        path = ("hosts", entry)
        if not _valid_host_name(entry):
            problems.add(path, f"invalid host name '{entry}': 1-20 lower-case letters, digits, dashes, "
                         "starting with a letter")
            continue
        if entry in constants.RESERVED_HOST_NAMES:
            problems.add(path, f"'{entry}' is reserved (the lab's own switch); choose another name")
            continue
        lans = _lan_refs(entry, hs.role, list(hs.lans) if hs.lans is not None else constants.DEFAULT_LANS[hs.role],
                         segs, (*path, "lans"), problems)
        fixed = _fixed(hs, lans, segs, path, problems)
        names = [entry] if hs.count is None else [f"{entry}{i}" for i in range(1, hs.count + 1)]
        for n, name in enumerate(names):
            if name in seen:
                problems.add(path, f"duplicate host '{name}' (also from hosts.{seen[name]})")
                continue
            seen[name] = entry
            addrs = {k: a + n for k, a in fixed.items()}
            expanded.append(_Entry(name, hs.role, lans, addrs, hs, entry if hs.count is not None else None, path))
    return expanded


def _fixed(hs: models.HostSpec, lans: list[str], segs: dict[str, Segment], path: tuple,
           problems) -> dict[str, ipaddress.IPv4Address]:
    """A host's fixed addresses, by segment key."""
    fixed: dict[str, ipaddress.IPv4Address] = {}
    for ref, addr in hs.addresses.items():
        lan = ref if ref in segs else None
        if ref == "experimental":
            exp_on = [k for k in lans if segs[k].kind == "experimental"]
            lan = exp_on[0] if len(exp_on) == 1 else None
        if lan is None or lan not in lans:
            problems.add((*path, "addresses", ref), f"'{ref}' is not a LAN this host is on")
            continue
        try:
            fixed[lan] = ipaddress.IPv4Address(str(addr))
        except ValueError:
            problems.add((*path, "addresses", ref), f"'{addr}' is not a valid IPv4 address")
    return fixed


def _assign(expanded: list[_Entry], segs: dict[str, Segment], nets: dict[str, ipaddress.IPv4Network | None],
            problems) -> dict[tuple[str, str], ipaddress.IPv4Address]:
    """Addresses: fixed ones first (checked), then the gateway (experimental) or admin server, then file order."""
    assigned: dict[tuple[str, str], ipaddress.IPv4Address] = {}
    for seg_key, net in nets.items():
        if net is None:
            continue
        passive = segs[seg_key].kind == "experimental"  # the sniffer's experimental port has no address
        on_seg = [e for e in expanded if seg_key in e.lans and not (passive and e.role == "sniffer")]
        usable = net.num_addresses - 2
        full = len(on_seg) > usable
        if full:
            problems.add(_seg_path(seg_key), f"subnet {net} holds {usable} hosts; {len(on_seg)} are on it")
        taken = _check_fixed(on_seg, seg_key, net, assigned, problems)
        if full:
            continue
        pool = (a for a in net.hosts() if a not in taken)
        first = "gateway" if passive else "admin-server"   # .1 is the router / the admin server
        order = [e for e in on_seg if e.role == first] + [e for e in on_seg if e.role != first]
        for e in order:
            if (e.name, seg_key) not in assigned:
                assigned[(e.name, seg_key)] = next(pool)
    return assigned


def _check_fixed(on_seg: list[_Entry], seg_key: str, net: ipaddress.IPv4Network,
                 assigned: dict[tuple[str, str], ipaddress.IPv4Address], problems) -> dict[ipaddress.IPv4Address, str]:
    """The fixed addresses on one segment, checked (in the subnet, usable, given once) and assigned."""
    taken: dict[ipaddress.IPv4Address, str] = {}
    bad_blocks: set[str] = set()
    for e in on_seg:
        if seg_key not in e.fixed:
            continue
        a = e.fixed[seg_key]
        ref = "experimental" if seg_key.startswith("experimental") else seg_key
        where = (*e.path, "addresses", _addr_key(e.spec, seg_key, ref))
        if a not in net or a in (net.network_address, net.broadcast_address):
            if e.template is not None and e.template in bad_blocks:
                continue
            what = f"{a} (for {e.name})"
            if e.template is not None and e.spec.count:
                bad_blocks.add(e.template)
                start = a - (int(e.name[len(e.template):]) - 1)
                what = (f"the block {start}–{start + e.spec.count - 1} "
                        f"(for {e.template}1…{e.template}{e.spec.count})")
            problems.add(where, f"{what} is not within the usable addresses of {seg_key} {net}")
        elif a in taken:
            problems.add(where, f"{a} is given to both {taken[a]} and {e.name}")
        else:
            taken[a] = e.name
            assigned[(e.name, seg_key)] = a
    return taken


def _host(lab: str, idx: int, e: _Entry, segs: dict[str, Segment], nets: dict[str, ipaddress.IPv4Network | None],
          assigned: dict[tuple[str, str], ipaddress.IPv4Address], gateway: _Entry | None) -> Host:
    """One host, its interfaces addressed, its default route through the gateway."""
    name, role, lans, hs = e.name, e.role, e.lans, e.spec
    ifaces = []
    for key in lans:
        seg = segs[key]
        if role == "sniffer" and seg.kind == "experimental":
            # passive: no address; receives a copy of every frame entering the switch on this segment
            ifaces.append(Interface(key, seg.ifname, None, mac_for(lab, name, seg.ifname),
                                    f"{seg.port_prefix}{idx}", mirror=True))
            continue
        net = nets[key]
        assert net is not None
        ifaces.append(Interface(key, seg.ifname, f"{assigned[(name, key)]}/{net.prefixlen}",
                                mac_for(lab, name, seg.ifname), f"{seg.port_prefix}{idx}"))
    default_via = None
    if gateway and role not in ("gateway", "sniffer"):
        for i in ifaces:
            if segs.get(i.segment) and segs[i.segment].kind == "experimental" and i.segment in gateway.lans:
                default_via = str(assigned[(gateway.name, i.segment)])
                break
    opts = {k: v for k, v in (("image", hs.image), ("memory_mib", hs.memory_mib), ("vcpus", hs.vcpus),
                              ("machine", hs.machine)) if v is not None}
    return Host(name, role, idx, tuple(ifaces), default_via, role == "gateway", e.template, opts)


def _addr_key(hs: models.HostSpec, seg_key: str, ref: str) -> str:
    return seg_key if seg_key in hs.addresses else ref


def _seg_path(seg_key: str) -> tuple:
    if seg_key.startswith("experimental."):
        return ("lans", "experimental", "subnets", seg_key.split(".", 1)[1])
    if seg_key == "experimental":
        return ("lans", "experimental", "subnet")
    return ("lans", seg_key, "subnet")


def _valid_host_name(name: str) -> bool:
    import re
    return re.fullmatch(constants.HOST_PATTERN, name) is not None


def _role_rules(expanded: list[_Entry], segs: dict[str, Segment], problems) -> None:
    by_role: dict[str, list[_Entry]] = {}
    for e in expanded:
        by_role.setdefault(e.role, []).append(e)
    admins = by_role.get("admin-server", [])
    if len(admins) != 1:
        problems.add(("hosts",), f"a lab needs exactly one admin-server (where the orchestrator stands); "
                     f"found {len(admins)}")
    for role in ("gateway", "sniffer"):
        if len(by_role.get(role, [])) > 1:
            problems.add(("hosts",), f"at most one {role} per lab; found "
                         f"{', '.join(e.name for e in by_role[role])}")
    for e in expanded:
        kinds = {segs[k].kind for k in e.lans}
        if "admin" not in kinds:
            problems.add((*e.path, "lans"), f"{e.name} must be on the admin LAN: it is how the orchestrator "
                         "provisions and reaches every host")
        for kind in kinds:
            if e.role not in constants.ALLOWED_ROLES[kind]:
                allowed = ", ".join(sorted(constants.ALLOWED_ROLES[kind]))
                problems.add((*e.path, "lans"), f"a {e.role} may not sit on the {kind} LAN (allowed: {allowed})")
        if e.role in ("sniffer", "gateway", "target", "injector") and "experimental" not in kinds:
            problems.add((*e.path, "lans"), f"a {e.role} belongs on the experimental LAN")
        if e.role == "sniffer" and any(segs[k].kind == "experimental" for k in e.fixed):
            problems.add((*e.path, "addresses"), "the sniffer's experimental port is passive and carries no address")
    exp_keys = [k for k, s in segs.items() if s.kind == "experimental"]
    if len(exp_keys) > 1:
        gws = by_role.get("gateway", [])
        if not gws:
            problems.add(("hosts",), "several experimental subnets need a gateway host to join them")
        else:
            for k in exp_keys:
                used = any(k in e.lans for e in expanded if e.role not in ("gateway", "sniffer"))
                if used and k not in gws[0].lans:
                    problems.add((*gws[0].path, "lans"), f"the gateway must be on {k}: hosts there route through it")
