"""results/index.sqlite: every run, its trials and its summary rows, for listing and comparing runs
(the run directories themselves are experiment/rundir.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from orchestrator.errors import NotFoundError
from orchestrator.experiment.rundir import ResultsError, RunDir, run_status, summarise


class RunNotFoundError(NotFoundError, ResultsError):
    """No run of that id or name in the index (exit 3, as for a lab)."""


class Index:
    """results/index.sqlite: every run, its trials and its summary rows, for listing and comparing runs."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, path TEXT, experiment TEXT, kind TEXT,
        started REAL, finished REAL, status TEXT, spec_hash TEXT, lab_hash TEXT, git_commit TEXT, seed INTEGER,
        trials INTEGER, ok INTEGER);
    CREATE TABLE IF NOT EXISTS trials (run_id TEXT, trial TEXT, protocol TEXT, rate REAL, repeat INTEGER,
        status TEXT, stop_s REAL, stop_s_model REAL, out_before_block REAL, out_before_block_model REAL,
        out_after_block REAL, achieved_rate REAL, agree INTEGER, PRIMARY KEY (run_id, trial));
    CREATE TABLE IF NOT EXISTS summary (run_id TEXT, protocol TEXT, rate REAL, achieved_rate REAL, stop_s REAL,
        stop_s_sd REAL, stop_s_model REAL, out_before_block REAL, out_before_block_model REAL,
        out_after_block REAL, repeats INTEGER, ok INTEGER, agree INTEGER, PRIMARY KEY (run_id, protocol, rate));
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30)
        try:
            self.db.executescript(self.SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ResultsError(f"{self.path} is not an index of runs ({exc})",
                               hint="give --index the SQLite file `testbed run` writes (results/index.sqlite)") from None

    def close(self) -> None:
        self.db.close()

    def record(self, run: RunDir) -> str:
        """(Re)index one run directory; returns its run id."""
        man = run.manifest()
        trials = run.trials()
        summary = summarise(trials)
        rid = man["run_id"]
        with self.db:
            self.db.execute("DELETE FROM trials WHERE run_id=?", (rid,))
            self.db.execute("DELETE FROM summary WHERE run_id=?", (rid,))
            self.db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rid, str(run.path.resolve()), man["experiment"]["experiment"], man["experiment"]["kind"],
                 man.get("started"), man.get("finished"), man.get("status"), man.get("spec_hash"),
                 man.get("lab", {}).get("spec_hash"), (man.get("git") or {}).get("commit"), man.get("seed"),
                 len(trials), sum(1 for t in trials if t.get("status") == "ok")))
            for t in trials:
                m, mo = t.get("measured") or {}, t.get("model") or {}
                self.db.execute("INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                (rid, t["trial"], t["protocol"], t["rate"], t.get("repeat"), t.get("status"),
                                 m.get("stop_s"), mo.get("stop_s"), m.get("out_before_block"),
                                 mo.get("out_before_block"), m.get("out_after_block"), m.get("achieved_rate"),
                                 int(bool((t.get("agreement") or {}).get("ok")))))
            for r in summary:
                self.db.execute("INSERT INTO summary VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                (rid, r["protocol"], r["rate"], r["achieved_rate"], r["stop_s"], r["stop_s_sd"],
                                 r["stop_s_model"], r["out_before_block"], r["out_before_block_model"],
                                 r["out_after_block"], r["repeats"], r["ok"], int(r["agree"])))
        return rid

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first; a run indexed as running is looked up in its manifest: it may have finished
        since, or died (`run_status`)."""
        cur = self.db.execute("SELECT * FROM runs ORDER BY started DESC")
        cols = [c[0] for c in cur.description]
        out = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        for r in out:
            if r["status"] == "running":
                try:
                    r["status"] = run_status(RunDir(r["path"]).manifest())
                except ResultsError:
                    pass
        return out

    def find(self, ref: str) -> RunDir:
        """A run by id, id prefix, directory path, or directory name (`--out` names a run's directory: the
        name need not be its id)."""
        p = Path(ref)
        if (p / "manifest.json").is_file():
            return RunDir(p)
        rows = self.db.execute("SELECT run_id, path FROM runs WHERE run_id LIKE ?", (ref + "%",)).fetchall()
        if not rows and "/" not in ref:
            rows = [r for r in self.db.execute("SELECT run_id, path FROM runs").fetchall()
                    if Path(r[1]).name == ref]
        if len(rows) == 1:
            return RunDir(rows[0][1])
        if not rows:
            raise RunNotFoundError(f"no run '{ref}' in {self.path} (by id or directory name), and no run "
                                   "directory at that path")
        raise ResultsError(f"'{ref}' matches {len(rows)} runs: {', '.join(r[0] for r in rows[:5])}")
