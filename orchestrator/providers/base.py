"""The provider interface: what turns a resolved lab into running hosts and networks, and back.

Everything above it (provisioning, capture, experiments, analysis) reaches hosts over the admin LAN with SSH
and is provider-independent; it never asks which provider it has. What it needs of the provider is on this
contract: building and removing (`create`, `destroy`, `resources`, `status`, `unrecorded`), out-of-band
management (`exec`, `power`, `console`, `revive`), where control traffic stands (`control_socket`,
`control_argv`, `control_proxy`, `ssh_hosts`, `host_vars`, `wait_ready`), the other machines a lab runs on
(`remote_shells`) and the underlay joining them (`underlays`), the wire placement (`wire_point`), and how the
hosts keep time (`clock`).
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from orchestrator.errors import HostNotFoundError, LabExistsError
from orchestrator.labfile.topology import Host, Lab
from orchestrator.localrun import Result
from orchestrator.providers.state import LabRecord, LabState, StateStore

# progress(step, done, total): providers report long work through this; the CLI draws it.
Progress = Callable[[str, int, int], None]


def no_progress(step: str, done: int, total: int) -> None:
    return None


# what a provider journals and removes: names of kinds, one vocabulary for every provider
ResourceKind = Literal["netns", "veth", "process", "sysctl", "file", "kernel-limits", "state-dir",
                       "domain", "network", "volume", "tap", "chain", "chains"]
HostState = Literal["up", "down", "missing", "degraded"]    # degraded: up, with a link not UP (netns)


@dataclass(frozen=True)
class Resource:
    kind: ResourceKind
    name: str
    present: bool
    detail: str = ""


@dataclass
class HostStatus:
    name: str
    role: str
    state: HostState
    addresses: dict[str, str] = field(default_factory=dict)    # ifname -> address ("" = no address)
    links: dict[str, str] = field(default_factory=dict)        # ifname -> UP/DOWN/LOWER_UP…
    processes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LabStatus:
    name: str
    provider: str
    state: LabState
    source: str
    created: float
    hosts: list[HostStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Prerequisite:
    """A probe a provider runs before doing anything; `fix` is what the user sees when it fails."""

    name: str
    ok: bool
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Clock:
    """How a lab's hosts keep time, as the run path needs to know it: whether capture, worm and mechanism
    read one kernel's clock (`shared`: offsets between them are zero by construction), and whether guests run
    under software emulation (`emulated`: they keep time less tightly, so tolerances widen)."""

    shared: bool = False
    emulated: bool = False
    domain_type: str | None = None      # what runs the guests (kvm, qemu), recorded in a run's manifest


@dataclass(frozen=True)
class Underlay:
    """One machine's end of the link that joins a lab's machines, its LANs stretched over it with VXLAN:
    `testbed check` captures it and reads the namespace it is in (orchestrator/lab/audit_underlay.py)."""

    machine: int
    argv: list[str]            # argv prefix that runs a program in the namespace that holds the link
    iface: str
    vteps: tuple[str, ...]     # every machine's VTEP address, by machine
    subnet: str                # the underlay's subnet: nothing else may be known there
    port: int = 4789           # the VXLAN UDP port
    table: str = "wt_underlay"  # the nftables table (inet) that admits only the VXLAN between the VTEPs


class Provider(ABC):
    name: ClassVar[str]

    def __init__(self, store: StateStore | None = None):
        self.store = store or StateStore()

    def lab_host(self, name: str, host: str) -> tuple[LabRecord, Host]:
        """The record of lab `name` and its host `host`; an unknown host is an error that lists the lab's."""
        rec = self.store.require(name)
        try:
            return rec, rec.topology.host(host)
        except KeyError:
            hosts = ", ".join(h.name for h in rec.topology.hosts)
            raise HostNotFoundError(f"lab '{name}' has no host '{host}'; its hosts: {hosts}") from None

    @abstractmethod
    def prerequisites(self, lab: Lab | None = None) -> list[Prerequisite]:
        """Probe what this provider needs (privileges, tools, daemons) and say how to fix what is missing."""

    @abstractmethod
    def create(self, lab: Lab, progress: Progress = no_progress) -> None:
        """Build every network and host of `lab`. On failure, remove what was made and raise."""

    def refuse_existing(self, name: str) -> None:
        """Raise LabExistsError when lab `name` is recorded (up, or left half-made by an interrupted command).
        Call with the lab's lock held."""
        existing = self.store.load(name)
        if existing is None:
            return
        if existing.state == "up":
            raise LabExistsError(f"lab '{name}' is already up; run `testbed down {name}` first")
        raise LabExistsError(f"lab '{name}' was left {existing.state} by an interrupted command; "
                             f"run `testbed down {name}` first")

    def destroy(self, name: str, progress: Progress = no_progress) -> list[Resource]:
        """Remove everything lab `name` owns (from its journal), idempotently; return what was removed."""
        with self.store.locked(name):
            rec = self.store.load(name)
            if rec is None:
                return []
            rec.state = "destroying"
            self.store.save(rec)
            return self._teardown(rec, progress)

    @abstractmethod
    def _teardown(self, rec: LabRecord, progress: Progress) -> list[Resource]:
        """Remove every resource `rec` journals (the lab's lock is held), then the record itself."""

    @abstractmethod
    def resources(self, name: str) -> list[Resource]:
        """Every resource lab `name` owns, and whether it is present."""

    @abstractmethod
    def status(self, name: str) -> LabStatus:
        ...

    def unrecorded(self) -> list[str]:
        """Resources on this machine that look like this provider's but no lab in this state directory
        recorded: never removed (nothing is cleaned up by guessing at names), only named to the user."""
        return []

    def clock(self, rec: LabRecord) -> Clock:
        """How lab `rec`'s hosts keep time (see `Clock`); by default each host its own, not emulated."""
        return Clock()

    def wait_ready(self, name: str) -> bool:
        """Wait for hosts that are still starting (a namespace lab just built: its sshds). True if there was
        anything to wait for, so a connection refused before is worth trying again."""
        return False

    def revive(self, name: str) -> list[str]:
        """Start again what a lab's hosts run as services and lost without being told to stop (a namespace
        lab's sshds die with the session that started them; a VM keeps its own). Returns "host/service"."""
        return []

    @abstractmethod
    def exec(self, name: str, host: str, argv: Sequence[str], *, timeout: float | None = 60.0,
             input: str | None = None, capture: bool = True) -> Result:
        """Run argv on a host out-of-band (not over the lab's own networks)."""

    # -- where the orchestrator's control traffic stands (the admin LAN, never the root namespace's routes)

    @abstractmethod
    def control_socket(self, name: str, address: str, port: int, timeout: float) -> socket.socket:
        """A TCP socket connected to `address:port` on the lab's admin LAN, from where control traffic stands
        (netns: inside the admin-server's namespace; libvirt: the hypervisor's address on the admin network)."""

    @abstractmethod
    def control_argv(self, name: str) -> list[str]:
        """argv prefix that runs a local program where control traffic stands (e.g. ansible-playbook)."""

    def remote_shells(self, name: str) -> list[list[str]]:
        """The other machines a lab runs on, each as an argv prefix that runs one shell command there (e.g.
        ssh to a remote hypervisor): `testbed check` reads their uplinks too. None here."""
        return []

    def underlays(self, name: str) -> list[Underlay]:
        """Where the lab spans several machines joined by an underlay link: each machine's end of it. None here."""
        return []

    def control_proxy(self, name: str) -> str | None:
        """Where the admin LAN is on another machine: an ssh ProxyCommand (with %h and %p) that reaches it, so
        ssh itself runs here, with the lab's keys and known_hosts; None where control_argv reaches it here."""
        return None

    def wire_point(self, name: str, host: str) -> tuple[list[str], str]:
        """Where a host's experimental traffic can be throttled *outside* the host (the wire placement):
        (argv prefix that runs a program there, on this machine; the bridge port its frames enter by)."""
        raise NotImplementedError(f"the {self.name} provider offers no wire placement")

    def ssh_hosts(self, lab: Lab) -> list[str]:
        """The hosts reached (and provisioned) over SSH on the admin LAN: every host with an admin address.
        A provider whose admin server is where control traffic starts, not a machine, leaves it out."""
        return [h.name for h in lab.hosts if h.ip("admin")]

    def host_vars(self, name: str, host: Host) -> dict[str, Any]:
        """Inventory variables that differ by provider: where a host installs the testbed, which Python runs
        Ansible's modules and ours. VMs and other real machines use /opt/testbed and the system python3."""
        return {"testbed_prefix": "/opt/testbed", "testbed_python": "/usr/bin/python3",
                "ansible_python_interpreter": "/usr/bin/python3"}

    def power(self, name: str, host: str, action: str) -> str:
        """Out-of-band power control (on, off, cycle) — the paper's remote management cards."""
        raise NotImplementedError(f"the {self.name} provider has no power control")

    def console(self, name: str, host: str) -> int:
        """Attach the user's terminal to a host's console; returns the exit code."""
        raise NotImplementedError(f"the {self.name} provider has no console")
