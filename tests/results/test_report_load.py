"""The report's load note (results/report.py load_note): how many trials ran side by side, how busy the CPUs
were, and the trials redone or flagged for a disturbed timing."""

from __future__ import annotations

from orchestrator.results.report import load_note


def _t(trial, busy, running=1, redone=None, disturbed=False):
    t = {"trial": trial, "load": {"cpu_busy": busy, "cpus": 2, "trials_running": running},
         "timing": {"disturbed": disturbed}}
    return t | ({"redone": redone} if redone else {})


def test_a_serial_run_says_one_trial_at_a_time_and_the_median_busy_share():
    note = load_note({}, [_t("a", 0.2), _t("b", 0.4), _t("c", 0.9)])
    assert note == ("Load: one trial at a time; the 2 CPUs were busy 40 % (median over the trials), at most 90 %. "
                    "No trial's timing was disturbed.")


def test_a_parallel_run_names_its_instances_and_the_redone_and_flagged_trials():
    man = {"parallel": {"instances": 2, "labs": ["ss", "ss-2"]}}
    note = load_note(man, [_t("a", 0.5, 2, redone=[{"reasons": ["late"]}]), _t("b", 0.7, 2, disturbed=True)])
    assert note == ("Load: 2 lab instances side by side (ss, ss-2), at most 2 trials at once; the 2 CPUs were busy "
                    "70 % (median over the trials), at most 70 %. 1 trial(s) redone because their timing was "
                    "disturbed (throttle or worm late beyond the tolerance); still disturbed after the redos, "
                    "flagged: b.")


def test_records_without_a_load_say_nothing():
    assert load_note({}, [{"trial": "a"}]) == ""
