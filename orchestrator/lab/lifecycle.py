"""The lab verbs behind the CLI: up, down, status, exec, check — one function each, provider-independent
(each imports what only it needs when called: `testbed down` does not load the lab file's models).

A lab that is up is found by name in the state store; its record says which provider made it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import LabNotFoundError
from orchestrator.labfile.topology import Lab
from orchestrator.localrun import Result
from orchestrator.providers import get_provider, known_providers
from orchestrator.providers.base import LabStatus, Progress, Provider, Resource, no_progress
from orchestrator.providers.state import StateStore

if TYPE_CHECKING:
    from orchestrator.lab.audit import CheckReport


def provider_for(name: str, store: StateStore | None = None) -> tuple[Provider, Lab]:
    store = store or StateStore()
    rec = store.require(name)
    return get_provider(rec.provider, store), rec.topology


def up(path: str | Path, *, provider: str | None = None, name: str | None = None,
       store: StateStore | None = None, progress: Progress = no_progress, hypervisor: str | None = None) -> Lab:
    """Validate a lab file completely, then build it. Nothing is created if the file has any problem.
    `hypervisor`: build on this one of the hypervisors the file lists (`libvirt.uris`; default the first)."""
    from orchestrator.labfile import hypervisors
    from orchestrator.labfile.load import load_lab

    lab = hypervisors.on(load_lab(path, provider_override=provider, name_override=name), hypervisor)
    prov = get_provider(lab.provider, store)
    prov.create(lab, progress)
    return lab


def down(name: str, *, store: StateStore | None = None, progress: Progress = no_progress) -> list[Resource] | None:
    """Remove everything lab `name` made. None if no such lab is known (not an error)."""
    store = store or StateStore()
    rec = store.load(name)
    if rec is None:
        if not store.has_traces(name):
            return None
        with store.locked(name):        # waits for a command making it right now; the lock file goes after
            rec = store.load(name)
            if rec is None:
                held = store.remove_unborn(name)
                return None if held is None else [Resource(
                    "state-dir", str(store.lab_dir(name)), True,
                    f"no record, only {len(held)} temporary file(s): killed while writing its first record")]
    from orchestrator.lab.provision import control_dir

    removed = get_provider(rec.provider, store).destroy(name, progress)
    shutil.rmtree(control_dir(store, name), ignore_errors=True)   # Ansible's SSH control sockets, if any
    return removed


def down_all(*, store: StateStore | None = None, progress: Progress = no_progress) -> dict[str, list[Resource]]:
    store = store or StateStore()
    out: dict[str, list[Resource]] = {}
    for name in sorted({*store.names(), *store.unborn(), *store.lock_names()}):
        removed = down(name, store=store, progress=progress)
        if removed is not None:
            out[name] = removed
    return out


def status(name: str, *, store: StateStore | None = None) -> LabStatus:
    prov, _ = provider_for(name, store)
    return prov.status(name)


def status_all(*, store: StateStore | None = None) -> list[LabStatus]:
    store = store or StateStore()
    out = []
    for name in store.names():
        try:
            out.append(status(name, store=store))
        except LabNotFoundError:
            continue
    return out


def unrecorded(store: StateStore | None = None) -> list[str]:
    """What looks like a lab's but no lab in this state directory recorded (each provider says): left alone."""
    store = store or StateStore()
    return sorted(n for kind in known_providers() for n in get_provider(kind, store).unrecorded())


def exec_(name: str, host: str, argv: Sequence[str], *, capture: bool = False, timeout: float | None = None,
          store: StateStore | None = None) -> Result:
    prov, _ = provider_for(name, store)
    return prov.exec(name, host, argv, timeout=timeout, capture=capture)


def check(name: str, *, store: StateStore | None = None) -> CheckReport:
    from orchestrator.lab import audit

    prov, lab = provider_for(name, store)
    return audit.run_check(prov, lab)


def status_dict(st: LabStatus) -> dict:
    return asdict(st)
