"""What every trial of a run shares, resolved once after the lab is up and provisioned: which host is
infected, where the injector, sniffer, gateway and worm servers stand, the mechanism's place, the host's
normal traffic, and how the lab's clocks relate (from the provider's `clock`)."""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field

from orchestrator.errors import TestbedError
from orchestrator.experiment import agreement
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
    throttle: HostPlace | LocalPlace | None = None     # where the throttle runs
    throttle_iface: str | None = None
    retransmit: str = "linux"         # the infected host's SYN retransmission schedule (for the model)
    retransmit_why: str = ""
    shared_clock: bool = False        # capture, worm and throttle on one kernel's clock (the netns provider)
    emulated: bool = False            # guests under QEMU's software emulation: wider tolerances
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def tolerance(self) -> dict:
        return agreement.tolerance(self.emulated)

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
        setup = cls(exp, lab, hosts, run, infected.name, injector.name, lab.by_role("sniffer")[0].name,
                    gateway.name if gateway else None, servers, iface.segment,
                    [seg.subnet for seg in lab.experimental_segments()],
                    normal_destinations(lab, infected.name, s.worm.scan, s.throttle.working_set_size
                                        if s.throttle != "none" else 5) if s.state == "full" else [],
                    canary)
        setup.retransmit, setup.retransmit_why = agreement.sender_schedule(hosts.sh(
            infected.name, "cat /proc/sys/net/ipv4/tcp_syn_linear_timeouts 2>/dev/null", timeout=30).stdout)
        if (th := exp.throttle) is not None:
            if th.placement == "host":
                setup.throttle, setup.throttle_iface = HostPlace(hosts, infected.name), iface.ifname
            elif th.placement == "gateway":
                assert gateway is not None
                setup.throttle = HostPlace(hosts, gateway.name)
                setup.throttle_iface = next(i.ifname for i in gateway.interfaces if i.segment == iface.segment)
            else:   # wire: outside the unmodified host, where its frames enter the lab's switch
                acc = hosts.access
                argv, port = acc.provider.wire_point(lab.name, infected.name)
                setup.throttle = LocalPlace(argv, acc.store.lab_dir(lab.name) / "wire", f"the wire of {infected.name}")
                setup.throttle_iface = port
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
    th = st.exp.throttle
    return delivered_to_gateway(st.lab) if th is not None and th.placement == "gateway" else set()


def answers_measurable(st: Setup, t: TrialSpec) -> bool:
    """Can the attempts out be counted from the answers, with the capture in front of the throttle? For TCP,
    when the gateway answers every scan of an empty address (reset); the capture's clock must then be tied to
    the throttle's (one kernel on namespaces; measured from the packets it passed on VMs)."""
    th = st.exp.throttle
    return bool(th is not None and th.placement in ("gateway", "wire")
                and t.protocol == "tcp" and st.exp.spec.gateway_empty == "reset")
