"""The explicit provider registry: a name maps to a class path; an unknown name lists the known ones."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from orchestrator.errors import UnknownProviderError

if TYPE_CHECKING:           # a leaf: the lab file's loader asks it for the known names
    from orchestrator.providers.base import Provider
    from orchestrator.providers.state import StateStore

_REGISTRY: dict[str, str] = {
    "netns": "orchestrator.providers.netns.provider:NetnsProvider",
    "libvirt": "orchestrator.providers.libvirt.provider:LibvirtProvider",
}


def known_providers() -> list[str]:
    return sorted(_REGISTRY)


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def get_provider(name: str, store: StateStore | None = None) -> Provider:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownProviderError(
            f"unknown provider '{name}'; known providers: {', '.join(known_providers())}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(store)
