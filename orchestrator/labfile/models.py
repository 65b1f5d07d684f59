"""The lab file's strict pydantic models (its constants are constants.py): a leaf every other step may import.
Loading and checking a file is load.py; resolving it, resolve.py."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.labfile.constants import (
    DEFAULT_SUBNETS,
    NAME_PATTERN,
)
from orchestrator.labfile.ipv4 import CIDR_PATTERN, IPV4_PATTERN

Role = Literal["admin-server", "blade", "gateway", "target", "sniffer", "injector"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The patterns are for the schema's users (editors, validators): the loader checks these fields itself, with
# messages that say more (resolve.py), and accepts exactly the strings the patterns match (ipv4.py).
Cidr = Annotated[str, Field(description="IPv4 network in CIDR notation, e.g. 198.18.1.0/24",
                            json_schema_extra={"format": "ipv4-cidr", "pattern": CIDR_PATTERN})]
Ipv4 = Annotated[str, Field(description="IPv4 address, e.g. 198.18.1.10",
                            json_schema_extra={"format": "ipv4", "pattern": IPV4_PATTERN})]


class LanSpec(Strict):
    subnet: Cidr = Field(description="the LAN's IPv4 subnet")


class ExperimentalSpec(Strict):
    """The experimental side: one subnet, or several named subnets joined by the gateway."""

    subnet: Cidr | None = Field(None, description="a single experimental subnet")
    subnets: dict[str, Cidr] | None = Field(
        None, description="several experimental subnets by name (hosts refer to them as experimental.NAME)")


class LansSpec(Strict):
    management: LanSpec = Field(default_factory=lambda: LanSpec(subnet=DEFAULT_SUBNETS["management"]))
    admin: LanSpec = Field(default_factory=lambda: LanSpec(subnet=DEFAULT_SUBNETS["admin"]))
    experimental: ExperimentalSpec = Field(
        default_factory=lambda: ExperimentalSpec(subnet=DEFAULT_SUBNETS["experimental"]))


class HostSpec(Strict):
    role: Role = Field(description="what the host does in the lab")
    count: int | None = Field(None, ge=1, le=4096,
                              description="a counted template: NAME1 … NAMEn (e.g. blade: {count: 16})")
    lans: list[str] | None = Field(
        None, description="LANs the host sits on: management, admin, experimental or experimental.NAME "
                          "(default by role)")
    addresses: dict[str, Ipv4] = Field(
        default_factory=dict,
        description="fixed IPv4 addresses by LAN; for a counted template, the first of a consecutive block")
    image: str | None = Field(None, description="libvirt provider: guest image name (default: debian)")
    memory_mib: int | None = Field(None, ge=64, le=65536, description="libvirt provider: guest RAM")
    vcpus: int | None = Field(None, ge=1, le=64, description="libvirt provider: virtual CPUs")
    machine: int | None = Field(None, ge=0, le=7, description="netns provider: the simulated machine the host "
                                "is placed on (0 … netns.machines − 1; default 0)")


class LibvirtOptions(Strict):
    uri: str = Field("qemu:///system", description="libvirt connection URI, e.g. qemu+ssh://host/system")
    uris: list[str] | None = Field(None, min_length=1, max_length=16,
                                   description="several hypervisors instead of uri: `testbed up` builds on the "
                                   "first; lab instance k (--parallel) on uris[k mod n]")
    domain_type: Literal["auto", "kvm", "qemu"] = Field(
        "auto", description="kvm, qemu (software emulation, TCG), or auto: kvm where it works")
    image: str = Field("debian", description="default guest image for every host")
    memory_mib: int = Field(192, ge=64, le=65536)
    vcpus: int = Field(1, ge=1, le=64)
    tb_cache_mib: int = Field(96, ge=16, le=2048, description="QEMU TCG translation cache per VM")
    network: str | None = Field(None, description="must not be set: lab networks are always made by the lab")


class NetnsOptions(Strict):
    machines: int = Field(1, ge=1, le=8, description="simulated machines the hosts are placed on (each a switch "
                          "namespace; two are joined by a veth underlay, every LAN stretched with VXLAN)")
    underlay: Cidr | None = Field(None, description="the underlay's subnet, where each machine's VTEP address "
                                  "comes from (default 198.19.255.248/29; no LAN's)")


class LabFile(Strict):
    """A worm-testbed lab file (labs/*.yaml)."""

    name: str = Field(pattern=NAME_PATTERN, description="lab name: lower-case letters, digits, dashes")
    description: str | None = None
    provider: str = Field("netns", description="netns (default) or libvirt")
    lans: LansSpec = Field(default_factory=LansSpec)
    hosts: dict[str, HostSpec] = Field(min_length=1)
    libvirt: LibvirtOptions | None = None
    netns: NetnsOptions | None = None


def schema_document(model: type[BaseModel], title: str) -> dict[str, Any]:
    """A model's JSON Schema as a document of its own: draft 2020-12, titled."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def json_schema() -> dict[str, Any]:
    return schema_document(LabFile, "worm-testbed lab file")


def spec_hash(spec: LabFile) -> str:
    d = spec.model_dump(mode="json")
    # fields added since hashes were first recorded count only when set: a lab file's hash stays what it was
    if d.get("netns") is None:
        d.pop("netns", None)
    if d.get("libvirt") and d["libvirt"].get("uris") is None:
        d["libvirt"].pop("uris", None)
    for h in d["hosts"].values():
        if h.get("machine") is None:
            h.pop("machine", None)
    canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()
