"""The report of a run of several mechanisms: the comparison from the wire, Table 1 per mechanism, one curve
per mechanism — from the run directory alone."""

from __future__ import annotations

from orchestrator.results.mechreport import comparison, mechanisms_of
from orchestrator.results.report import _fmt, build_report
from tests.results.test_results import make_run, trial


def mtrial(mech, rate, *, contained_s=None, out=None, wire_rate=None, ok=True, stop=None):
    t = trial("tcp", rate, 1, stop, out, ok=ok)
    t["trial"], t["mechanism"] = f"{mech}-{t['trial']}", mech
    t["measured"] |= {"contained": contained_s is not None, "contained_s": contained_s, "out_before_contained": out,
                      "wire_rate": wire_rate}
    return t


TRIALS = [mtrial("williamson", 20, contained_s=5.25, out=5, stop=5.25), mtrial("williamson", 200, contained_s=0.5,
                                                                                out=5, stop=0.5),
          mtrial("trw", 20, contained_s=0.15, out=4), mtrial("trw", 200, contained_s=0.015, out=4),
          mtrial("rate-limit", 20, wire_rate=2.01), mtrial("rate-limit", 200, wire_rate=1.97, ok=False),
          mtrial("none", 20, wire_rate=20.0), mtrial("none", 200, wire_rate=199.0)]
MECHS = [{"name": "williamson", "placement": "host", "params": {"working_set_size": 5}},
         {"name": "trw", "placement": "host", "params": {}}, {"name": "rate-limit", "placement": "host"},
         {"name": "none", "placement": "host"}]


def run_of(tmp_path):
    run = make_run(tmp_path / "r", TRIALS)
    man = run.manifest()
    man["experiment"]["mechanisms"] = MECHS
    run.write_manifest(man)
    return run


def test_the_comparison_has_one_line_per_mechanism_and_rate(tmp_path):
    run = run_of(tmp_path)
    rows = run.summary()
    mechs = mechanisms_of(run.manifest(), rows)
    assert mechs == ["williamson", "trw", "rate-limit", "none"]
    head, body = comparison(rows, mechs, _fmt)
    assert head[:6] == ["mechanism", "protocol", "scan rate (/s)", "contained", "contained_s", "out before contained"]
    assert body[2] == ["trw", "tcp", "20", "1/1", "0.150", "4", "–", "yes"]
    assert body[5] == ["rate-limit", "tcp", "200", "0/1", "–", "–", "1.970", "NO"]
    assert mechanisms_of({"experiment": {"throttle": {}}}, rows) == []     # a throttle: run keeps its one table


def test_the_report_shows_table_1_per_mechanism_and_the_curves(tmp_path):
    run = run_of(tmp_path)
    md, page = build_report(run)
    text = md.read_text()
    assert "## The mechanisms compared, from the wire" in text
    for m in ("williamson", "trw", "rate-limit", "none"):
        assert f"## Table 1 — stopping speed per scan rate — {m}" in text
    assert (run.path / "plots" / "contained-time.png").stat().st_size > 1000
    assert (run.path / "plots" / "contained-out.png").exists() and "contained-time" in page.read_text()


def test_the_index_keeps_one_summary_row_per_mechanism_and_migrates_an_old_index(tmp_path):
    import sqlite3

    from orchestrator.results.index import Index

    from .test_index import OLD_TABLES
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)         # the index as it was before mechanisms were named (version 0)
    db.executescript(OLD_TABLES + "INSERT INTO summary VALUES ('old-1', 'tcp', 20, 20, 5.25, 0, 5.25, 5, 5, 0, 1, 1, 1);")
    db.commit()
    db.close()
    idx = Index(old)
    idx.record(run_of(tmp_path))
    rows = idx.db.execute("SELECT run_id, mechanism, rate, stop_s, contained_s, wire_rate FROM summary "
                          "ORDER BY run_id, rowid").fetchall()
    idx.close()
    assert rows[-1] == ("old-1", "", 20.0, 5.25, None, None)
    assert [(m, r) for _, m, r, *_ in rows[:-1]] == [("williamson", 20), ("williamson", 200), ("trw", 20),
                                                     ("trw", 200), ("rate-limit", 20), ("rate-limit", 200),
                                                     ("none", 20), ("none", 200)]
    assert rows[2][4] == 0.15 and rows[4][5] == 2.01
