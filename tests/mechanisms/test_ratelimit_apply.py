"""The rate limiter in a namespace lab: from the wire, it lets a 20/s worm out at new_per_s (within 10 %),
as its token-bucket model predicts."""

from __future__ import annotations

import os

import pytest

from mechanisms.ratelimit.model import predict_worm_log, wire_rate
from tests.mechanisms.lab import TOPO, gateway_answers_reset, run_worm, wire_attempts, worm_syn_sniffer
from tests.support.minilab import MiniLab
from tests.throttle.netlab import PY, need_tools

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


@pytest.fixture
def lab():
    need_tools("nft", "tcpdump")
    with MiniLab(TOPO, gateway="gw") as lab:
        gateway_answers_reset(lab)
        yield lab


def _rl(lab, *args):
    return lab.run("a", [PY, "-m", "mechanisms.ratelimit", *args], timeout=30)


def test_rate_limit_lets_out_new_per_s_as_the_token_bucket_predicts(lab, tmp_path):
    r = _rl(lab, "apply", "--new-per-s", "2", "--burst", "5")
    assert r.returncode == 0, r.stderr
    sniff = worm_syn_sniffer(lab)
    worm = run_worm(lab, tmp_path / "worm.jsonl", rate=20, attempts=220, lifetime=15)
    syns = sniff.stop()
    st = _rl(lab, "status")
    assert '"installed": true' in st.stdout
    assert _rl(lab, "clear").returncode == 0
    assert "wtb_ratelimit" not in lab.run("a", ["nft", "list", "tables"]).stdout
    on_wire = sorted(wire_attempts(syns).values())
    measured = wire_rate(on_wire)
    assert measured == pytest.approx(2.0, rel=0.10)
    me = lab.addr("a")
    pred = predict_worm_log(worm, new_per_s=2, burst=5)[me]
    assert pred.wire_rate == pytest.approx(2.0, rel=0.05)
    # the burst: five attempts at once, then the refill
    assert on_wire[4] - on_wire[0] < 0.25 and on_wire[5] - on_wire[0] > 0.3
    assert abs(len(on_wire) - pred.out) <= 2, (len(on_wire), pred.out)


def test_apply_refuses_bad_parameters_before_touching_nft(lab):
    r = _rl(lab, "apply", "--new-per-s", "0")
    assert r.returncode == 2 and "new_per_s must be a finite number > 0" in r.stderr
    assert "wtb_ratelimit" not in lab.run("a", ["nft", "list", "tables"]).stdout
