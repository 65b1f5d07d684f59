"""The one results writer: a run directory that holds everything needed to re-analyse a run without the lab
(the SQLite index of runs is results/index.py).

Run directory: manifest.json, trials.jsonl (one record per trial), summary.csv (one row per protocol and
rate), trials/<id>/ (capture, logs, analysis), report.md/report.html/plots/. Every file is written whole and
renamed into place; nothing is ever left half-written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.analysis import wormbenign as wbsum
from orchestrator.analysis.benign import BENIGN_COLUMNS, summarise_benign
from orchestrator.atomic import atomic_write_json, atomic_write_text, read_json
from orchestrator.errors import TestbedError
from orchestrator.experiment.spreadsum import SPREAD_COLUMNS, is_spread, summarise_spread
from orchestrator.localrun import pid_start_time

SUMMARY_COLUMNS = [
    "mechanism", "protocol", "rate", "achieved_rate", "achieved_rate_sd", "stop_s", "stop_s_sd", "stop_s_min", "stop_s_max",
    "stop_s_model", "out_before_block", "out_before_block_sd", "out_before_block_model", "out_after_block",
    "repeats", "ok", "blocked", "agree", "errors",
    "contained", "contained_s", "contained_s_sd", "out_before_contained", "out_before_contained_sd", "wire_rate",
    "wire_rate_sd",
]


# a stopping-speed run with benign traffic beside the worm, or a sweep: the setting and the benign columns
BESIDE_COLUMNS = SUMMARY_COLUMNS[:1] + wbsum.COLUMNS[:1] + SUMMARY_COLUMNS[1:] + wbsum.COLUMNS[1:]


class ResultsError(TestbedError):
    exit_code = 2


# ---------------------------------------------------------------- run directory


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def trial_dir(self, trial: str) -> Path:
        d = self.path / "trials" / trial
        d.mkdir(parents=True, exist_ok=True)
        return d

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        try:
            return read_json(self.manifest_path)
        except FileNotFoundError:
            raise ResultsError(f"{self.path} is not a run directory (no manifest.json)") from None
        except ValueError as exc:
            raise ResultsError(f"{self.manifest_path} is damaged: {exc}") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def trials(self) -> list[dict[str, Any]]:
        path = self.path / "trials.jsonl"
        if not path.exists():
            return []
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise ResultsError(f"{path}:{n} is not JSON") from None
        return out

    def write_trials(self, trials: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / "trials.jsonl", "".join(json.dumps(t, sort_keys=True) + "\n" for t in trials))

    def write_summary(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        cols = (BENIGN_COLUMNS if rows and "benign_rate" in rows[0] and "stop_s" not in rows[0] else SPREAD_COLUMNS
                if rows and "deploy" in rows[0] else BESIDE_COLUMNS if rows and "setting" in rows[0] and
                "stop_s" in rows[0] else SUMMARY_COLUMNS)
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in cols})
        atomic_write_text(self.path / "summary.csv", buf.getvalue())

    def summary(self) -> list[dict[str, Any]]:
        path = self.path / "summary.csv"
        if not path.exists():
            return summarise(self.trials())
        with open(path, newline="") as fh:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _parse(v: str) -> Any:
    if v == "":
        return None
    if v in ("true", "false"):
        return v == "true"
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


# ---------------------------------------------------------------- is the run still running?


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def runner_record() -> dict[str, Any]:
    """Who runs a run, for its manifest: this process, told from a reused PID by its kernel start time."""
    pid = os.getpid()
    return {"pid": pid, "starttime": pid_start_time(pid), "host": socket.gethostname(), "boot_id": _boot_id()}


def run_status(man: dict[str, Any]) -> str | None:
    """A run's status as it stands now. A manifest says `running` while its runner works; a runner that was
    SIGKILLed (or whose machine went down) cannot say otherwise, so a `running` run whose runner process is
    gone — checked on the machine that ran it — `died`. On another machine it stays `running` (unknown)."""
    status = man.get("status")
    r = man.get("runner")
    if status != "running" or not isinstance(r, dict) or r.get("host") != socket.gethostname():
        return status
    if r.get("boot_id") and r.get("boot_id") != _boot_id():
        return "died"
    alive = r.get("starttime") is not None and pid_start_time(int(r["pid"])) == r["starttime"]
    return "running" if alive else "died"


def died_note(man: dict[str, Any]) -> str:
    r = man.get("runner") or {}
    return (f"its runner (pid {r.get('pid')} on {r.get('host')}) is gone but the manifest says running: it was "
            "killed before it could record how it ended")


# ---------------------------------------------------------------- summary (pure)


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def summarise(trials: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mechanism, protocol, rate) — mechanisms in the order they first ran —: means over repeats with
    their spread, the model's figures beside them, and the wire's containment figures (every mechanism).
    Only trials that measured something (ok, timeout) are averaged; an error (a process it depended on died, a
    capture without statistics, …) counts in `repeats` and `errors` and gives no figure, so a rate whose every
    trial failed has a row of counts with its figures empty. A benign run (benign) and a spread run
    (spreadsum) have rows of their own."""
    trials = list(trials)
    if trials and all(t.get("kind") == "benign" for t in trials):
        return summarise_benign(trials)
    if is_spread(trials):
        return summarise_spread(trials)
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = {}
    order: dict[tuple[str, str], int] = {}
    for t in trials:
        mech = t.get("mechanism") or ""        # records from before mechanisms were named have none
        setting = t.get("setting") or ""       # a swept stopping-speed run's (benign.setting_extra); else none
        order.setdefault((mech, setting), len(order))
        groups.setdefault((mech, setting, t["protocol"], float(t["rate"])), []).append(t)
    beside = any((t.get("measured") or {}).get("benign_connections") is not None or t.get("setting")
                 for t in trials)
    rows = []
    for (mech, setting, proto, rate), ts in sorted(groups.items(),
                                                   key=lambda kv: (order[kv[0][:2]], kv[0][2], kv[0][3])):
        done = [t for t in ts if t.get("status") in ("ok", "timeout")]   # trials that measured something
        m = [t.get("measured") or {} for t in done]
        mo = [t.get("model") or {} for t in done]

        def col(src, key):
            return [float(x[key]) for x in src if x.get(key) is not None]
        stops = col(m, "stop_s")
        outs = col(m, "out_before_block")
        contained, wr = col(m, "contained_s"), col(m, "wire_rate")
        out_c = col(m, "out_before_contained")
        rows.append({
            "mechanism": mech or None, "protocol": proto, "rate": rate,
            "achieved_rate": _mean(col(m, "achieved_rate")), "achieved_rate_sd": _sd(col(m, "achieved_rate")),
            "stop_s": _mean(stops), "stop_s_sd": _sd(stops),
            "stop_s_min": min(stops) if stops else None, "stop_s_max": max(stops) if stops else None,
            "stop_s_model": _mean(col(mo, "stop_s")),
            "out_before_block": _mean(outs), "out_before_block_sd": _sd(outs),
            "out_before_block_model": _mean(col(mo, "out_before_block")),
            "out_after_block": max(col(m, "out_after_block"), default=None),
            "repeats": len(ts), "ok": sum(1 for t in ts if t.get("status") == "ok"),
            "blocked": sum(1 for x in m if x.get("blocked")),
            "agree": all((t.get("agreement") or {}).get("ok") for t in done) if done else False,
            "errors": sum(1 for t in ts if t.get("status") == "error"),
            "contained": sum(1 for x in m if x.get("contained")),
            "contained_s": _mean(contained), "contained_s_sd": _sd(contained),
            "out_before_contained": _mean(out_c), "out_before_contained_sd": _sd(out_c),
            "wire_rate": _mean(wr), "wire_rate_sd": _sd(wr),
        })
        if beside:        # a swept or benign-beside-the-worm run: its setting and benign columns
            rows[-1] |= {"setting": setting} | wbsum.row_figures(done)
    return rows


def new_run_id(experiment: str) -> str:
    import secrets
    return f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def finite(x: Any) -> Any:
    """JSON has no NaN: map non-finite floats to None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
