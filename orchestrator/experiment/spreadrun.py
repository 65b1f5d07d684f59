"""A spread run's plan and what its trials share: every mechanism over every deploy condition, rate and repeat
(deploy 0 once, as `none`: nothing is deployed), the vulnerable hosts and their captures, the carriers of each
trial, and the model's prediction per condition (computed once, written beside the run)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.experiment.mechspec import MechanismRun
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.setup import Setup, lab_ip
from orchestrator.experiment.spec import Experiment
from orchestrator.experiment.spread import (
    GATEWAY,
    carriers,
    deploy_label,
    deployments,
    generation_bound,
    initial_host,
    vulnerable_hosts,
)
from orchestrator.experiment.spreadmodel import SpreadParams, SpreadPrediction, predict_spread, share_outside
from orchestrator.labfile.topology import Lab

MODEL_REPLICATES = 200
START_DELAY_S = 0.15      # trigger accepted → the new scanner's first attempt (measured: docs/spread.md)


def plan_spread(exp: Experiment, rates: list[float] | None = None, repeats: int | None = None) -> list[TrialSpec]:
    """Deploy conditions outermost (each a lab state), then mechanisms, rates, repeats; deploy 0 runs once."""
    s = exp.spec
    mechs = [m for m in exp.mechanisms if not m.is_none]
    out: list[TrialSpec] = []
    for d in deployments(s):
        names = ["none"] if d == 0 or not mechs else [m.name for m in mechs]
        for name in names:
            for rate in s.rates if rates is None else rates:
                for rep in range(1, (s.repeats if repeats is None else repeats) + 1):
                    out.append(TrialSpec(len(out), "tcp", float(rate), rep, name, deploy_label(d)))
    return out


def estimate_spread_s(exp: Experiment, t: TrialSpec) -> float:
    """A spread trial's planning figure: the worm's scan of its range, bounded by the timeout."""
    import ipaddress

    w = exp.spec.worm
    scan_s = min(ipaddress.ip_network(w.scan).num_addresses, w.max_attempts) / t.rate
    return min(exp.spec.timeout_s, w.lifetime_s, scan_s + exp.spec.quiet_s) + 8.0


@dataclass
class SpreadSetup:
    """What every spread trial shares: the run's Setup (injector, sniffer, gateway, clock), the vulnerable hosts,
    one capture per experimental segment they stand on (segment → canary), the generation bound."""

    base: Setup
    vulnerable: list[str]
    initial: str
    segments: dict[str, tuple[str, str]]       # segment → (canary from, canary to)
    bound: int
    models: dict[str, SpreadPrediction] = field(default_factory=dict)

    @property
    def exp(self) -> Experiment:
        return self.base.exp

    def mechanism(self, t: TrialSpec) -> MechanismRun | None:
        return None if t.mechanism == "none" else next(m for m in self.exp.mechanisms if m.name == t.mechanism)

    def carriers(self, t: TrialSpec) -> list[str]:
        if t.deploy in (None, GATEWAY) or t.mechanism == "none":
            return []
        return carriers(self.vulnerable, float(t.deploy), self.exp.spec.seed, t.repeat)

    def addresses(self) -> dict[str, str]:
        return {h: lab_ip(self.base.lab, h, "experimental") for h in self.vulnerable}

    def segment_of(self, host: str) -> str:
        return next(i.segment for i in self.base.lab.host(host).interfaces if i.segment.startswith("experimental"))

    @classmethod
    def resolve(cls, base: Setup) -> SpreadSetup:
        exp, lab = base.exp, base.lab
        vul = vulnerable_hosts(exp.spec, lab)
        initial = initial_host(exp.spec, lab)
        assert initial is not None
        segs = list(dict.fromkeys(
            next(i.segment for i in lab.host(h).interfaces if i.segment.startswith("experimental")) for h in vul))
        base = dataclasses.replace(base, infected=initial, servers=vul, normal=[],
                                   segment=segs[0] if base.segment not in segs else base.segment)
        return cls(base, vul, initial, {s: canary_on(lab, s, vul, base.injector) for s in segs},
                   generation_bound(len(vul)))


def canary_on(lab: Lab, segment: str, vulnerable: list[str], injector: str) -> tuple[str, str]:
    """A canary across `segment` between two hosts that are not the worm: the injector to the gateway where it
    stands there, else the gateway to a vulnerable host of the segment."""
    gw = lab.by_role("gateway")[0] if lab.by_role("gateway") else None
    gw_ip = gw.ip(segment) if gw else None
    if lab.host(injector).ip(segment) and gw_ip:
        return injector, gw_ip
    target = next(h for h in vulnerable if lab.host(h).ip(segment))
    ip = lab.host(target).ip(segment)
    assert ip is not None
    return (gw.name if gw is not None and gw_ip else injector), ip


def model_params(ss: SpreadSetup, t: TrialSpec) -> SpreadParams:
    """The model's parameters for a trial's condition, from the same experiment and lab."""
    import ipaddress

    exp, lab = ss.exp, ss.base.lab
    w = exp.spec.worm
    m = ss.mechanism(t)
    throttled = m is not None and m.name == "williamson"
    thr = tuple(sorted(m.params.items())) if throttled and m is not None else ()
    n = len(ss.vulnerable)
    gateway = throttled and t.deploy == GATEWAY
    subnet_of = {s.key: i for i, s in enumerate(lab.segments)}
    subnets = tuple(subnet_of[ss.segment_of(h)] for h in ss.vulnerable)
    shares = tuple(share_outside(lab.segment(ss.segment_of(h)).subnet, w.scan) for h in ss.vulnerable)
    k = 0 if not throttled or t.deploy in (None, GATEWAY) else round(float(t.deploy or 0) * n)
    return SpreadParams(hosts=n, range_size=ipaddress.ip_network(w.scan).num_addresses, rate=t.rate, carriers=k,
                        gateway=gateway, subnets=subnets, cross_share=shares, throttle=thr,
                        initial=ss.vulnerable.index(ss.initial), max_attempts=w.max_attempts,
                        lifetime_s=w.lifetime_s, connect_timeout_s=w.connect_timeout_s, max_generations=ss.bound,
                        start_delay_s=START_DELAY_S, horizon_s=exp.spec.timeout_s)


def condition(t: TrialSpec) -> str:
    return f"{t.mechanism}-d{t.deploy}-r{t.rate:g}".replace(".", "_")


def prediction(ss: SpreadSetup, t: TrialSpec) -> SpreadPrediction | None:
    """The model's prediction for the trial's condition (once per condition; None: the strategy is not
    modelled, or a mechanism without a spread model)."""
    m = ss.mechanism(t)
    if ss.exp.spec.worm.strategy != "random" or (m is not None and m.name != "williamson"):
        return None
    key = condition(t)
    if key not in ss.models:
        pred = predict_spread(model_params(ss, t), replicates=MODEL_REPLICATES, seed=ss.exp.spec.seed)
        ss.models[key] = pred
        path = ss.base.run.path / "model" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pred.to_dict() | {"condition": key, "mechanism": t.mechanism,
                                                     "deploy": t.deploy, "rate": t.rate}, default=_json))
    return ss.models[key]


def agreement(pred: SpreadPrediction | None, measured: dict[str, Any]) -> dict[str, Any]:
    """t_50_s inside the model's 5–95 % band, and t_all_s too where all fell."""
    if pred is None:
        return {"ok": None, "why": "no spread model for this strategy or mechanism"}
    checks = {"t_50_s": pred.inside("t_50_s", measured.get("t_50_s"))}
    if measured.get("t_all_s") is not None:
        checks["t_all_s"] = pred.inside("t_all_s", measured["t_all_s"])
    band = {k: [pred.figures[k]["p5"], pred.figures[k]["p95"]] for k in checks}
    return {"ok": all(checks.values()), "checks": checks, "band": band}


def _json(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
