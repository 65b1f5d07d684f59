"""The JUnit a run writes (`testbed run --junit`), read by junitparser and held to the Ant format's XSD (lxml),
from fake run directories: an errored trial is an <error> and counted, a disagreement says what disagreed and
the tolerance, and the suite carries when, where, how long and the run's settings."""

from __future__ import annotations

from pathlib import Path

import junitparser
import pytest
from lxml import etree

from orchestrator.experiment.agreement import judge
from orchestrator.results.regress import junit_xml, run_properties

from .test_results import make_run

XSD = etree.XMLSchema(etree.parse(str(Path(__file__).resolve().parents[1] / "fixtures" / "junit" / "ant-junit.xsd")))


def measured_trial(proto: str, rate: float, rep: int, stop: float | None, out: int, *, model_stop: float | None,
                   model_out: int, status: str = "ok", duration: float = 3.0) -> dict:
    """A trial as the runner records one, judged by the real agreement code."""
    measured = {"stop_s": stop, "out_before_block": out, "out_after_block": 0, "blocked": stop is not None,
                "achieved_rate": rate}
    model = {"stop_s": model_stop, "out_before_block": model_out}
    return {"trial": f"{proto}-r{rate:g}-{rep}", "protocol": proto, "rate": float(rate), "repeat": rep,
            "status": status, "reason": "not blocked within 30 s" if status == "timeout" else None,
            "duration_s": duration, "measured": measured, "model": model, "agreement": judge(measured, model)}


def errored_trial(proto: str, rate: float, rep: int, reason: str) -> dict:
    return {"trial": f"{proto}-r{rate:g}-{rep}", "protocol": proto, "rate": float(rate), "repeat": rep,
            "status": "error", "reason": reason, "duration_s": 1.5, "measured": None, "model": None,
            "agreement": None}


def mixed_run(tmp_path: Path):
    trials = [
        measured_trial("tcp", 20, 1, 5.0, 5, model_stop=5.0, model_out=5),
        measured_trial("tcp", 20, 2, 5.01, 5, model_stop=5.0, model_out=5),
        measured_trial("tcp", 100, 1, 1.25, 1, model_stop=1.0, model_out=1),          # 250 ms late
        measured_trial("udp", 20, 1, 5.0, 5, model_stop=5.0, model_out=5),
        errored_trial("udp", 20, 2, "the throttle daemon on blade died (exit 1): a trial without its mechanism"),
        measured_trial("udp", 100, 1, 1.0, 4, model_stop=1.0, model_out=1),           # 3 more out
        errored_trial("udp", 100, 2, "capture has no statistics"),
        measured_trial("udp", 5, 1, None, 0, model_stop=None, model_out=0, status="timeout"),
    ]
    return make_run(tmp_path / "run", trials, started=1_767_225_600.0, finished=1_767_225_642.5,
                    plan={"rates": [5, 20, 100], "repeats": 2})


def parse(text: str) -> junitparser.TestSuite:
    """As an importer reads the file: bytes, with their XML declaration; the one testsuite in it."""
    suites = list(junitparser.JUnitXml.fromstring(text.encode()))     # junitparser wraps it in <testsuites>
    assert len(suites) == 1 and isinstance(suites[0], junitparser.TestSuite)
    return suites[0]


def cases(suite: junitparser.TestSuite) -> dict[tuple[str, str], junitparser.TestCase]:
    return {(c.classname, c.name): c for c in suite}


def test_errors_failures_and_passes_are_told_apart_and_counted(tmp_path):
    suite = parse(junit_xml(mixed_run(tmp_path)))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 2, 1, 0)
    by = cases(suite)
    kinds = {k: [type(r).__name__ for r in c.result] for k, c in by.items()}
    assert kinds == {("exp.tcp", "rate 20/s"): [], ("exp.tcp", "rate 100/s"): ["Failure"],
                     ("exp.udp", "rate 5/s"): [], ("exp.udp", "rate 20/s"): ["Error"],
                     ("exp.udp", "rate 100/s"): ["Failure"]}
    error = by[("exp.udp", "rate 20/s")].result[0]
    assert error.type == "error"
    assert error.message == "udp-r20-2: error: the throttle daemon on blade died (exit 1): a trial without its mechanism"


def test_a_failure_says_what_disagreed_and_the_tolerance(tmp_path):
    by = cases(parse(junit_xml(mixed_run(tmp_path))))
    late = by[("exp.tcp", "rate 100/s")].result[0]
    assert late.type == "disagreement"
    assert late.message == ("tcp-r100-1: stopping time 1.25 s vs model 1.0 s "
                            "(tolerance: stopping time ±0.030 s, attempts out ±1)")
    more_out = by[("exp.udp", "rate 100/s")].result[0]
    # a disagreement outranks an error in the same case (an answer beats no answer); the text has both
    assert more_out.message == ("udp-r100-1: attempts out before the block 4 vs model 1 "
                                "(tolerance: stopping time ±0.030 s, attempts out ±1)")
    assert more_out.text.splitlines() == [more_out.message, "udp-r100-2: error: capture has no statistics"]


def test_nothing_reads_none(tmp_path):
    text = junit_xml(mixed_run(tmp_path))
    assert "None" not in text
    out = etree.fromstring(text.encode()).findtext("system-out")
    assert ("udp rate 5/s: measured not blocked (model no block); attempts out before the block 0 (model 0); "
            "after the block 0; achieved rate 5 /s; 0/1 trials ok, 0 errors") in out.splitlines()
    assert ("udp rate 20/s: measured stop 5.000 s (model 5.000 s); attempts out before the block 5 (model 5); "
            "after the block 0; achieved rate 20 /s; 1/2 trials ok, 1 errors") in out.splitlines()


def test_the_suite_says_when_where_how_long_and_with_what_settings(tmp_path):
    run = mixed_run(tmp_path)
    suite = parse(junit_xml(run))
    assert suite.timestamp == "2026-01-01T00:00:00"           # the run's start, UTC
    assert suite.hostname == "m" and suite.time == pytest.approx(42.5)
    props = {p.name: p.value for p in suite.properties()}
    assert props == run_properties(run.manifest(), run.trials())
    assert props["run_id"] == "exp-1" and props["seed"] == "1" and props["git.commit"] == "1234567"
    assert props["experiment.throttle.working_set_size"] == "5" and props["experiment.throttle.placement"] == "host"
    assert props["plan.rates"] == "5,20,100" and props["plan.repeats"] == "2"
    assert props["lab.provider"] == "netns" and props["versions.kernel"] == "6.1"
    assert props["agreement.tolerance.stop_abs_s"] == "0.02" and props["agreement.tolerance.out"] == "1"
    assert "lab.hosts" not in " ".join(props)                  # the lab's name and hash, not its topology


def test_a_run_without_a_finish_or_trials_still_makes_a_suite(tmp_path):
    run = make_run(tmp_path / "empty", [], status="running")
    text = junit_xml(run)
    XSD.assertValid(etree.fromstring(text.encode()))
    suite = parse(text)
    assert (suite.tests, suite.failures, suite.errors, suite.time) == (0, 0, 0, 0.0)


@pytest.mark.parametrize("which", ["mixed", "passing", "nasty"])
def test_the_ant_schema_takes_it(tmp_path, which):
    if which == "mixed":
        run = mixed_run(tmp_path)
    elif which == "passing":
        run = make_run(tmp_path / "ok", [measured_trial("tcp", 20, 1, 5.0, 5, model_stop=5.0, model_out=5)])
    else:    # a reason with markup, quotes and characters XML cannot carry
        run = make_run(tmp_path / "nasty", [errored_trial("tcp", 20, 1, 'exit 1: <b>&"\x00\x1b[31m" ' + "x" * 400)])
    text = junit_xml(run)
    XSD.assertValid(etree.fromstring(text.encode()))
    if which == "nasty":
        error = next(iter(parse(text))).result[0]
        assert error.text == 'tcp-r20-1: error: exit 1: <b>&"\ufffd\ufffd[31m" ' + "x" * 400
        assert len(error.message) == 300


def test_the_schema_is_strict_enough_to_refuse_the_old_shape():
    """The writer before: per-case <system-out>, no properties, timestamp or hostname."""
    old = ('<testsuite name="exp" tests="1" failures="1" errors="0"><testcase classname="exp.tcp" name="rate 20/s" '
           'time="2.000"><failure message="x">x</failure><system-out>stop None s</system-out></testcase></testsuite>')
    assert not XSD.validate(etree.fromstring(old))
