"""results/index.sqlite with the sqlite3 module: a versioned schema migrated on open (data kept), indexes the
listing and finding queries use, runs whose directory is gone marked and pruned, and a file that is not an
index refused with exit 2 and a message."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import ResultsError
from orchestrator.results.index import Index

from .test_results import make_run, trial

REPO = Path(__file__).resolve().parents[2]

# The index as the code before schema versions made it (orchestrator/results.py at 1dfeb5d): user_version 0, no index
# beyond the primary keys.
OLD_TABLES = """
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


def old_index(path: Path, run_dir: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_TABLES)
    with db:
        db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   ("exp-20250101-000000-aaaa", str(run_dir), "exp", "stopping-speed", 1_735_689_600.0,
                    1_735_689_700.0, "complete", "abc", "def", "1234567", 1, 1, 1))
        db.execute("INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   ("exp-20250101-000000-aaaa", "tcp-r20-1", "tcp", 20.0, 1, "ok", 5.0, 5.0, 5, 5, 0, 20.0, 1))
        db.execute("INSERT INTO summary VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   ("exp-20250101-000000-aaaa", "tcp", 20.0, 20.0, 5.0, 0.0, 5.0, 5, 5, 0, 1, 1, 1))
    assert db.execute("PRAGMA user_version").fetchone() == (0,)
    db.close()


def dump(path: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    out = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in ("runs", "trials", "summary")}
    db.close()
    return out


def index_names(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA index_list({table})")}


def plan(db: sqlite3.Connection, query: str, args: tuple = ()) -> str:
    return " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query, args))


def test_a_version_0_index_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "index.sqlite"
    old_index(path, tmp_path / "a")
    before = dump(path)
    idx = Index(path)
    assert idx.version() == Index.SCHEMA_VERSION == 2
    assert "runs_by_started" in index_names(idx.db, "runs")
    assert [r["run_id"] for r in idx.runs()] == ["exp-20250101-000000-aaaa"]
    idx.close()
    # version 2's summary rows are per mechanism: an old row keeps its figures under mechanism '', with no
    # wire figures (contained_s, out_before_contained, wire_rate)
    after = before | {"summary": [row + ("", None, None, None) for row in before["summary"]]}
    assert dump(path) == after
    Index(path).close()                           # opening again changes nothing
    assert dump(path) == after
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (2,)


def test_a_new_index_is_made_at_the_current_version(tmp_path):
    idx = Index(tmp_path / "sub" / "index.sqlite")
    assert idx.version() == Index.SCHEMA_VERSION
    assert {"runs", "trials", "summary"} <= {r[0] for r in idx.db.execute("SELECT name FROM sqlite_master")}
    idx.close()


def test_listing_and_finding_use_an_index(tmp_path):
    idx = Index(tmp_path / "index.sqlite")
    assert plan(idx.db, Index.LIST_RUNS) == "SCAN runs USING INDEX runs_by_started"
    assert plan(idx.db, Index.FIND_RUNS, ("exp-2026", "exp-2026\U0010ffff")) == \
        "SEARCH runs USING INDEX sqlite_autoindex_runs_1 (run_id>? AND run_id<?)"
    # a run's trials and summary rows (re-indexing and pruning delete them) go by their primary keys
    for table in ("trials", "summary"):
        assert plan(idx.db, f"DELETE FROM {table} WHERE run_id = ?", ("x",)) == \
            f"SEARCH {table} USING INDEX sqlite_autoindex_{table}_1 (run_id=?)"
    idx.close()


def test_a_prefix_is_a_prefix_not_a_like_pattern(tmp_path):
    idx = Index(tmp_path / "index.sqlite")
    idx.record(make_run(tmp_path / "a", [trial("tcp", 20, 1, 5.0, 5)], run_id="exp-20260101-000000-aaaa"))
    assert idx.find("exp-2026").path == (tmp_path / "a").resolve()
    for ref in ("exp_2026", "exp%", "EXP-2026", "xp-2026"):
        with pytest.raises(ResultsError, match=f"no run '{ref}'"):
            idx.find(ref)
    idx.close()


def test_a_newer_index_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(ResultsError) as exc:
        Index(path)
    assert exc.value.exit_code == 2
    assert exc.value.message == (f"{path} is an index of schema version 7, made by a newer worm-testbed "
                                 "(this one knows versions up to 2)")
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (7,)


def test_an_sqlite_database_of_something_else_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.close()
    with pytest.raises(ResultsError, match=r"is an SQLite database of something else \(tables: photos\)"):
        Index(path)
    assert {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")} == {"photos"}


def test_gone_runs_are_marked_and_found_as_gone(tmp_path):
    idx = Index(tmp_path / "index.sqlite")
    idx.record(make_run(tmp_path / "a", [trial("tcp", 20, 1, 5.0, 5)], run_id="exp-20260101-000000-aaaa"))
    idx.record(make_run(tmp_path / "b", [trial("tcp", 20, 1, 5.0, 5)], run_id="exp-20260102-000000-bbbb",
                        started=1_800_000_000.0))
    shutil.rmtree(tmp_path / "a")
    assert [(r["run_id"], r["gone"]) for r in idx.runs()] == [("exp-20260102-000000-bbbb", False),
                                                              ("exp-20260101-000000-aaaa", True)]
    with pytest.raises(ResultsError, match=r"run exp-20260101-000000-aaaa is in .*, but its directory .*/a is gone"):
        idx.find("exp-20260101")
    assert [r["run_id"] for r in idx.prune(dry_run=True)] == ["exp-20260101-000000-aaaa"]
    assert len(idx.runs()) == 2
    assert [r["run_id"] for r in idx.prune()] == ["exp-20260101-000000-aaaa"]
    assert [r["run_id"] for r in idx.runs()] == ["exp-20260102-000000-bbbb"]
    for table in ("trials", "summary"):
        assert idx.db.execute(f"SELECT DISTINCT run_id FROM {table}").fetchall() == [("exp-20260102-000000-bbbb",)]
    assert idx.prune() == []
    idx.close()


# ---------------------------------------------------------------- through the command line


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, "COLUMNS": "250"})


def test_list_and_prune_through_the_command_line(tmp_path):
    index = tmp_path / "index.sqlite"
    idx = Index(index)
    for n, rid in enumerate(("exp-20260101-000000-aaaa", "exp-20260102-000000-bbbb", "exp-20260103-000000-cccc")):
        idx.record(make_run(tmp_path / rid[-4:], [trial("tcp", 20, 1, 5.0, 5)], run_id=rid,
                            started=1_800_000_000.0 + n))
    idx.close()
    shutil.rmtree(tmp_path / "aaaa")
    shutil.rmtree(tmp_path / "cccc")

    listed = cli("results", "list", "--index", str(index))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("gone:") == 2
    assert (f"2 of 3 runs point at a directory that no longer exists (gone); `testbed results prune --index "
            f"{index}` forgets them") in listed.stdout
    as_json = json.loads(cli("results", "list", "--index", str(index), "--json").stdout)
    assert [(r["run_id"][-4:], r["gone"]) for r in as_json] == [("cccc", True), ("bbbb", False), ("aaaa", True)]

    dry = cli("results", "prune", "--index", str(index), "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        f"would forget exp-20260101-000000-aaaa (exp): {(tmp_path / 'aaaa').resolve()} is gone",
        f"would forget exp-20260103-000000-cccc (exp): {(tmp_path / 'cccc').resolve()} is gone",
        "would forget 2 run(s) whose directory is gone"]
    assert len(dump(index)["runs"]) == 3
    pruned = cli("results", "prune", "--index", str(index))
    assert pruned.returncode == 0 and pruned.stdout.splitlines()[-1] == "forgot 2 run(s) whose directory is gone"
    assert [r[0] for r in dump(index)["runs"]] == ["exp-20260102-000000-bbbb"]
    again = cli("results", "prune", "--index", str(index))
    assert again.stdout.strip() == f"nothing to forget: every run in {index} has its directory"


@pytest.mark.parametrize("what", ["text", "zeros", "directory"])
def test_an_index_that_is_not_sqlite_is_exit_2_with_a_message(tmp_path, what):
    index = tmp_path / "index.sqlite"
    if what == "text":
        index.write_text("run_id,path\n" * 200)
    elif what == "zeros":
        index.write_bytes(bytes(8192))
    else:
        index.mkdir()
    for verb in (["results", "list"], ["results", "prune"]):
        r = cli(*verb, "--index", str(index))
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        said = " ".join(r.stderr.split())
        if what == "directory":
            assert said == f"error: cannot open the index of runs {index}: unable to open database file"
        else:
            assert said == (f"error: {index} is not an index of runs (file is not a database) hint: give --index "
                            "the SQLite file `testbed run` writes (results/index.sqlite), or move this file away "
                            "to start a new index"), said
