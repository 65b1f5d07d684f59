"""A detector's false positives over hosts and time (orchestrator.analysis.falsepos): TRW's block predicted from
which first contacts fail, the rate over hosts, blocks per host-hour, the survival curve, and the summary
columns of a benign run. Pure, on fakes."""

from __future__ import annotations

import math

import pytest

from orchestrator.analysis.benign import BENIGN_COLUMNS, summarise_benign
from orchestrator.analysis.falsepos import (
    fp_figures,
    pooled,
    schedule_attempts,
    survival,
    trw_attempts,
    trw_block,
)
from workload.schedule import Conn


def conns(pattern: str, gap: float = 0.1) -> list[Conn]:
    """One connection per letter, `gap` s apart: S to a new live server, F to a new stale address, s to the
    first live server again (known: no observation)."""
    out, live, stale = [], 0, 0
    for i, ch in enumerate(pattern):
        if ch == "F":
            addr, stale = f"198.18.9.{100 + stale}", stale + 1
        elif ch == "S":
            addr, live = f"198.18.9.{2 + live}", live + 1
        else:
            addr = "198.18.9.2"
        out.append(Conn(i, i * gap, i, 0, addr, "tcp", 8081, miss=ch == "F"))
    return out


def test_four_failed_first_contacts_in_a_row_block_at_the_fourth():
    """Defaults: each failure ln 4 up, threshold ln 99: the 4th failure from Λ = 1 blocks (README)."""
    p = trw_block(schedule_attempts(conns("FFFF")), {})
    assert (p["block_conn"], p["failures"], p["blocked_s"]) == (3, 4, pytest.approx(0.3))


def test_successes_pull_the_walk_back_and_repeats_are_not_observations():
    assert trw_block(schedule_attempts(conns("FFFSF")), {})["blocked_s"] is None     # net +3: no block
    p = trw_block(schedule_attempts(conns("FFFSFF")), {})                           # net +4 at the 6th
    assert (p["block_conn"], p["failures"], p["successes"]) == (5, 5, 1)
    assert trw_block(schedule_attempts(conns("SssssFFF")), {})["blocked_s"] is None   # a known server: nothing
    # four successes declare the host benign (walk back to 0): then four failures are needed again
    p = trw_block(schedule_attempts(conns("SSSSFFFF")), {})
    assert p["block_conn"] == 7 and p["blocked_s"] == pytest.approx(0.7)


def test_a_stricter_alpha_needs_more_failures():
    assert trw_block(schedule_attempts(conns("FFFF")), {"alpha": 0.0001})["blocked_s"] is None
    assert trw_block(schedule_attempts(conns("FFFFFFF")), {"alpha": 0.0001})["block_conn"] == 6


def test_the_generators_log_gives_the_syn_and_answer_times():
    recs = [{"i": c.i, "t_mono": 100 + c.t + 0.001, "due_mono": 100 + c.t, "dst": c.addr, "dport": 8081,
             "protocol": "tcp", "miss": c.miss, "t_done_mono": 100 + c.t + 0.002,
             "t_established_mono": None if c.miss else 100 + c.t + 0.002} for c in conns("SFFFFF")]
    att = trw_attempts(recs)
    assert [a["outcome"] for a in att] == ["connected", *["refused"] * 5]
    p = trw_block(att, {}, t0=100.0)
    assert p["block_conn"] == 5 and p["blocked_s"] == pytest.approx(0.502)   # the 5th refusal's answer
    assert trw_block([], {})["blocked_s"] is None


def test_survival_steps_down_at_each_first_block():
    assert survival([None, 12.0, 3.0, None], 30.0) == [(0.0, 1.0), (3.0, 0.75), (12.0, 0.5), (30.0, 0.5)]
    assert survival([None, None], 30.0) == [(0.0, 1.0), (30.0, 1.0)]
    assert survival([], 30.0) == []


def test_fp_rate_and_blocks_per_host_hour_over_hosts():
    f = fp_figures([{"t_block_s": 9.0}, {"t_block_s": None}, {"t_block_s": 27.0}, {"t_block_s": None}], 30.0)
    assert (f["hosts"], f["false_block_hosts"], f["fp_rate"]) == (4, 2, 0.5)
    assert f["host_hours"] == pytest.approx((9 + 30 + 27 + 30) / 3600)          # exposed until blocked
    assert f["fp_per_host_hour"] == pytest.approx(2 / (96 / 3600))             # 75 per host-hour
    assert f["survival"][-1] == (30.0, 0.5)
    none = fp_figures([{"t_block_s": None}], 30.0)
    assert (none["fp_rate"], none["fp_per_host_hour"]) == (0.0, 0.0)


def test_repeats_pool_hosts_and_hours_not_rates():
    a = fp_figures([{"t_block_s": 6.0}, {"t_block_s": None}], 30.0)           # 1 of 2 in 36 s
    b = fp_figures([{"t_block_s": None}, {"t_block_s": None}], 30.0)          # 0 of 2 in 60 s
    p = pooled([a, b])
    assert (p["hosts"], p["false_block_hosts"], p["fp_rate"]) == (4, 1, 0.25)
    assert p["fp_per_host_hour"] == pytest.approx(3600 / 96)
    assert pooled([]) == {"hosts": None, "false_block_hosts": None, "fp_rate": None, "fp_per_host_hour": None}


def test_summary_rows_carry_the_false_positive_columns_after_the_others():
    assert BENIGN_COLUMNS[-4:] == ["hosts", "false_block_hosts", "fp_rate", "fp_per_host_hour"]
    assert BENIGN_COLUMNS[:4] == ["mechanism", "setting", "protocol", "benign_rate"]
    fp = fp_figures([{"t_block_s": 9.0}, {"t_block_s": None}], 30.0)
    trial = {"mechanism": "trw", "setting": "", "protocol": "tcp", "rate": 5.0, "status": "ok",
             "measured": {"connections": 300, "false_blocks": 1, "false_block": {"t_s": 9.0, "cause": "threshold"},
                          "dropped": 60, "fp": fp}, "agreement": {"ok": True}}
    old = {**trial, "measured": {k: v for k, v in trial["measured"].items() if k != "fp"}, "rate": 1.0}
    rows = {r["benign_rate"]: r for r in summarise_benign([trial, trial, old])}
    r = rows[5.0]
    assert (r["hosts"], r["false_block_hosts"], r["fp_rate"], r["false_blocks"]) == (4, 2, 0.5, 2)
    assert r["fp_per_host_hour"] == pytest.approx(2 / (78 / 3600))
    assert r["false_block_s"] == 9.0 and r["false_block_cause"] == "threshold" and r["agree"] is True
    assert rows[1.0]["hosts"] is None and rows[1.0]["fp_rate"] is None      # recorded before they were measured
    assert math.isclose(rows[1.0]["false_block_s"], 9.0)
