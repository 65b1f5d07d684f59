"""The models of the mechanisms other than the reference throttle, beside their wire figures (pure: no I/O).

williamson keeps its own model and agreement (orchestrator.experiment.agreement, unchanged). For the others:
- trw: its model replays the worm's own attempt log (outcome and time of each attempt) through the same test,
  with every answer when the worm logged it and with every answer at its own SYN (the daemon sees an answer
  somewhere in between); agreement: contained (or not) as one of those outcomes says, the attempts out before
  the block one of the counts [out_lo, out_hi] they allow, and contained_s within the stop tolerance of the
  time of that count's last SYN;
- rate-limit: the token-bucket model's wire_rate; agreement: the measured wire_rate within 10 %;
- none: no model; the wire must carry every attempt the worm logged, and the worm is not contained;
- a user's mechanism: no model (its wire figures stand alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.experiment.mechspec import MechanismRun

RATE_TOL = 0.10      # rate-limit: the wire's rate against the model's


def model(m: MechanismRun, worm_lines: Sequence[str], src: str) -> dict[str, Any] | None:
    """The mechanism's prediction for the worm's own logged attempts from `src` (None without a model)."""
    predict = m.descriptor.load_model() if m.descriptor is not None and m.name != "williamson" else None
    if predict is None:
        return None
    got = predict(worm_lines, m.params, placement=m.placement)
    p = got.get(src)
    if p is None:
        return {"blocked": False, "stop_s": None, "out_before_block": 0, "wire_rate": None}
    return {k: p.get(k) for k in ("blocked", "stop_s", "last_out_s", "out_before_block", "wire_rate",
                                   "block_attempt", "ties") if k in p}


def judge(m: MechanismRun, measured: Mapping[str, Any], predicted: Mapping[str, Any] | None, *,
          stop_abs_s: float, stop_rel: float) -> dict[str, Any]:
    """Do the wire figures agree with the model (or, for none, with the worm's own log)?"""
    contained, cs, out = measured.get("contained"), measured.get("contained_s"), measured.get("out_before_contained")
    if m.is_none:
        logged, wire = measured.get("attempts"), measured.get("wire_attempts")
        every = logged is not None and wire == logged
        return {"ok": bool(every and not contained), "every_attempt_on_wire": every, "contained": contained,
                "worm_attempts": logged, "wire_attempts": wire}
    if predicted is None:
        return {"ok": None}
    if m.name == "rate-limit":
        want, got = predicted.get("wire_rate"), measured.get("wire_rate")
        err = None if want in (None, 0) or got is None else (got - want) / want
        return {"ok": err is not None and abs(err) <= RATE_TOL, "model_wire_rate": want, "wire_rate": got,
                "rate_error": err, "tolerance": {"rate_rel": RATE_TOL},
                "new_per_s": m.params.get("new_per_s")}
    if predicted.get("ties"):
        return _judge_ties(measured, predicted, stop_abs_s=stop_abs_s, stop_rel=stop_rel)
    ps, po, blocked = predicted.get("stop_s"), predicted.get("out_before_block"), bool(predicted.get("blocked"))
    res: dict[str, Any] = {"tolerance": {"stop_abs_s": stop_abs_s, "stop_rel": stop_rel, "out": 0},
                           "model_stop_s": ps, "model_out": po, "model_blocked": blocked}
    if not blocked:
        res["stop_ok"] = not contained
        res["out_ok"] = True
    else:
        res["stop_error_s"] = None if cs is None or ps is None else cs - ps
        res["stop_ok"] = (bool(contained) and cs is not None and ps is not None
                          and abs(cs - ps) <= max(stop_abs_s, stop_rel * ps))
        res["out_ok"] = out == po
    res["ok"] = res["stop_ok"] and res["out_ok"]
    return res


def _judge_ties(measured: Mapping[str, Any], predicted: Mapping[str, Any], *, stop_abs_s: float,
                stop_rel: float) -> dict[str, Any]:
    """A model with tie outcomes (trw): the measurement agrees when it matches one of them — contained as it
    says, exactly its count out, contained_s within max(stop_abs_s, stop_rel · t) of its last SYN's time t."""
    contained, cs, out = measured.get("contained"), measured.get("contained_s"), measured.get("out_before_contained")
    ties = predicted["ties"]
    res: dict[str, Any] = {"tolerance": {"stop_abs_s": stop_abs_s, "stop_rel": stop_rel, "out": 0},
                           "model_stop_s": predicted.get("last_out_s"), "model_out": predicted.get("out_before_block"),
                           "model_blocked": bool(predicted.get("blocked")),
                           "model_out_range": [ties["out_lo"], ties["out_hi"]], "matched": None}
    for c in ties["outcomes"]:
        if not c["blocked"]:
            ok_stop, ok_out = not contained, True
        else:
            t = c["last_out_s"]
            ok_stop = bool(contained) and cs is not None and t is not None and abs(cs - t) <= max(stop_abs_s,
                                                                                                   stop_rel * t)
            ok_out = out == c["out_before_block"]
        if ok_stop and ok_out:
            res.update(matched=dict(c), stop_ok=True, out_ok=True, ok=True)
            if c["blocked"]:
                res["stop_error_s"] = cs - c["last_out_s"]
            return res
    res["stop_ok"] = any((not c["blocked"] and not contained) or (c["blocked"] and bool(contained))
                         for c in ties["outcomes"])
    res["out_ok"] = out is not None and ties["out_lo"] <= out <= ties["out_hi"]
    t = predicted.get("last_out_s")
    res["stop_error_s"] = None if cs is None or t is None else cs - t
    res["ok"] = False
    return res
