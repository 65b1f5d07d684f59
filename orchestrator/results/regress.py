"""Nightly gates: compare two runs for regressions, and write a run as JUnit test cases (pure over run dirs).

A regression, per protocol and rate present in both runs: the stopping time grew beyond the tolerance (or the
worm is no longer stopped), more attempts got out before the block, the model no longer agrees, or worm
attempts reached the wire after the block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from xml.sax.saxutils import escape, quoteattr

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


def junit_xml(run: RunDir) -> str:
    man = run.manifest()
    name = man["experiment"]["experiment"]
    trials = run.trials()
    rows = summarise(trials)
    cases, failures = [], 0
    for r in rows:
        ts = [t for t in trials if t["protocol"] == r["protocol"] and float(t["rate"]) == r["rate"]]
        problems = []
        for t in ts:
            if t.get("status") == "error":
                problems.append(f"{t['trial']}: error: {t.get('reason')}")
            elif not (t.get("agreement") or {}).get("ok", False):
                problems.append(f"{t['trial']}: " + ("; ".join((t.get("agreement") or {}).get("reasons", []))
                                                    or "no agreement recorded"))
        duration = sum(t.get("duration_s") or 0 for t in ts)
        detail = (f"measured stop {r['stop_s']} s (model {r['stop_s_model']} s); attempts out {r['out_before_block']} "
                  f"(model {r['out_before_block_model']}); after block {r['out_after_block']}; achieved rate "
                  f"{r['achieved_rate']} /s; {r['ok']}/{r['repeats']} trials")
        cls, label = quoteattr(f"{name}.{r['protocol']}"), quoteattr(f"rate {r['rate']:g}/s")
        case = f'<testcase classname={cls} name={label} time="{duration:.3f}">'
        if problems:
            failures += 1
            case += f'<failure message={quoteattr(problems[0][:200])}>{escape(chr(10).join(problems))}</failure>'
        case += f"<system-out>{escape(detail)}</system-out></testcase>"
        cases.append(case)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuite name={quoteattr(name)} tests="{len(cases)}" failures="{failures}" errors="0">\n'
            + "\n".join(cases) + "\n</testsuite>\n")
