"""What every trial of a run shares, resolved once after the lab is up and provisioned: which host is
infected, where the injector, sniffer, gateway and worm servers stand, the mechanism's place, the host's
normal traffic, and how the lab's clocks relate (from the provider's `clock`)."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from dataclasses import dataclass, field

from orchestrator.errors import TestbedError
from orchestrator.experiment import agreement
from orchestrator.experiment.mechspec import MechanismRun
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.spec import Experiment
from orchestrator.lab.programs import HostPlace, LabHosts, LocalPlace
from orchestrator.labfile.topology import Lab


@dataclass
class Setup:
    """What every trial of a run shares (resolved once, after the lab is up and provisioned)."""

    exp: Experiment
    lab: Lab
    hosts: LabHosts
    run: RunDir
    infected: str
    injector: str
    sniffer: str
    gateway: str | None
    servers: list[str]
    segment: str
    exp_ranges: list[str]
    normal: list[str]
    canary: tuple[str, str]
    throttle: HostPlace | LocalPlace | None = None     # where the trial's mechanism runs (None: nothing to run)
    throttle_iface: str | None = None
    mech: MechanismRun | None = None                   # the trial's mechanism (for_mechanism)
    places: dict[str, tuple[HostPlace | LocalPlace, str]] = field(default_factory=dict)   # placement → place, iface
    retransmit: str = "linux"         # the infected host's SYN retransmission schedule (for the model)
    retransmit_why: str = ""
    shared_clock: bool = False        # capture, worm and throttle on one kernel's clock (the netns provider)
    emulated: bool = False            # guests under QEMU's software emulation: wider tolerances
    stop: threading.Event = field(default_factory=threading.Event)
    abort_late_s: float | None = None   # end a try at once when the throttle releases this late (it is redone)

    @property
    def tolerance(self) -> dict:
        return agreement.tolerance(self.emulated)

    @property
    def throttled(self) -> bool:
        """The trial's mechanism is the reference throttle (williamson): its event log, model and agreement."""
        return self.mech is not None and self.mech.name == "williamson"

    @property
    def spread(self) -> bool:
        """A spread's hosts meet the worm fresh: no normal traffic fills a working set first."""
        return self.exp.spec.kind == "spread"

    @property
    def contained_by(self) -> MechanismRun | None:
        """The trial's mechanism, unless it is none (the control group)."""
        return None if self.mech is None or self.mech.is_none else self.mech

    def for_mechanism(self, m: MechanismRun) -> Setup:
        """This run's setup for a trial of mechanism `m`: its place, interface and the host's normal traffic.
        The normal traffic fills williamson's working set (state: full); no other mechanism has one, and to TRW
        those first contacts to empty addresses would be failures that block the host before the worm starts,
        so the others meet the worm fresh (a `kind: baseline` file keeps its five, as before). Shares the stop
        event."""
        place, iface = self.places.get(m.placement, (None, None)) if not m.is_none else (None, None)
        n = m.params["working_set_size"] if m.name == "williamson" else 5
        if m.name != "williamson" and not self.exp.legacy or not self.exp.spec.state == "full" \
                or self.exp.spec.worm is None or self.spread:   # benign: its own traffic meets the mechanism
            normal = []
        elif len(self.normal) == n:
            normal = self.normal
        else:
            normal = normal_destinations(self.lab, self.infected, self.exp.spec.worm.scan, n)
        return dataclasses.replace(self, mech=m, throttle=place, throttle_iface=iface, normal=normal)

    @classmethod
    def resolve(cls, exp: Experiment, lab: Lab, hosts: LabHosts, run: RunDir) -> Setup:
        s = exp.spec
        infected = lab.host(s.infected or lab.by_role("blade")[0].name)
        iface = next(i for i in infected.interfaces if i.segment.startswith("experimental"))
        injector = lab.by_role("injector")[0]
        gateway = lab.by_role("gateway")[0] if lab.by_role("gateway") else None
        servers = [infected.name] + [h.name for h in lab.by_role("target")]
        # the canary crosses the infected host's segment between two hosts that are not the worm
        gateway_ip = gateway.ip(iface.segment) if gateway else None
        infected_ip = lab_ip(lab, infected.name, iface.segment)
        if injector.ip(iface.segment) and gateway_ip:
            canary = (injector.name, gateway_ip)
        elif gateway and gateway_ip:
            canary = (gateway.name, infected_ip)
        else:
            canary = (injector.name, infected_ip)
        first = exp.mechanisms[0] if exp.mechanisms else None
        n = first.params["working_set_size"] if first is not None and first.name == "williamson" else 5
        setup = cls(exp, lab, hosts, run, infected.name, injector.name, lab.by_role("sniffer")[0].name,
                    gateway.name if gateway else None, servers, iface.segment,
                    [seg.subnet for seg in lab.experimental_segments()],
                    normal_destinations(lab, infected.name, s.worm.scan, n) if s.state == "full" and s.worm
                    and s.kind != "spread" else [],
                    canary)
        setup.retransmit, setup.retransmit_why = agreement.sender_schedule(hosts.sh(
            infected.name, "cat /proc/sys/net/ipv4/tcp_syn_linear_timeouts 2>/dev/null", timeout=30).stdout)
        for placement in dict.fromkeys(m.placement for m in exp.mechanisms if not m.is_none):
            if placement == "host":
                setup.places[placement] = HostPlace(hosts, infected.name), iface.ifname
            elif placement == "gateway":
                assert gateway is not None
                setup.places[placement] = (HostPlace(hosts, gateway.name),
                                           next(i.ifname for i in gateway.interfaces if i.segment == iface.segment))
            else:   # wire: outside the unmodified host, where its frames enter the lab's switch
                acc = hosts.access
                argv, port = acc.provider.wire_point(lab.name, infected.name)
                setup.places[placement] = (LocalPlace(argv, acc.store.lab_dir(lab.name) / "wire",
                                                      f"the wire of {infected.name}"), port)
        if first is not None:
            setup = setup.for_mechanism(first)
        return setup


def normal_destinations(lab: Lab, host: str, scan: str, n: int) -> list[str]:
    """The host's normal traffic before the worm: n destinations outside the scan range, so its working set is
    full when the worm starts. Taken from the top of the experimental subnets the host reaches through the
    gateway, so the traffic crosses its wire and any throttle outside the host sees it too (a SYN to an
    empty address on the host's own subnet never leaves the host: ARP fails); the host's own subnet is the
    last resort, and then only a throttle in the host sees it."""
    h = lab.host(host)
    seg = next(i for i in h.interfaces if i.segment.startswith("experimental"))
    own = lab.segment(seg.segment)
    routed = [s for s in lab.experimental_segments() if s.key != own.key] if h.default_via else []
    taken = {i.ip for x in lab.hosts for i in x.interfaces if i.ip}
    scan_net = ipaddress.ip_network(scan)
    out: list[str] = []
    for s in [*routed, own]:
        for a in reversed(list(ipaddress.ip_network(s.subnet).hosts())):
            if a in scan_net or str(a) in taken:
                continue
            out.append(str(a))
            if len(out) == n:
                return out
    raise TestbedError(f"{host} can reach no room outside the scan range {scan} for its normal traffic")


def lab_ip(lab: Lab, host: str, segment: str) -> str:
    ip = lab.host(host).ip(segment) or next(i.ip for i in lab.host(host).interfaces
                                            if i.segment.startswith("experimental") and i.ip)
    assert ip
    return ip


def delivered_to_gateway(lab: Lab) -> set[str]:
    """Addresses a scan can hit that the gateway delivers to itself instead of forwarding — its own, and its
    subnets' broadcast addresses —, so a throttle on its forwarded traffic never sees them (measured: the
    worm's SYN to the gateway's address on the targets' subnet was answered, not queued)."""
    out: set[str] = set()
    for gw in lab.by_role("gateway"):
        for i in gw.interfaces:
            if i.address and i.ip:
                out |= {i.ip, str(ipaddress.ip_interface(i.address).network.broadcast_address)}
    return out


def unseen_by_mechanism(st: Setup) -> set[str]:
    m = st.contained_by
    return delivered_to_gateway(st.lab) if m is not None and m.placement == "gateway" else set()


def answers_measurable(st: Setup, t: TrialSpec) -> bool:
    """Can the attempts out be counted from the answers, with the capture in front of the throttle? For TCP,
    when the gateway answers every scan of an empty address (reset); the capture's clock must then be tied to
    the throttle's (one kernel on namespaces; measured from the packets it passed on VMs)."""
    m = st.contained_by
    return bool(m is not None and m.placement in ("gateway", "wire")
                and t.protocol == "tcp" and st.exp.spec.gateway_empty == "reset")
