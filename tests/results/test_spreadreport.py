"""A spread run's report from its run directory alone: the table, the curves beside the model's band, the
infection tree, the findings."""

from __future__ import annotations

import json

from orchestrator.analysis.infections import Infection, write_csv
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.spreadmodel import SpreadParams, predict_spread
from orchestrator.results.report import build_report

TREE = [("b1", 0.0, "injector", 0), ("b3", 2.5, "b1", 1), ("b2", 4.0, "b3", 2), ("b4", 4.5, "b1", 1)]


def make_run(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_manifest({"run_id": "r", "experiment": {"experiment": "spread-x", "kind": "spread"},
                       "lab": {"name": "lab", "provider": "netns"}, "seed": 1, "git": {"commit": "abc"},
                       "status": "complete", "planned": 2})
    pred = predict_spread(SpreadParams(hosts=4, range_size=64, rate=10, max_attempts=1000, lifetime_s=60),
                          replicates=50)
    (rd.path / "model").mkdir()
    (rd.path / "model" / "none-d0-r10.json").write_text(json.dumps(
        pred.to_dict() | {"mechanism": "none", "deploy": "0", "rate": 10.0}))
    trials = []
    for rep, missing in ((1, False), (2, True)):
        tid = f"none-d0-tcp-r10-{rep}"
        infs = [Infection(h, t, by, g, f"198.18.8.{i}:4000{i}", confirmed_on_wire=not (missing and h == "b2"),
                          wire_at_s=t) for i, (h, t, by, g) in enumerate(TREE)]
        f = write_csv(infs, rd.trial_dir(tid) / "infections.csv")
        figs = {"infected_final": 4, "t_first_s": 2.5, "t_50_s": 2.5, "t_90_s": 4.5, "t_all_s": 4.5,
                "confirmed_on_wire": 3 if missing else 4, "hosts": 4}
        trials.append({"trial": tid, "mechanism": "none", "deploy": "0", "rate": 10.0, "protocol": "tcp",
                       "repeat": rep, "status": "ok", "hosts": 4, "files": {"infections": str(f.relative_to(rd.path))},
                       "measured": figs, "model": {"t_50_s": pred.figures["t_50_s"], "t_all_s": pred.figures["t_all_s"]},
                       "agreement": {"ok": True},
                       "findings": [{"kind": "infection-not-on-wire", "detail": "b2's server took a trigger the "
                                     "capture does not show"}] if missing else []})
    rd.write_trials(trials)
    return rd


def test_the_spread_report(tmp_path):
    rd = make_run(tmp_path)
    md, page = build_report(rd)
    text = md.read_text()
    assert text.startswith("# Worm spread — spread-x")
    row = next(line for line in text.splitlines() if line.startswith("| none |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["none", "0", "10.00", "4", "4.00 (4.00–4.00)"]
    assert cells[10:] == ["2/2", "7/8", "2/2", "2"]        # all fell in both; 7 of 8 infections on the wire
    assert "## Infection tree — none-d0-tcp-r10-1" in text
    tree = text.split("## Infection tree")[1].split("##")[0].splitlines()
    assert [ln for ln in tree if ln.strip().startswith("-")] == [
        "- b1 at 0.00 s (generation 0, by injector; on the wire)",
        "    - b3 at 2.50 s (generation 1, by b1; on the wire)",
        "        - b2 at 4.00 s (generation 2, by b3; on the wire)",
        "    - b4 at 4.50 s (generation 1, by b1; on the wire)"]
    assert "- none-d0-tcp-r10-2: b2's server took a trigger the capture does not show" in text
    assert (rd.path / "plots" / "spread-curves.png").stat().st_size > 5000
    assert "data:image/png;base64," in page.read_text()


def test_a_spread_run_is_indexed_one_row_per_mechanism_and_deploy(tmp_path):
    """A spread's summary has a row per deploy condition of the same mechanism: the index keys each apart
    (it refused the second williamson row as a duplicate before)."""
    from orchestrator.results.index import Index

    rd = make_run(tmp_path)
    trials = rd.trials()
    for d in ("0.5", "1"):
        trials += [t | {"trial": t["trial"].replace("none-d0", f"williamson-d{d}"), "mechanism": "williamson",
                        "deploy": d} for t in trials[:2]]
    rd.write_trials(trials)
    idx = Index(tmp_path / "index.sqlite")
    assert idx.record(rd) == "r"
    rows = idx.db.execute("SELECT mechanism, repeats FROM summary ORDER BY mechanism").fetchall()
    assert rows == [("none@0", 2), ("williamson@0.5", 2), ("williamson@1", 2)]
    assert idx.record(rd) == "r"        # indexing again replaces the rows
    idx.close()
