"""The `benign:` block of an experiment file and `kind: benign` (issue 17): the benign workload the host carrying
the mechanism runs (workload/), checked against the lab before anything is built.

```yaml
kind: benign
benign: {servers: 20, popularity: zipf, burst: 1, duration_s: 30}
rates: [0.5, 1, 2, 5, 10]        # the workload's new connections per second
mechanisms: [{name: williamson, placement: host, params: {working_set_size: 5}}]
```
The servers are the lab's first `servers` targets (one address each: a throttle's working set counts
destinations), each running the workload's HTTP-like TCP and DNS-like UDP servers; the generator runs on the
blade that carries the mechanism (`infected:`, default the first blade).

`hosts: N` runs the workload on N blades at once (the `infected:` one, then the lab's other blades in order),
each carrying the mechanism and following its own schedule (the seed + its index: host 0 keeps the seed, so
`hosts: 1` is the single-host trial exactly). `miss: f` sends that share of each host's connections to a lab
target that runs no workload server (the targets after the first `servers`) — a stale address, whose failed
first contact is what a scan detector such as TRW counts: its false positives over the hosts and the time run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.labfile.topology import Lab

TCP_PORT, UDP_PORT = 8081, 5354      # beside the worm's 8080 on the same targets


class BenignSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: int = Field(20, ge=1, le=4096, description="how many of the lab's targets serve the workload")
    popularity: Literal["zipf", "uniform"] = Field("zipf", description="how a connection picks its server")
    zipf_s: float = Field(1.0, gt=0, le=10, description="Zipf exponent: server k has weight 1/k^s")
    burst: int = Field(1, ge=1, le=100, description="connections a page opens at once")
    arrivals: Literal["poisson", "periodic"] = Field("poisson", description="how pages arrive")
    duration_s: float = Field(30.0, gt=0, le=600, description="seconds over which connections are scheduled")
    protocols: list[Literal["tcp", "udp"]] = Field(default_factory=lambda: list[Literal["tcp", "udp"]](["tcp"]), min_length=1,
                                                   description="one trial per protocol: HTTP-like TCP or "
                                                               "DNS-like UDP")
    timeout_s: float = Field(10.0, gt=0, le=60, description="the generator's: connect and be answered")
    trace: str | None = Field(None, description="replay this trace (CSV: time,destination,protocol,port; or "
                                                "a pcap), relative to the experiment file, instead of a "
                                                "generated schedule (then rates only label the trials)")
    wrap: bool = Field(False, description="a trace with more destinations than servers: destination k → "
                                          "server k mod n")
    seed: int | None = Field(None, ge=0, description="the schedule's seed (default: the experiment's)")
    hosts: int = Field(1, ge=1, le=256, description="how many blades run the workload at once, each carrying the "
                                                    "mechanism, each with its own schedule (seed + its index)")
    miss: float = Field(0.0, ge=0, le=1, description="share of connections sent to a lab target without a "
                                                     "workload server (a stale address: a failed first contact)")
    rate: float | None = Field(None, gt=0, le=1000, description="beside a worm (stopping-speed, baseline): the "
                                                               "workload's new connections per second (rates: are "
                                                               "the worm's); kind: benign takes its rates from rates:")
    lead_s: float = Field(10.0, ge=0, le=600, description="beside a worm: seconds of benign use on the infected "
                                                          "host before the worm is triggered (< duration_s)")


def check(spec, lab: Lab | None, base: Path, problems, *, kind_refused: bool = False) -> None:
    """`kind: benign` needs a `benign:` block (and no worm); other kinds need their worm (a refused kind is not
    judged by its default: whether it needs one is not known). With the lab: enough targets for the servers, a
    blade to run the generator, a sniffer; the trace file exists."""
    b = spec.benign
    if kind_refused:
        pass
    elif spec.kind == "benign":
        if b is None:
            problems.add(("benign",), "kind: benign needs a benign: block (servers, popularity, burst, "
                                      "duration_s …)")
        if spec.worm is not None:
            problems.add(("worm",), "kind: benign runs no worm; drop the worm: block (or use kind: "
                                    "stopping-speed with a benign: block beside it)")
    elif spec.worm is None:
        problems.add(("worm",), "Field required (every kind but benign runs a worm)")
    if b is not None and b.trace is not None:
        path = Path(b.trace) if Path(b.trace).is_absolute() else base / b.trace
        if not path.is_file():
            problems.add(("benign", "trace"), f"trace {path} does not exist")
        elif (why := trace_problem(path, b)) is not None:
            problems.add(("benign", "trace"), why)
    if b is not None and spec.kind != "benign" and not kind_refused:
        for key, v, dflt in (("hosts", b.hosts, 1), ("miss", b.miss, 0.0)):
            if v != dflt:
                problems.add(("benign", key), f"{key} is for kind: benign (the workload alone on several hosts); "
                                              f"kind: {spec.kind} runs it beside the worm on one")
    if lab is None or b is None:
        return
    targets = lab.by_role("target")
    if b.servers > len(targets):
        problems.add(("benign", "servers"), f"lab {lab.name} has {len(targets)} target(s); {b.servers} servers "
                                            "need as many (one address each)")
    if spec.kind == "benign":
        check_hosts(spec, lab, problems)
        check_detectors(spec, lab, problems)


def check_detectors(spec, lab: Lab, problems) -> None:
    """`hosts` and `miss` against the lab: enough blades, somewhere without a server for the misses to go, and
    a workload that can miss (a replayed trace has its own destinations)."""
    b = spec.benign
    blades = lab.by_role("blade")
    if b.hosts > len(blades):
        problems.add(("benign", "hosts"), f"lab {lab.name} has {len(blades)} blade(s); {b.hosts} hosts need as "
                                          "many (each runs the workload and carries the mechanism)")
    if b.hosts > 1:
        th = spec.throttle
        if spec.mechanisms is None and not isinstance(th, str) and th.placement != "host":
            problems.add(("throttle", "placement"), f"benign.hosts {b.hosts}: each host carries its own throttle, "
                                                    f"so its placement must be host, not {th.placement}")
        for i, m in enumerate(spec.mechanisms or []):
            if m.placement != "host" and m.name != "none":
                problems.add(("mechanisms", i, "placement"), f"benign.hosts {b.hosts}: each host carries its own "
                                                             f"{m.name}, so its placement must be host, not "
                                                             f"{m.placement}")
    if b.miss > 0:
        stale = len(lab.by_role("target")) - b.servers
        if b.trace is not None:
            problems.add(("benign", "miss"), "a replayed trace has its own destinations: miss applies to a "
                                             "generated schedule only")
        elif stale <= 0:
            problems.add(("benign", "miss"), f"every target of lab {lab.name} runs a workload server "
                                             f"({b.servers} servers, {len(lab.by_role('target'))} target(s)): "
                                             "a missed connection needs a target without one; give fewer "
                                             "benign.servers")


def trace_problem(path: Path, b: BenignSpec) -> str | None:
    """What the generator would refuse in the trace (its line), read here so it fails before a lab is built."""
    from testworm.errors import UsageError
    from workload import trace

    try:
        trace.load(str(path), [f"server {k}" for k in range(b.servers)], wrap=b.wrap, ports="lab",
                   tcp_port=TCP_PORT, udp_port=UDP_PORT)
    except UsageError as exc:
        return str(exc).replace("give more --servers or --wrap", "give more benign.servers or benign.wrap: true")
    return None


def check_hosts(spec, lab: Lab, problems) -> None:
    """The generator's host and the sniffer (a benign experiment has no worm checks to make them)."""
    blade = spec.infected or (lab.by_role("blade")[0].name if lab.by_role("blade") else None)
    if blade is None:
        problems.add(("infected",), f"lab {lab.name} has no blade to run the benign workload")
    else:
        try:
            if lab.host(blade).role != "blade":
                problems.add(("infected",), f"{blade} is a {lab.host(blade).role}, not a blade")
        except KeyError:
            problems.add(("infected",), f"lab {lab.name} has no host '{blade}'")
    if not lab.by_role("sniffer"):
        problems.add(("lab",), f"lab {lab.name} has no sniffer to capture the wire")
    for i, m in enumerate(spec.mechanisms or []):
        if m.placement == "gateway" and not lab.by_role("gateway"):
            problems.add(("mechanisms", i, "placement"), f"lab {lab.name} has no gateway to place {m.name} on")


def blades_of(spec, lab: Lab) -> list[str]:
    """The blades that run the workload: the `infected:` one (default the first), then the others in order."""
    b = spec.benign
    names = [h.name for h in lab.by_role("blade")]
    first = spec.infected or (names[0] if names else None)
    order = [first, *(n for n in names if n != first)] if first else names
    return order[:b.hosts if b is not None else 1]


def stale_targets(spec, lab: Lab) -> list[str]:
    """The targets without a workload server (after the first `servers`): where missed connections go."""
    b = spec.benign
    return [h.name for h in lab.by_role("target")][b.servers:] if b is not None and b.miss > 0 else []


def trace_path(exp) -> Path | None:
    b = exp.spec.benign
    if b is None or b.trace is None:
        return None
    return Path(b.trace) if Path(b.trace).is_absolute() else Path(exp.source).parent / b.trace
