"""Several hypervisors in one lab file (`libvirt: {uris: [...]}`, issue 18 §3): checked and resolved into the
lab's libvirt options — pure. A lab instance is built on one hypervisor: `testbed up` on the first, and
instance k of a lab (`--parallel`, `--name`-style copies) on `uri_for(options, k)`, the list taken in turn;
`on(lab, uri)` is that lab placed there (what its record, and so every later verb on it, reads)."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlparse

from orchestrator.errors import UsageError
from orchestrator.labfile import models
from orchestrator.labfile.topology import Lab

SCHEMES = ("qemu", "qemu+ssh", "test")     # this machine, another over SSH, libvirt's test driver


def options(spec: models.LabFile, problems) -> dict[str, Any]:
    """The lab's libvirt options; with `uris`, `uri` is the first of them (where `testbed up` builds)."""
    lv = spec.libvirt
    assert lv is not None
    d = lv.model_dump()
    if lv.uris is None:
        d.pop("uris")           # a lab file without the key resolves as it always did
        return d
    if "uri" in lv.model_fields_set:
        problems.add(("libvirt", "uri"), "give uri or uris, not both")
    seen: dict[str, int] = {}
    for k, uri in enumerate(lv.uris):
        where = ("libvirt", "uris", k)
        p = urlparse(uri)
        if p.scheme not in SCHEMES:
            problems.add(where, f"'{uri}' is not a hypervisor URI: qemu:///system, "
                         "qemu+ssh://[user@]host[:port]/system or test:///default")
        elif p.scheme.startswith("qemu") and p.path != "/system":
            problems.add(where, f"'{uri}': a lab needs the system libvirt (…/system); a session one cannot make "
                         "bridges and taps")
        elif p.scheme == "qemu+ssh" and not p.hostname:
            problems.add(where, f"'{uri}' names no host")
        key = f"{p.scheme}://{p.hostname or ''}:{p.port or ''}{p.path}"
        if key in seen:
            problems.add(where, f"'{uri}' is the same hypervisor as uris[{seen[key]}]")
        seen.setdefault(key, k)
    d["uri"] = lv.uris[0]
    return d


def uri_for(options: dict[str, Any], instance: int) -> str:
    """The hypervisor lab instance `instance` (0, 1, …) is built on: the lab's uris in turn, or its one uri."""
    uris = listed(options)
    return uris[instance % len(uris)]


def listed(options: dict[str, Any]) -> list[str]:
    """Every hypervisor a lab's options name (its uris, or its one uri)."""
    return [str(u) for u in options.get("uris") or [options.get("uri", "qemu:///system")]]


def on(lab: Lab, uri: str | None) -> Lab:
    """Lab `lab` to be built on hypervisor `uri`, one its file lists (the lab as it is for None or its own uri).
    A hypervisor the file does not list is refused: a lab is built only where its file says."""
    if uri is None or uri == lab.options.get("uri"):
        return lab
    if lab.provider != "libvirt":
        raise UsageError(f"lab {lab.name} is a {lab.provider} lab: only a libvirt lab is built on a hypervisor "
                         f"({display(uri)})")
    if uri not in listed(lab.options):
        raise UsageError(f"{display(uri)} is not a hypervisor of lab {lab.name}; its lab file lists "
                         f"{', '.join(display(u) for u in listed(lab.options))}")
    return dataclasses.replace(lab, options={**lab.options, "uri": uri})


def display(uri: str) -> str:
    """A hypervisor URI as progress lines and reports show it: without its ?keyfile=…&known_hosts=… query."""
    return uri.split("?", 1)[0]
