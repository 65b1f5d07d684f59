"""Where the lab instances of a `--parallel` run on a libvirt lab stand (issue 18 §3): instance i on the lab
file's hypervisors in turn (pool.hypervisor), so a reader of the run directory sees the placement — the
manifest's `parallel.hypervisors`, each trial record's `hypervisor`, a lost instance's line naming the one it
was lost on — and the progress lines say it. Namespace labs have no hypervisor: nothing here applies to them.
"""

from __future__ import annotations

from orchestrator.experiment import pool
from orchestrator.experiment.spec import Experiment
from orchestrator.labfile.hypervisors import display
from orchestrator.labfile.topology import Lab


def plan(exp: Experiment, k: int) -> dict[str, str]:
    """{instance name: hypervisor URI} for k instances of a libvirt lab; {} on other providers."""
    if exp.lab.provider != "libvirt":
        return {}
    return {pool.instance_name(exp.lab.name, i): str(pool.hypervisor(exp, i)) for i in range(1, k + 1)}


def line(placed: dict[str, str]) -> str:
    """What the run says first: which instances each hypervisor holds (and that one holds several, if so)."""
    on: dict[str, list[str]] = {}
    for name, uri in placed.items():
        on.setdefault(display(uri), []).append(name)
    many = len(on) < len(placed)
    return (f"{len(placed)} lab instances on {len(on)} hypervisor(s)"
            f"{' (more instances than hypervisors: several on one)' if many else ''}: "
            + "; ".join(f"{uri}: {', '.join(names)}" for uri, names in on.items()))


def where_built(lab: Lab) -> str:
    """", on qemu+ssh://hv2/system" for a libvirt lab (its hypervisor, without the URI's query), else ""."""
    uri = lab.options.get("uri") if lab.provider == "libvirt" else None
    return f", on {display(uri)}" if uri else ""


class Placement:
    """The instances' hypervisors as a run records them: planned, then (for each trial) where its instance
    was really built — its state record, which differs from the plan only for an instance reused from before."""

    def __init__(self, placed: dict[str, str], store):
        self.placed, self.store, self.built = placed, store, dict[str, str]()

    def mark(self, rec) -> str | None:
        """Put the trial's hypervisor in its record (`hypervisor`); the progress line's "NAME at URI"."""
        name = rec.extra.get("lab_instance")
        if not self.placed or not name:
            return name
        if name not in self.built:
            lab_rec = self.store.load(name)
            self.built[name] = str((lab_rec.topology.options.get("uri") if lab_rec else None)
                                   or self.placed.get(name, "?"))
        rec.extra["hypervisor"] = self.built[name]
        return f"{name} at {display(self.built[name])}"

    def lost(self, exc: BaseException, name: str | None) -> str:
        """A lost instance's line in the manifest: its failure, on a libvirt lab prefixed with the instance
        and the hypervisor it was to be built on ("t-2 on qemu+ssh://hv2/system: …")."""
        msg = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        uri = self.placed.get(name) if name else None
        return f"{name} on {display(uri)}: {msg}" if uri else msg
