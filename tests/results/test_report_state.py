"""The report's "state the worm met" note agrees with the throttle's own `state` lines (trial `state_met`)."""

from __future__ import annotations

from orchestrator.results.report import build_report
from tests.results.test_results import make_run, trial

WS = [f"198.18.10.{254 - i}" for i in range(5)]


def note(tmp_path, met):
    ts = [trial("tcp", 20, 1, 5.25, 5), trial("udp", 20, 1, 5.25, 5)]
    for t, m in zip(ts, met, strict=True):
        if m is not None:
            t["state_met"] = m
    run = make_run(tmp_path / "r", ts)
    md, _ = build_report(run)
    return next(x for x in md.read_text().splitlines() if x.startswith("- State"))


def test_the_log_agrees_with_the_experiments_state(tmp_path):
    text = note(tmp_path, [{"state": "full", "working_set": WS}] * 2)
    assert text.startswith("- State the worm met: **full**")
    assert "the throttle's own log agrees: its `state` line just before each trigger says full (5 destination(s) " \
           "in the working set) in 2 of 2 trials; it started fresh" in text


def test_a_log_that_disagrees_is_said(tmp_path):
    text = note(tmp_path, [{"state": "full", "working_set": WS}, {"state": "partial", "working_set": WS[:3]}])
    assert text.startswith("- State asked for: **full**")
    assert "says **full in 1, partial in 1** of 2 trials (3–5 destination(s) in the working set)" in text


def test_runs_from_before_the_state_line_keep_the_old_note(tmp_path):
    assert note(tmp_path, [None, None]) == ("- State the worm met: **full** (the host's normal traffic filled its "
                                            "working set first, as on the paper's hosts).")
