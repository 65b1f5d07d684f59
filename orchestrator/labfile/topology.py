"""The resolved lab: segments, hosts, interfaces and addresses, derived deterministically from a lab spec
(by resolve.py).

This is a pure description (no I/O, no pydantic), the thing every provider realises and `down`/`status`/
`check` read back from the lab's snapshot.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Segment:
    """One L2 segment (a bridge on the lab's switch): management, admin, or one experimental subnet."""

    key: str        # management | admin | experimental | experimental.<name>
    kind: str       # management | admin | experimental
    subnet: str     # CIDR
    ifname: str     # host-side interface name on this segment (mgmt0, admin0, exp0, exp1, …)
    bridge: str     # bridge name in the switch namespace
    port_prefix: str


@dataclass(frozen=True)
class Interface:
    segment: str            # Segment.key
    ifname: str
    address: str | None     # "198.18.1.5/24"; None for the sniffer's passive mirror port
    mac: str
    port: str               # the peer's name in the switch namespace
    mirror: bool = False    # the sniffer's passive port: a copy of every frame on its segment, no address

    @property
    def ip(self) -> str | None:
        return self.address.split("/")[0] if self.address else None


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    index: int                          # position in the lab (stable, used for port names)
    interfaces: tuple[Interface, ...]
    default_via: str | None = None      # next hop of the default route (the gateway), if any
    forwarding: bool = False
    template: str | None = None         # the counted template it came from
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific (image, memory_mib, vcpus)

    def iface(self, segment_or_kind: str) -> Interface | None:
        for i in self.interfaces:
            if i.segment == segment_or_kind:
                return i
        for i in self.interfaces:
            if i.segment.split(".")[0] == segment_or_kind:
                return i
        return None

    def ip(self, segment_or_kind: str) -> str | None:
        i = self.iface(segment_or_kind)
        return i.ip if i else None

    @property
    def segments(self) -> set[str]:
        return {i.segment for i in self.interfaces}

    def on(self, kind: str) -> bool:
        return any(i.segment.split(".")[0] == kind for i in self.interfaces)


@dataclass(frozen=True)
class Lab:
    name: str
    provider: str
    source: str
    spec_hash: str
    segments: tuple[Segment, ...]
    hosts: tuple[Host, ...]
    options: dict[str, Any] = field(default_factory=dict)   # provider options (libvirt: uri, …)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    def segment(self, key: str) -> Segment:
        for s in self.segments:
            if s.key == key:
                return s
        raise KeyError(key)

    def experimental_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.kind == "experimental"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lab:
        return cls(
            name=d["name"], provider=d["provider"], source=d["source"], spec_hash=d["spec_hash"],
            segments=tuple(Segment(**s) for s in d["segments"]),
            hosts=tuple(Host(**{**h, "interfaces": tuple(Interface(**i) for i in h["interfaces"])})
                        for h in d["hosts"]),
            options=d.get("options", {}),
        )


def mac_for(lab: str, host: str, ifname: str) -> str:
    """A stable, locally administered unicast MAC, so captures of the same lab are comparable run to run."""
    h = hashlib.sha256(f"{lab}/{host}/{ifname}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])
