"""Nightly gates: compare two runs for regressions, and write a run as JUnit test cases (pure over run dirs).

A regression, per protocol and rate present in both runs: the stopping time grew beyond the tolerance (or the
worm is no longer stopped), more attempts got out before the block, the model no longer agrees, or worm
attempts reached the wire after the block.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.experiment.rundir import RunDir, summarise

STOP_SLACK_S = 0.020     # stopping times this close are the same, whatever the relative tolerance


@dataclass
class Comparison:
    protocol: str
    rate: float
    verdict: str               # ok | regression | improved | missing
    reasons: list[str]
    base: dict
    new: dict

    def to_dict(self) -> dict:
        return asdict(self)


def compare(base: RunDir, new: RunDir, *, tolerance: float = 0.10, out_tolerance: int = 1) -> list[Comparison]:
    b = {(r["protocol"], float(r["rate"])): r for r in summarise(base.trials())}
    n = {(r["protocol"], float(r["rate"])): r for r in summarise(new.trials())}
    out = []
    for key in sorted(set(b) | set(n)):
        br, nr = b.get(key), n.get(key)
        if br is None or nr is None:
            out.append(Comparison(key[0], key[1], "missing",
                                  [f"only in the {'new' if br is None else 'base'} run"], br or {}, nr or {}))
            continue
        worse, better = [], []
        bs, ns = br["stop_s"], nr["stop_s"]
        if bs is not None and ns is None:
            worse.append(f"no longer stopped (was {bs:.3f} s)")
        elif bs is not None and ns is not None:
            if ns > bs * (1 + tolerance) + STOP_SLACK_S:
                worse.append(f"stopping time {bs:.3f} s → {ns:.3f} s")
            elif ns < bs * (1 - tolerance) - STOP_SLACK_S:
                better.append(f"stopping time {bs:.3f} s → {ns:.3f} s")
        elif bs is None and ns is not None:
            better.append(f"now stopped in {ns:.3f} s")
        bo, no = br["out_before_block"], nr["out_before_block"]
        if bo is not None and no is not None and no > bo + max(out_tolerance, tolerance * bo):
            worse.append(f"attempts out before the block {bo:g} → {no:g}")
        if br["agree"] and not nr["agree"]:
            worse.append("the measurement no longer agrees with the model")
        if (nr["out_after_block"] or 0) > 0:
            worse.append(f"{nr['out_after_block']:g} worm attempt(s) on the wire after the block")
        if nr["ok"] < nr["repeats"] and br["ok"] == br["repeats"]:
            worse.append(f"only {nr['ok']} of {nr['repeats']} trials completed")
        verdict = "regression" if worse else ("improved" if better else "ok")
        out.append(Comparison(key[0], key[1], verdict, worse or better, br, nr))
    return out


# ---------------------------------------------------------------- JUnit

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")   # not a character XML 1.0 allows


def _xml_text(s: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(s))


def _seconds(x: Any) -> str:
    return "none" if x is None else f"{x:.3f} s"


def _tolerance(ag: dict[str, Any]) -> str:
    """The tolerance a trial was judged with, as its agreement record states it."""
    tol = ag.get("tolerance") or {}
    parts = []
    if ag.get("stop_tolerance_s") is not None:
        parts.append(f"stopping time ±{ag['stop_tolerance_s']:.3f} s")
    elif tol.get("stop_abs_s") is not None:
        parts.append(f"stopping time ±max({tol['stop_abs_s'] * 1000:g} ms, {tol.get('stop_rel', 0) * 100:g} %)")
    if tol.get("out") is not None:
        parts.append(f"attempts out ±{tol['out']:g}")
    return f" (tolerance: {', '.join(parts)})" if parts else ""


def _disagreement(t: dict[str, Any]) -> str:
    """What disagreed in a trial that measured something: the agreement's reasons (measured vs model), and the
    tolerance; a trial without an agreement record says so, with its figures."""
    ag = t.get("agreement") or {}
    m, mo = t.get("measured") or {}, t.get("model") or {}
    reasons = ag.get("reasons") or []
    if not ag:
        what = (f"no agreement recorded (measured stop {_seconds(m.get('stop_s'))}, model "
                f"{_seconds(mo.get('stop_s'))})")
    else:
        what = "; ".join(reasons) or "the measurement does not agree with the model"
    return f"{t['trial']}: {what}{_tolerance(ag)}"


def _row_detail(r: dict[str, Any]) -> str:
    stop = "not blocked" if r["stop_s"] is None else f"stop {r['stop_s']:.3f} s"
    model = "no block" if r["stop_s_model"] is None else f"{r['stop_s_model']:.3f} s"
    out = "none measured" if r["out_before_block"] is None else f"{r['out_before_block']:g}"
    out_model = "none" if r["out_before_block_model"] is None else f"{r['out_before_block_model']:g}"
    rate = "none measured" if r["achieved_rate"] is None else f"{r['achieved_rate']:.4g} /s"
    return (f"{r['protocol']} rate {r['rate']:g}/s: measured {stop} (model {model}); attempts out before the block "
            f"{out} (model {out_model}); after the block {r['out_after_block'] or 0:g}; achieved rate {rate}; "
            f"{r['ok']}/{r['repeats']} trials ok, {r['errors']} errors")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, list):
        out[prefix] = ",".join(str(v) for v in value)
    else:
        out[prefix] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def run_properties(man: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, str]:
    """The run's settings as JUnit <properties>: the experiment file as run, the plan, the lab, the code, the
    machine and tools, and the agreement's tolerance."""
    lab = man.get("lab") or {}
    tolerance = next(((t.get("agreement") or {}).get("tolerance") for t in trials
                      if (t.get("agreement") or {}).get("tolerance")), None)
    settings = {"run_id": man.get("run_id"), "status": man.get("status"), "seed": man.get("seed"),
                "spec_hash": man.get("spec_hash"), "experiment": man.get("experiment"), "plan": man.get("plan"),
                "lab": {k: lab.get(k) for k in ("name", "provider", "spec_hash") if k in lab},
                "git": man.get("git"), "versions": man.get("versions"), "machine": man.get("machine"),
                "agreement": {"tolerance": tolerance} if tolerance else None}
    out: dict[str, str] = {}
    for key, value in settings.items():
        if value is not None:
            _flatten(key, value, out)
    return out


def _verdict(ts: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """One test case's verdict over its trials: `failure` when a trial that measured something disagrees with
    the model (an answer: no); else `error` when a trial measured nothing (no answer); else None (passed)."""
    errors = [f"{t['trial']}: {t.get('status')}: {t.get('reason') or 'no reason recorded'}"
              for t in ts if t.get("status") not in ("ok", "timeout")]
    failures = [_disagreement(t) for t in ts if t.get("status") in ("ok", "timeout")
                and not (t.get("agreement") or {}).get("ok", False)]
    if failures:
        return "failure", failures + errors
    return ("error", errors) if errors else (None, [])


def junit_xml(run: RunDir) -> str:
    """The run as one JUnit testsuite, one test case per protocol and rate, in the Ant format (the strictest
    importers take: properties and the suite's system-out are there, per-case output goes into the suite's)."""
    man = run.manifest()
    name = man["experiment"]["experiment"]
    trials = run.trials()
    started = man.get("started")
    took = (man["finished"] - started if man.get("finished") and started
            else sum(t.get("duration_s") or 0 for t in trials))
    suite = ET.Element("testsuite", {
        "name": name, "tests": "0", "failures": "0", "errors": "0", "skipped": "0", "time": f"{max(took, 0):.3f}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started or 0)),     # UTC; Ant takes no zone
        "hostname": (man.get("machine") or {}).get("hostname") or (man.get("runner") or {}).get("host")
                    or "localhost"})
    props = ET.SubElement(suite, "properties")
    for k, v in run_properties(man, trials).items():
        ET.SubElement(props, "property", {"name": k, "value": _xml_text(v)})
    counts = {"tests": 0, "failure": 0, "error": 0}
    details = []
    for r in summarise(trials):
        ts = [t for t in trials if t["protocol"] == r["protocol"] and float(t["rate"]) == r["rate"]]
        case = ET.SubElement(suite, "testcase", {"classname": f"{name}.{r['protocol']}", "name": f"rate {r['rate']:g}/s",
                                                 "time": f"{sum(t.get('duration_s') or 0 for t in ts):.3f}"})
        counts["tests"] += 1
        kind, problems = _verdict(ts)
        if kind is not None:
            counts[kind] += 1
            el = ET.SubElement(case, kind, {"type": "disagreement" if kind == "failure" else "error",
                                            "message": _xml_text(problems[0][:300])})
            el.text = _xml_text("\n".join(problems))
        details.append(_row_detail(r))
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failure"]))
    suite.set("errors", str(counts["error"]))
    ET.SubElement(suite, "system-out").text = _xml_text("\n".join(details) + "\n")
    ET.SubElement(suite, "system-err").text = ""
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
