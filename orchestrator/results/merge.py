"""`testbed results merge`: shard run directories (`testbed run … --shard I/N` on several machines) joined into
one run directory whose trials.jsonl, summary.csv and report are those of the unsharded run.

Shards are refused unless they are shards of one sweep: the same experiment file (spec hash), lab file (lab
spec hash), code (git commit, and not dirty differently), plan (rates, repeats) and shard count. Every trial of
the plan must be in exactly one shard: the refusal names the trials missing (and the shards they belong to)
and the trials doubled (and the directories that hold them). The check is pure (`check`); `merge` writes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.experiment.rundir import ResultsError, RunDir, run_status, summarise

DONE = ("ok", "timeout", "error")       # what a run counts as done (resume does not redo these)
SAME = (("spec_hash", "experiment file"), ("lab.spec_hash", "lab file"), ("git.commit", "code version (git commit)"),
        ("git.dirty", "code version (uncommitted changes)"), ("plan", "plan (rates, repeats)"),
        ("shard.count", "shard count"), ("shard.all", "plan (trials)"))


def _get(man: dict[str, Any], key: str) -> Any:
    v: Any = man
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v


def _show(v: Any) -> str:
    return str(v)[:12] if isinstance(v, str) else repr(v)


def check(shards: list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """(path, manifest, trials) per shard → the merged trials in plan order; ResultsError saying every reason
    they cannot be merged otherwise."""
    if not shards:
        raise ResultsError("results merge needs at least one shard run directory")
    problems = []
    for path, man, _ in shards:
        if not isinstance(man.get("shard"), dict):
            problems.append(f"{path} is not a shard (it was not run with --shard I/N)")
        elif run_status(man) == "running":
            problems.append(f"{path} is still running")
    if problems:
        raise ResultsError("cannot merge: " + "; ".join(problems))
    first_path, first, _ = shards[0]
    for key, what in SAME:
        for path, man, _ in shards[1:]:
            if _get(man, key) != _get(first, key):
                problems.append(f"{path} is of another {what} than {first_path} "
                                f"({_show(_get(man, key))} ≠ {_show(_get(first, key))})")
    if problems:
        raise ResultsError("cannot merge shards of different sweeps: " + "; ".join(problems))
    return _join(shards, first["shard"])


def _join(shards, info: dict[str, Any]) -> list[dict[str, Any]]:
    plan = list(info["all"])
    owner: dict[str, list[Path]] = {}
    records: dict[str, dict[str, Any]] = {}
    for path, _, trials in shards:
        for t in trials:
            if t.get("status") in DONE:
                owner.setdefault(t["trial"], []).append(path)
                records[t["trial"]] = t
    problems = []
    doubled = {tid: ps for tid, ps in owner.items() if len(ps) > 1}
    if doubled:
        problems.append(f"{len(doubled)} trial(s) doubled: " + ", ".join(
            f"{tid} (in {', '.join(map(str, ps))})" for tid, ps in sorted(doubled.items(), key=lambda kv: plan.index(kv[0])
                                                                           if kv[0] in plan else -1)))
    stray = sorted(set(owner) - set(plan))
    if stray:
        problems.append(f"{len(stray)} trial(s) not in the plan: {', '.join(stray)}")
    missing = [tid for tid in plan if tid not in owner]
    if missing:
        have = {man["shard"]["index"] for _, man, _ in shards}
        absent = sorted(set(range(1, info["count"] + 1)) - have)
        n = info["count"]
        where = f" (shard {', '.join(f'{i}/{n}' for i in absent)} not given)" if absent else ""
        problems.append(f"{len(missing)} of {len(plan)} trial(s) missing{where}: {', '.join(missing)}")
    if problems:
        raise ResultsError("cannot merge: " + "; ".join(problems))
    return sorted(records.values(), key=lambda t: plan.index(t["trial"]))


def merge(dirs: Sequence[str | Path], out: str | Path) -> RunDir:
    """Join the shard run directories `dirs` into a new run directory `out` (refused if it holds a run)."""
    runs = [RunDir(d) for d in dirs]
    shards = [(r.path, r.manifest(), r.trials()) for r in runs]
    trials = check(shards)
    dest = RunDir(out)
    if dest.exists():
        raise ResultsError(f"{dest.path} already holds a run; merge into a new directory")
    dest.path.mkdir(parents=True, exist_ok=True)
    for r, (_, _, ts) in zip(runs, shards, strict=True):
        for t in ts:
            src = r.path / "trials" / t["trial"]
            if t.get("status") in DONE and src.is_dir():
                shutil.copytree(src, dest.path / "trials" / t["trial"], dirs_exist_ok=True)
    dest.write_manifest(merged_manifest([m for _, m, _ in shards], len(trials)))
    dest.write_trials(trials)
    dest.write_summary(summarise(trials))
    return dest


def merged_manifest(mans: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The first shard's manifest as a whole run's: its own run id, the earliest start and latest finish, the
    shards it came from (run id, machine, trials) in place of `shard`."""
    base = min(mans, key=lambda m: m["shard"]["index"])
    exp = base["experiment"]["experiment"]
    out = {k: v for k, v in base.items() if k not in ("shard", "runner", "error")}
    out.update(run_id=f"{exp}-{time.strftime('%Y%m%d-%H%M%S')}-merged{base['shard']['count']}",
               started=min(m.get("started") or 0 for m in mans), finished=max(m.get("finished") or 0 for m in mans),
               status="complete", trials=n, planned=len(base["shard"]["all"]),
               merged={"shards": [{"shard": f"{m['shard']['index']}/{m['shard']['count']}", "run_id": m["run_id"],
                                   "host": (m.get("machine") or {}).get("hostname"), "trials": len(m["shard"]["trials"])}
                                  for m in sorted(mans, key=lambda m: m["shard"]["index"])]})
    return out
