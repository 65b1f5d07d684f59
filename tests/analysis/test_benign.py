"""The benign analysis (orchestrator.analysis.benign): the williamson model's delay per connection from the
schedule, the agreement connection by connection, false blocks from a mechanism's log, and the summary rows."""

from __future__ import annotations

import pytest

from orchestrator.analysis import benign as ab

SRC = "198.18.8.2"


def conn(i, t, dst, *, est=None, outcome="ok", wall0=1000.0):
    return {"event": "conn", "i": i, "t_sched": t, "due_mono": 50.0 + t, "due_wall": wall0 + t, "t_mono": 50.0 + t,
            "src": SRC, "sport": 40000 + i, "dst": dst, "dport": 8081, "protocol": "tcp", "outcome": outcome,
            "t_established_mono": None if est is None else 50.0 + t + est, "t_done_mono": 50.0 + t + (est or 0.01)}


PARAMS = {"working_set_size": 2, "release_period_s": 1.0, "delay_queue_limit": 100, "policy": "packets"}


def test_a_new_destination_beyond_the_working_set_waits_one_release_period():
    cs = [conn(0, 0.0, "a", est=0.001), conn(1, 0.1, "b", est=0.001), conn(2, 0.2, "c", est=1.0),
          conn(3, 0.3, "a", est=0.001)]
    m = ab.williamson_model(cs, PARAMS)
    per = m["per_conn"]
    assert [per[i]["fate"] for i in range(4)] == ["passed", "passed", "released", "passed"]
    assert per[2]["wire_s"] == pytest.approx(1.0) and per[2]["queued_behind"] == 0
    assert per[0]["wire_s"] == 0.0 and m["blocked_s"] is None


def test_a_second_new_destination_in_the_same_period_waits_two():
    cs = [conn(0, 0.0, "a"), conn(1, 0.1, "b"), conn(2, 0.2, "c", est=1.0), conn(3, 0.5, "d", est=1.8)]
    per = ab.williamson_model(cs, PARAMS)["per_conn"]
    assert per[3]["fate"] == "released" and per[3]["queued_behind"] == 1
    assert per[3]["wire_s"] == pytest.approx(2.2 - 0.5)      # released at the second tick (0.2 + 2)


def test_a_full_delay_queue_blocks_the_host_and_drops_what_follows():
    params = PARAMS | {"delay_queue_limit": 2}
    cs = [conn(i, 0.1 * i, f"d{i}", est=None, outcome="timeout") for i in range(6)]
    m = ab.williamson_model(cs, params)
    assert m["blocked_s"] == pytest.approx(0.4) and m["block_queue_len"] == 2
    fates = [m["per_conn"][i]["fate"] for i in range(6)]
    assert fates == ["passed", "passed", "dropped", "dropped", "dropped", "dropped"]


def test_agreement_is_connection_by_connection_within_the_stopping_tolerance():
    model = {"per_conn": {0: {"wire_s": 0.0, "fate": "passed", "queued_behind": None},
                          1: {"wire_s": 1.0, "fate": "released", "queued_behind": 0},
                          2: {"wire_s": None, "fate": "dropped", "queued_behind": None}}}
    rows = [{"i": 0, "wire_s": 0.001}, {"i": 1, "wire_s": 1.025}, {"i": 2, "wire_s": None}]
    a = ab.agreement(rows, model, abs_s=0.02, rel=0.03)
    assert (a["ok"], a["agree"], a["connections"]) == (True, 3, 3)
    rows[1]["wire_s"] = 1.2
    a = ab.agreement(rows, model, abs_s=0.02, rel=0.03)
    assert (a["ok"], a["disagree"], a["worst_conn"]) == (False, 1, 1)
    assert a["worst_error_s"] == pytest.approx(0.2) and rows[1]["agree"] is False
    rows[2]["wire_s"] = 0.5                       # the model dropped it, the wire carried it
    assert ab.agreement(rows, model, abs_s=0.02, rel=0.03)["disagree"] == 2


def test_a_release_the_model_puts_after_the_session_ended_is_not_judged():
    # queued behind 27 others, the generator gave up after 10 s; the model releases it 13.2 s after its due
    # time, after the session (and the capture) ended at 1029.9: unobserved, neither agreeing nor not
    model = {"per_conn": {0: {"wire_s": 13.19, "fate": "released", "queued_behind": 27},
                          1: {"wire_s": 2.0, "fate": "released", "queued_behind": 3}}}
    rows = [{"i": 0, "wire_s": None, "due_wall": 1017.26}, {"i": 1, "wire_s": None, "due_wall": 1017.3}]
    a = ab.agreement(rows, model, abs_s=0.02, rel=0.03, observed_until_wall=1029.9)
    assert (a["connections"], a["unobserved"], a["disagree"], a["ok"]) == (1, 1, 1, False)
    assert rows[0]["agree"] is None and rows[1]["agree"] is False     # 1 was due on the wire at 1019.3: missing
    rows[1]["wire_s"] = 2.01
    assert ab.agreement(rows, model, abs_s=0.02, rel=0.03, observed_until_wall=1029.9)["ok"] is True
    assert ab.agreement(rows, model, abs_s=0.02, rel=0.03)["ok"] is False    # without the session's end: judged


def test_a_false_block_says_when_and_why_and_a_worms_block_is_not_one():
    evs = [{"event": "queued", "src": SRC, "t_wall": 1001.0},
           {"event": "blocked", "src": SRC, "t_wall": 1012.5, "reason": "limit", "queue_len": 100, "dst": "x"},
           {"event": "blocked", "src": "198.18.8.9", "t_wall": 1003.0, "reason": "limit", "queue_len": 100}]
    fb = ab.false_blocks(evs, start_wall=1000.0, worm_sources=["198.18.8.9"])
    assert len(fb) == 1
    assert fb[0]["src"] == SRC and fb[0]["t_s"] == pytest.approx(12.5)
    assert (fb[0]["cause"], fb[0]["queue_len"]) == ("limit", 100)
    rows = [{"due_wall": 1010.0, "wire_s": 0.1}, {"due_wall": 1013.0, "wire_s": None},
            {"due_wall": 1014.0, "wire_s": 0.2}]
    assert ab.after_block(rows, 1012.5) == {"scheduled_after": 2, "on_wire_after": 1}


def test_measured_rows_take_the_first_syn_from_the_capture_not_the_log():
    cs = [conn(0, 0.0, "198.18.9.2", est=0.9), conn(1, 0.5, "198.18.9.3", est=0.001)]
    wire = {("tcp", SRC, 40000, "198.18.9.2", 8081): [1000.9], ("tcp", SRC, 40001, "198.18.9.3", 8081): [1000.5002]}
    rows = ab.measured_rows(cs, wire)
    assert rows[0]["wire_s"] == pytest.approx(0.9) and rows[1]["wire_s"] == pytest.approx(0.0002)
    assert rows[0]["established_s"] == pytest.approx(0.9)
    s = ab.summary(rows, scheduled=2, blocks=[], period_s=1.0)
    assert (s["connections"], s["on_wire"], s["dropped"], s["false_blocks"]) == (2, 2, 0, 0)
    assert s["delay_max_s"] == pytest.approx(0.9) and s["delay_p50_s"] == pytest.approx(0.4501)


def test_the_empty_queue_promise_is_checked_on_the_wire():
    rows = [{"wire_s": 0.98, "model_fate": "released", "queued_behind": 0},
            {"wire_s": 1.5, "model_fate": "released", "queued_behind": 1},
            {"wire_s": 1.3, "model_fate": "released", "queued_behind": 0}]
    assert ab.empty_queue_wait(rows, 1.0) == {"n": 2, "max_s": 1.3, "over_one_period": 1}


def trial(rate, p99, *, agree=True, block=None, status="ok", model=True):
    return {"trial": f"t{rate}", "kind": "benign", "mechanism": "williamson", "setting": "working_set_size=5",
            "protocol": "tcp", "rate": rate, "status": status,
            "measured": {"connections": 10, "delay_p50_s": 0.0, "delay_p95_s": p99 / 2, "delay_p99_s": p99,
                         "delay_max_s": p99 + 0.1, "dropped": 1, "false_blocks": 1 if block else 0,
                         "false_block": block},
            "model": {"delay_p99_s": p99} if model else None,
            "agreement": {"ok": agree, "share": 1.0 if agree else 0.5} if model else {"ok": None}}


def test_summary_rows_of_a_benign_run():
    blk = {"t_s": 12.5, "cause": "limit"}
    rows = ab.summarise_benign([trial(1, 1.0), trial(1, 2.0, agree=False), trial(10, 9.0, block=blk),
                                trial(10, 0, status="error")])
    assert [(r["benign_rate"], r["repeats"], r["errors"]) for r in rows] == [(1.0, 2, 0), (10.0, 2, 1)]
    one, ten = rows
    assert one["delay_p99_s"] == pytest.approx(1.5) and one["connections"] == 20 and one["dropped"] == 2
    assert one["agree"] is False and one["agree_share"] == pytest.approx(0.75) and one["false_blocks"] == 0
    assert (ten["false_blocks"], ten["false_block_s"], ten["false_block_cause"]) == (1, 12.5, "limit")
    assert set(ab.BENIGN_COLUMNS) <= set(one)
    assert ab.summarise_benign([trial(1, 1.0, model=False)])[0]["agree"] is None
