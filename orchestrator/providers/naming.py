"""Names of the network namespaces the providers make on this machine: every host of a netns lab, and a
libvirt lab's admin-server (where its control traffic stands). One scheme, so `down` finds exactly what a
lab made and nothing else."""

from __future__ import annotations

PREFIX = "wt."


def ns_name(lab: str, host: str) -> str:
    return f"{PREFIX}{lab}.{host}"


def switch_name(lab: str) -> str:
    return f"{PREFIX}{lab}.switch"
