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


def index_mechanism(row: dict[str, Any]) -> str:
    """A summary row's mechanism as the index keys it: a spread has one row per mechanism and deploy condition,
    so its deploy goes beside the name (`williamson@0.5`, `williamson@gateway`).
    A benign sweep has one row per setting, so the setting goes beside it too (`williamson working_set_size=2`)."""
    name = " ".join(x for x in (row.get("mechanism") or "", row.get("setting") or "") if x)
    return f"{name}@{row['deploy']}" if row.get("deploy") is not None else name


class Index:
    """results/index.sqlite: every run, its trials and its summary rows, for listing and comparing runs.

    The schema is versioned in `PRAGMA user_version`; opening an index brings it to SCHEMA_VERSION, one
    migration after the other, all in one transaction (an index made before versions is version 0).
    An index from a newer worm-testbed, or a file that is not SQLite, is refused (ResultsError, exit 2)."""

    TABLES = """
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
    # MIGRATIONS[n] brings version n to n + 1. Version 0 is the tables above, as the first index made them;
    # `list` reads runs newest first, `show`/`compare` find a run by id prefix (the primary key, as a range).
    MIGRATIONS = [
        ["CREATE INDEX IF NOT EXISTS runs_by_started ON runs (started)"],
        # 1 -> 2: one summary row per mechanism (an index made before mechanisms were named keeps its rows,
        # under mechanism ''), with the wire figures every mechanism has
        ["ALTER TABLE summary RENAME TO summary_before_mechanisms",
         """CREATE TABLE summary (run_id TEXT, protocol TEXT, rate REAL, achieved_rate REAL, stop_s REAL,
            stop_s_sd REAL, stop_s_model REAL, out_before_block REAL, out_before_block_model REAL,
            out_after_block REAL, repeats INTEGER, ok INTEGER, agree INTEGER, mechanism TEXT NOT NULL DEFAULT '',
            contained_s REAL, out_before_contained REAL, wire_rate REAL,
            PRIMARY KEY (run_id, mechanism, protocol, rate))""",
         """INSERT INTO summary (run_id, protocol, rate, achieved_rate, stop_s, stop_s_sd, stop_s_model,
            out_before_block, out_before_block_model, out_after_block, repeats, ok, agree)
            SELECT run_id, protocol, rate, achieved_rate, stop_s, stop_s_sd, stop_s_model, out_before_block,
            out_before_block_model, out_after_block, repeats, ok, agree FROM summary_before_mechanisms""",
         "DROP TABLE summary_before_mechanisms"],
    ]
    SCHEMA_VERSION = len(MIGRATIONS)
    LIST_RUNS = "SELECT * FROM runs ORDER BY started DESC"
    FIND_RUNS = "SELECT run_id, path FROM runs WHERE run_id >= ? AND run_id < ?"   # an id prefix, as a key range
    SUMMARY = ("run_id", "mechanism", "protocol", "rate", "achieved_rate", "stop_s", "stop_s_sd", "stop_s_model",
               "out_before_block", "out_before_block_model", "out_after_block", "repeats", "ok", "agree",
               "contained_s", "out_before_contained", "wire_rate")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30)
        except sqlite3.Error as exc:
            raise ResultsError(f"cannot open the index of runs {self.path}: {exc}") from None
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ResultsError(f"{self.path} is not an index of runs ({exc})",
                               hint="give --index the SQLite file `testbed run` writes (results/index.sqlite), "
                                    "or move this file away to start a new index") from None
        except BaseException:
            self.db.close()
            raise

    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.version() == self.SCHEMA_VERSION:
            return
        # the transaction by hand: Python's sqlite3 opens none for DDL by itself
        level, self.db.isolation_level = self.db.isolation_level, None
        try:
            self.db.execute("BEGIN IMMEDIATE")      # one opener migrates; another waits, then finds it done
            try:
                version = self.version()
                if version > self.SCHEMA_VERSION:
                    raise ResultsError(f"{self.path} is an index of schema version {version}, made by a newer "
                                       f"worm-testbed (this one knows versions up to {self.SCHEMA_VERSION})")
                if version == 0:
                    tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    if tables and "runs" not in tables:
                        raise ResultsError(f"{self.path} is an SQLite database of something else (tables: "
                                           f"{', '.join(sorted(tables)[:5])}), not an index of runs")
                    for statement in self.TABLES.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                for n in range(version, self.SCHEMA_VERSION):
                    for statement in self.MIGRATIONS[n]:
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        finally:
            self.db.isolation_level = level

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
                row = {**r, "run_id": rid, "mechanism": index_mechanism(r),
                       "agree": None if r.get("agree") is None else int(r["agree"])}
                self.db.execute(f"INSERT INTO summary ({', '.join(self.SUMMARY)}) VALUES "
                                f"({', '.join('?' * len(self.SUMMARY))})", [row.get(k) for k in self.SUMMARY])
        return rid

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, with `gone` set for one whose run directory (its manifest) no longer exists;
        a run indexed as running is looked up in its manifest: it may have finished since, or died
        (`run_status`)."""
        cur = self.db.execute(self.LIST_RUNS)
        cols = [c[0] for c in cur.description]
        out = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        for r in out:
            r["gone"] = not RunDir(r["path"]).exists()
            if r["status"] == "running" and not r["gone"]:
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
        rows = self.db.execute(self.FIND_RUNS, (ref, ref + "\U0010ffff")).fetchall()
        if not rows and "/" not in ref:
            rows = [r for r in self.db.execute("SELECT run_id, path FROM runs").fetchall()
                    if Path(r[1]).name == ref]
        if len(rows) == 1:
            if not RunDir(rows[0][1]).exists():
                raise ResultsError(f"run {rows[0][0]} is in {self.path}, but its directory {rows[0][1]} is gone "
                                   f"(`testbed results prune --index {self.path}` forgets it)")
            return RunDir(rows[0][1])
        if not rows:
            raise RunNotFoundError(f"no run '{ref}' in {self.path} (by id or directory name), and no run "
                                   "directory at that path")
        raise ResultsError(f"'{ref}' matches {len(rows)} runs: {', '.join(r[0] for r in rows[:5])}")

    def prune(self, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Forget the runs whose directory is gone (their trials and summary rows too); returns them, oldest
        first. With dry_run, only says which."""
        gone = [r for r in reversed(self.runs()) if r["gone"]]
        if gone and not dry_run:
            with self.db:
                for table in ("summary", "trials", "runs"):
                    self.db.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(r["run_id"],) for r in gone])
        return gone
