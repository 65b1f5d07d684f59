"""Experiment files (labs/*.yaml with `experiment:`): strict models and the semantic pass against their lab.

`load_experiment(path)` returns an `Experiment` (the validated file plus its resolved lab) or raises SpecError
with every problem, before anything is built — the experiment file's and its lab file's together (SpecErrors),
the semantic checks run on whatever parsed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import SpecError, spec_errors
from orchestrator.experiment import benignspec, sweepspec, wormbenignspec
from orchestrator.experiment.benignspec import BenignSpec
from orchestrator.experiment.mechspec import MechanismRun, MechanismSpec, resolve_mechanisms
from orchestrator.experiment.spread import check_spread
from orchestrator.labfile.ipv4 import cidr_notation_problem
from orchestrator.labfile.load import _AfterCuts, load_lab, validate_partly
from orchestrator.labfile.models import Cidr, schema_document
from orchestrator.labfile.specfile import Problems, read_spec_file
from orchestrator.labfile.topology import Lab

STRATEGIES = ("sequential", "random", "local-preference", "hit-list")
PROFILES = ("nimda-like", "codered2-like", "blaster-like", "slammer-like")
MAX_RATE = 20000.0
Protocol = Literal["tcp", "udp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")
MAX_REPEATS = 100


def _usable_rate(rate: float) -> float:
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate {rate} is not a usable scan rate (0 < rate ≤ {MAX_RATE:g} per second)")
    return rate


# a sweep's rates and repeats, checked alike in a file and on the command line (--rates, --repeat)
Rate = Annotated[float, AfterValidator(_usable_rate)]
Rates = Annotated[list[Rate], Field(min_length=1, description="scan rates, attempts per second")]
Repeats = Annotated[int, Field(ge=1, le=MAX_REPEATS, description="trials per protocol and rate")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WormSpec(Strict):
    profile: Literal["nimda-like", "codered2-like", "blaster-like", "slammer-like"] | None = Field(
        None, description="a historical worm's scanning behaviour (sets strategy, port, protocol)")
    strategy: Literal["sequential", "random", "local-preference", "hit-list"] = Field(
        "sequential", description="target strategy (ignored with a profile, which chooses its own)")
    port: int = Field(8080, ge=1, le=65535, description="the port scanned (where the test-worm server listens)")
    protocols: list[Protocol] = Field(default_factory=lambda: list(PROTOCOLS), min_length=1)
    scan: Cidr = Field(description="the range the worm scans (CIDR, inside the lab's experimental subnets)")
    max_attempts: int = Field(5000, ge=1, le=1_000_000)
    lifetime_s: float = Field(120.0, gt=0, le=3600)
    connect_timeout_s: float = Field(3.0, gt=0, le=60)


class ThrottleSpec(Strict):
    placement: Literal["host", "gateway", "wire"] = Field(
        "host", description="in the infected host; on the gateway; or on the wire outside the host (the switch "
                            "side of a namespace host's veth, the hypervisor side of a VM's tap)")
    working_set_size: int = Field(5, ge=1, le=10_000)
    delay_queue_limit: int = Field(100, ge=0, le=1_000_000)
    release_period_s: float = Field(1.0, gt=0, le=3600)
    policy: Literal["packets", "connections"] = "packets"
    fail_open: bool = Field(
        False, description="false (the default): the throttle runs fail-closed — if its daemon dies, its rules "
                           "stay and drop the host's new connections, so a dead mechanism stops the worm too; true: "
                           "fail-open (NFQUEUE --queue-bypass) — new connections go out unthrottled. Either way a "
                           "trial whose throttle died is an error, never a result")


class ExperimentFile(Strict):
    """A worm-testbed experiment: which lab, which worm, which rates, against which throttle."""

    experiment: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$", description="experiment name")
    description: str | None = None
    kind: Literal["stopping-speed", "baseline", "benign", "spread"] = Field(
        "stopping-speed", description="stopping-speed (the paper's §4.2.1), baseline (no throttle), benign "
                                      "(only the benign workload: what containment costs it; docs/benign.md) or "
                                      "spread (many vulnerable hosts: docs/spread.md)")
    lab: str = Field(description="the lab file, relative to this file")
    worm: WormSpec = Field(None, description="required by every kind but benign (which runs none; checked "  # type: ignore[assignment]
                                            "with the lab): None only in a benign experiment")
    benign: BenignSpec | None = Field(None, description="the benign workload beside the mechanism (docs/benign.md)")
    rates: Rates
    repeats: Repeats = 1
    timeout_s: float = Field(60.0, gt=0, le=3600, description="per trial")
    quiet_s: float = Field(5.0, gt=0, le=600, description="a worm whose attempts leave the wire silent this long "
                                                         "to the end of the trial is contained; a trial of a "
                                                         "mechanism without a block event ends on it")
    throttle: ThrottleSpec | Literal["none"] = Field(default_factory=ThrottleSpec)
    mechanisms: list[MechanismSpec] | None = Field(
        None, min_length=1, description="the mechanisms swept over every rate, protocol and repeat (`testbed "
                                        "mechanisms` lists the built-ins); replaces throttle: and kind:")
    sweep: dict[str, Annotated[list[int | float | str | bool], Field(min_length=1, max_length=64)]] | None = Field(
        None, description="kind: benign or stopping-speed: a mechanism parameter's values, each a setting run over "
                          "every rate (several keys: every combination); docs/benign.md")
    state: Literal["full", "fresh"] = Field(
        "full", description="full: the host's normal traffic fills its working set before the worm starts "
                            "(as on the paper's hosts); fresh: an empty working set")
    infected: str | None = Field(None, description="the host the injector infects (default: the first blade)")
    gateway_empty: Literal["reset", "blackhole"] = "reset"
    vulnerable: str | list[str] | None = Field(None, description="spread: a role or a list of hosts, each running "
                                                                 "a test-worm server (default: the blades)")
    initial: str | None = Field(None, description="spread: the host the injector infects (default: the first "
                                                  "vulnerable host)")
    deploy: list[float | str] | None = Field(None, min_length=1, description="spread: fractions of the vulnerable "
                                             "hosts carrying the mechanism, or `gateway` (default: 0, 0.5, 1)")
    seed: int = Field(1, ge=0)

    @property
    def protocols(self) -> list[Protocol]:
        """Each protocol a trial runs: the worm's, or a benign experiment's workload's."""
        return list(self.benign.protocols) if self.kind == "benign" and self.benign else self.worm.protocols


@dataclass(frozen=True)
class Experiment:
    spec: ExperimentFile
    lab: Lab
    source: str
    spec_hash: str
    mechanisms: tuple[MechanismRun, ...] = ()

    @property
    def throttled(self) -> bool:
        """Does any trial run the reference throttle (williamson)?"""
        return any(m.name == "williamson" for m in self.mechanisms)

    @property
    def legacy(self) -> bool:
        """Named its mechanism with `throttle:` or `kind: baseline` (trial ids without the mechanism)."""
        return self.spec.mechanisms is None


LAB_NOT_EXPERIMENT = ("this is a lab file (it has 'hosts:' and no 'experiment:'): build it with `testbed up "
                      "FILE`, or name it in an experiment file's 'lab:' and run that")

def load_experiment(path: str | Path, *, machine_routes=None) -> Experiment:
    path = Path(path)
    source = str(path)
    data, lines, problems = read_spec_file(path)
    if not isinstance(data, dict) or "experiment" not in data:
        problems.add((), LAB_NOT_EXPERIMENT if isinstance(data, dict) and "hosts" in data
                     else "an experiment file is a mapping that starts with 'experiment: NAME'")
        problems.raise_if_any()
    spec, cuts = validate_partly(ExperimentFile, data, problems)
    mechs = (resolve_mechanisms(spec, path.parent, problems)
             if isinstance(spec, ExperimentFile) and not any(c[0] == "mechanisms" for c in cuts) else [])
    if isinstance(spec, ExperimentFile) and not any(c[0] in ("sweep", "kind") for c in cuts):
        mechs = sweepspec.expand(mechs, spec.sweep, spec.kind, problems)
    lab_ref = spec.lab if isinstance(spec, ExperimentFile) else data.get("lab")
    lab, lab_error = None, None
    if isinstance(lab_ref, str):
        lab_path = Path(lab_ref) if Path(lab_ref).is_absolute() else path.parent / lab_ref
        if not lab_path.is_file():
            problems.add(("lab",), f"lab file {lab_path} does not exist")
        else:
            try:
                lab = load_lab(lab_path, machine_routes=machine_routes)
            except SpecError as exc:       # its own SpecError names the lab file: reported beside this one's
                lab_error = exc
    if isinstance(spec, ExperimentFile):
        benignspec.check(spec, lab, path.parent, problems, kind_refused=any(c[0] == "kind" for c in cuts))
        if not any(c[0] in ("kind", "benign") for c in cuts):
            wormbenignspec.check(spec, problems)
    if isinstance(spec, ExperimentFile) and lab is not None and not any(c[0] in ("kind", "throttle") for c in cuts) \
            and spec.worm is not None:
        # on what parsed (a refused kind or throttle would be judged by its default instead: not at all)
        _check_against_lab(spec, lab, mechs, _AfterCuts(problems, cuts) if cuts else problems)
    errors = [SpecError(source, problems.items)] if problems.items else []
    if lab_error is not None:
        errors.append(lab_error)
    if errors:
        raise spec_errors(errors)
    assert isinstance(spec, ExperimentFile) and lab is not None
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return Experiment(spec, lab, source, digest, tuple(mechs))


def _check_against_lab(spec: ExperimentFile, lab: Lab, mechs: list[MechanismRun], problems: Problems) -> None:
    try:
        scan: ipaddress.IPv4Network | None = ipaddress.IPv4Network(spec.worm.scan, strict=True)
    except ValueError as exc:
        problems.add(("worm", "scan"), f"'{spec.worm.scan}' is not a valid CIDR ({exc})")
        scan = None
    if scan is not None and (why := cidr_notation_problem(spec.worm.scan)):
        problems.add(("worm", "scan"), f"'{spec.worm.scan}' is not a valid CIDR: {why}")
        scan = None
    if scan is not None:
        exp = [ipaddress.IPv4Network(s.subnet) for s in lab.experimental_segments()]
        if not any(scan.subnet_of(n) for n in ipaddress.collapse_addresses(exp)):   # inside their union
            problems.add(("worm", "scan"), f"{scan} is not inside the lab's experimental subnets "
                         f"({', '.join(map(str, exp))}); the worm scans nothing else")
    infected = spec.infected or (lab.by_role("blade")[0].name if lab.by_role("blade") else None)
    if infected is None:
        problems.add(("infected",), f"lab {lab.name} has no blade for the worm to infect")
    else:
        try:
            if lab.host(infected).role != "blade":
                problems.add(("infected",), f"{infected} is a {lab.host(infected).role}, not a blade")
        except KeyError:
            problems.add(("infected",), f"lab {lab.name} has no host '{infected}'")
    if not lab.by_role("injector"):
        problems.add(("lab",), f"lab {lab.name} has no injector to start the worm")
    if not lab.by_role("sniffer"):
        problems.add(("lab",), f"lab {lab.name} has no sniffer to capture the wire")
    if spec.kind == "spread":
        check_spread(spec, lab, problems)
    thr = spec.throttle
    if spec.mechanisms is None and spec.kind == "stopping-speed" and thr == "none":
        problems.add(("throttle",), "a stopping-speed experiment needs a throttle; use kind: baseline for none")
    if spec.mechanisms is None and thr != "none" and thr.placement == "gateway" and not lab.by_role("gateway"):
        problems.add(("throttle", "placement"), f"lab {lab.name} has no gateway to place the throttle on")
    for i, m in enumerate(mechs if spec.mechanisms is not None else []):
        if m.placement == "gateway" and not lab.by_role("gateway"):
            problems.add(("mechanisms", i, "placement"), f"lab {lab.name} has no gateway to place {m.name} on")


class SweepOverrides(Strict):
    rates: Rates | None = None
    repeats: Repeats | None = None


def check_overrides(rates: list[float] | None, repeats: int | None) -> None:
    """`--rates` and `--repeat` on the command line: SpecError (exit 2) for what the same values in a file
    would be refused for."""
    try:
        SweepOverrides(rates=rates, repeats=repeats)
    except ValidationError as exc:
        flags = {"rates": "--rates", "repeats": "--repeat"}
        raise SpecError("command line", [(flags[str(e["loc"][0])], e["msg"].removeprefix("Value error, "))
                                         for e in exc.errors()]) from None


def experiment_schema() -> dict:
    return schema_document(ExperimentFile, "worm-testbed experiment file")
