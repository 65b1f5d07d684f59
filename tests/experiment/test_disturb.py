"""A trial's disturbance (experiment/disturb.py): the throttle's release lateness and the worm's send lateness
against the agreement's tolerance, and a disturbed trial redone a bounded number of times, the record saying so."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from orchestrator.experiment import disturb
from orchestrator.experiment.record import Evaluation, TrialRecord, TrialSpec
from orchestrator.experiment.rundir import RunDir


def _rec(late: float | None, status="ok") -> TrialRecord:
    model = {"orderings": {"jitter": {"late_max_s": late, "releases": 4}}} if late is not None else None
    r = TrialRecord("tcp-r5-1", 0, "tcp", 5.0, 1, "full", [], "host", False, time.time(), status=status)
    r.evaluation = Evaluation({"stop_s": 1.0, "out_before_block": 5}, [], model, {"ok": True})
    return r


def test_a_release_late_beyond_the_tolerance_is_a_disturbance():
    worm = disturb.worm_lateness([])
    ok = disturb.judge(_rec(0.004).to_dict(), worm, 0.02)
    assert (ok["disturbed"], ok["reasons"], ok["release_late_max_s"], ok["releases"]) == (False, [], 0.004, 4)
    bad = disturb.judge(_rec(0.031).to_dict(), worm, 0.02)
    assert bad["disturbed"] and bad["reasons"] == ["the throttle released 31.0 ms late (tolerance 20 ms)"]
    assert disturb.judge(_rec(None).to_dict(), worm, 0.02)["disturbed"] is False     # no throttle: no release


def test_the_worms_send_lateness_is_read_from_its_own_log():
    lines = ['{"event":"start"}'] + [f'{{"event":"attempt","t_mono":{10 + i * 0.1 + (0.05 if i == 99 else 0.001)},'
                                     f'"due_mono":{10 + i * 0.1}}}' for i in range(100)] + ["not json"]
    w = disturb.worm_lateness(lines)
    assert w["attempts"] == 100 and w["late_p50_s"] == pytest.approx(0.001) and w["late_max_s"] == pytest.approx(0.05)
    assert w["late_p99_s"] == pytest.approx(0.05)
    j = disturb.judge(_rec(0.001).to_dict(), w, 0.02)
    assert j["reasons"] == ["the worm sent 1 % of its attempts over 50.0 ms late (tolerance 20 ms)"]


def _St(path: Path):
    """A Setup's fields that judged_trial reads, on a run directory at `path`, without a shared clock."""
    return _DSt(RunDir(path), shared_clock=False)


def test_a_disturbed_trial_is_redone_and_the_record_says_so(tmp_path):
    lates = iter([0.05, 0.001])
    rec = disturb.judged_trial(_St(tmp_path), TrialSpec(0, "tcp", 5.0, 1), lambda st, t: _rec(next(lates)))
    assert rec.extra["timing"]["disturbed"] is False and len(rec.extra["redone"]) == 1
    assert rec.extra["redone"][0]["reasons"] == ["the throttle released 50.0 ms late (tolerance 20 ms)"]
    assert rec.extra["redone"][0]["stop_s"] == 1.0 and "load" in rec.extra["redone"][0]


def test_redos_are_bounded_and_the_last_record_stays_flagged(tmp_path):
    calls = []
    rec = disturb.judged_trial(_St(tmp_path), TrialSpec(0, "tcp", 5.0, 1),
                               lambda st, t: calls.append(1) or _rec(0.2))
    assert len(calls) == 1 + disturb.MAX_REDOS and len(rec.extra["redone"]) == disturb.MAX_REDOS
    assert rec.extra["timing"]["disturbed"] is True and rec.to_dict()["timing"]["disturbed"] is True


def test_an_interrupted_trial_is_not_redone(tmp_path):
    calls = []
    rec = disturb.judged_trial(_St(tmp_path), TrialSpec(0, "tcp", 5.0, 1),
                               lambda st, t: calls.append(1) or _rec(0.2, status="interrupted"))
    assert rec.status == "interrupted" and calls == [1] and "timing" not in rec.extra


def test_the_judge_says_when_the_worst_release_was_due_against_the_worms_attempts():
    worm = disturb.worm_lateness([f'{{"event":"attempt","t_mono":{100 + i},"due_mono":{100 + i}}}' for i in range(10)])
    assert (worm["first_mono"], worm["last_mono"]) == (100, 109)
    log = ['{"event":"released","t_mono":90.5,"due_mono":90.0}',        # an earlier session's: not this one's
           '{"event":"config"}',
           '{"event":"released","t_mono":101.002,"due_mono":101.0}',
           '{"event":"released","t_mono":104.031,"due_mono":104.0}',
           '{"event":"released","t_mono":112.012,"due_mono":112.0}', "not json"]
    rel = disturb.release_lateness(log)
    assert rel["releases"] == 3 and rel["worst_due_mono"] == 104.0
    assert rel["late"] == [[104.0, pytest.approx(0.031)], [112.0, pytest.approx(0.012)]]
    j = disturb.judge(_rec(0.031).to_dict(), worm, 0.02, rel)
    assert j["disturbed"] and (j["release_late_at_s"], j["worm_span_s"]) == (4.0, 9.0)
    assert j["late_releases"] == [[4.0, pytest.approx(0.031)], [12.0, pytest.approx(0.012)]]
    assert "release_late_at_s" not in disturb.judge(_rec(0.031).to_dict(), disturb.worm_lateness([]), 0.02, rel)


def test_a_discarded_trys_files_are_set_aside_for_a_look_afterwards(tmp_path):
    st, tries = _St(tmp_path), iter([0.05, 0.001])

    def run(st, t):
        d = st.run.trial_dir(t.id)
        (d / "throttle.jsonl").write_text(f"try {len(list(d.glob('redone-*')))}\n")
        r = _rec(next(tries))
        r.files = {"throttle_log": f"trials/{t.id}/throttle.jsonl", "pcap": f"trials/{t.id}/missing.pcap"}
        return r
    rec = disturb.judged_trial(st, TrialSpec(0, "tcp", 5.0, 1), run)
    assert rec.extra["redone"][0]["files"] == {"throttle_log": "trials/tcp-r5-1/redone-1/throttle.jsonl"}
    assert (tmp_path / "trials/tcp-r5-1/redone-1/throttle.jsonl").read_text() == "try 0\n"
    assert (tmp_path / "trials/tcp-r5-1/throttle.jsonl").read_text() == "try 1\n"      # the kept try's own


def _worm(first=100.0, n=21):
    return disturb.worm_lateness([f'{{"event":"attempt","t_mono":{first + i},"due_mono":{first + i}}}'
                                  for i in range(n)])


def test_a_release_due_after_the_worms_last_attempt_is_not_judged_on_one_clock():
    # tcp-r1-1 of the paper sweep: its worm's attempts spanned 121.0 s, the release 31 ms late was due at 122.035 s
    rel = disturb.release_lateness(['{"event":"released","t_mono":105.004,"due_mono":105.0}',
                                    '{"event":"released","t_mono":121.066,"due_mono":121.035}'])
    worm = _worm()                                                     # attempts at 100 … 120
    j = disturb.judge(_rec(0.031).to_dict(), worm, 0.02, rel, window=True)
    assert j["disturbed"] is False and j["release_late_max_s"] == pytest.approx(0.004)
    assert j["release_late_max_all_s"] == 0.031 and j["release_late_at_s"] == 21.035
    # not on one clock (the worm's and the throttle's times cannot be set side by side): every release counts
    assert disturb.judge(_rec(0.031).to_dict(), worm, 0.02, rel)["disturbed"] is True


def test_a_release_due_at_or_just_after_the_last_attempt_is_still_judged():
    rel = disturb.release_lateness(['{"event":"released","t_mono":120.038,"due_mono":120.005}'])
    j = disturb.judge(_rec(0.033).to_dict(), _worm(), 0.02, rel, window=True)
    assert j["disturbed"] is True and j["reasons"] == ["the throttle released 33.0 ms late (tolerance 20 ms)"]


@dataclasses.dataclass
class _DSt:
    run: RunDir
    tolerance: dict = dataclasses.field(default_factory=lambda: {"stop_abs_s": 0.02})
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    abort_late_s: float | None = None
    shared_clock: bool = True


def test_every_try_but_the_last_may_end_early_and_one_that_did_is_never_kept(tmp_path):
    seen = []

    def run(st, t):
        seen.append(st.abort_late_s)
        r = _rec(0.001)                        # its logs look fine: what it saw before it ended early did not
        if st.abort_late_s is not None:
            r.extra["disturbed_early"] = "disturbed: the throttle released 40.0 ms late while the worm scanned"
        return r
    rec = disturb.judged_trial(_DSt(RunDir(tmp_path)), TrialSpec(0, "tcp", 1.0, 1), run)
    assert seen == [0.02, 0.02, None]                  # the last try runs to its end, and is the one kept
    assert [r["reasons"][0] for r in rec.extra["redone"]] == \
        ["disturbed: the throttle released 40.0 ms late while the worm scanned"] * 2
    assert rec.extra["timing"]["disturbed"] is False and "disturbed_early" not in rec.extra


def test_a_try_that_ended_early_on_its_last_chance_stays_flagged(tmp_path):
    def run(st, t):
        r = _rec(0.001)
        r.extra["disturbed_early"] = "disturbed: …"    # (it cannot: the last try is not asked to; if it did)
        return r
    rec = disturb.judged_trial(_DSt(RunDir(tmp_path)), TrialSpec(0, "tcp", 1.0, 1), run, redos=0)
    assert rec.extra["timing"]["disturbed"] is True and rec.extra["timing"]["reasons"] == ["disturbed: …"]
