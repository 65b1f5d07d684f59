"""The registry: descriptors, parameter validation, argv builders, models — pure, without root."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mechanisms as M
from mechanisms.ratelimit.rules import RateLimitConfig
from mechanisms.trw.core import TrwConfig
from throttle.core import ThrottleConfig

REPO = Path(__file__).resolve().parents[2]


def test_the_built_ins_and_their_aliases():
    assert M.names() == ["williamson", "trw", "rate-limit", "none"]
    assert M.get("throttle") is M.get("williamson") and M.get("baseline") is M.get("none")
    d = {m["name"]: m for m in M.describe()}
    assert json.loads(json.dumps(d))["trw"]["params"][0] == {
        "name": "theta0", "type": "float", "default": 0.8, "range": "(0, 1)",
        "help": "P(first contact succeeds | benign)"}
    assert (d["trw"]["daemon"], d["trw"]["event_log"], d["trw"]["placements"]) == (True, True, ["host", "gateway"])
    assert (d["rate-limit"]["daemon"], d["rate-limit"]["event_log"], d["rate-limit"]["model"] is not None) == \
        (False, False, True)
    assert (d["none"]["params"], d["none"]["role"], d["none"]["model"]) == ([], None, None)


def test_every_role_and_doc_exists():
    for m in M.REGISTRY.values():
        if m.role:
            assert (REPO / m.role / "tasks" / "main.yml").is_file(), m.role
        if m.doc:
            assert (REPO / m.doc).is_file(), m.doc
        if m.model:
            assert callable(m.load_model())


@pytest.mark.parametrize("name, cls", [("williamson", ThrottleConfig), ("trw", TrwConfig)])
def test_descriptor_defaults_are_the_cores_defaults(name, cls):
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for k, v in M.get(name).defaults().items():
        assert defaults[k] == v, k


def test_rate_limit_defaults_are_the_rules_defaults():
    c = RateLimitConfig()
    assert M.get("rate-limit").defaults() == {"new_per_s": c.new_per_s, "burst": c.burst}


def test_unknown_names_list_the_known_ones_and_their_parameters():
    with pytest.raises(M.MechanismError) as ex:
        M.get("my-limiter")
    msg = str(ex.value)
    assert msg.startswith("unknown mechanism 'my-limiter'; known:\n  williamson ")
    assert "theta0 = 0.8" in msg and "new_per_s = 2.0" in msg and "\n  none " in msg


@pytest.mark.parametrize("name, params, msg", [
    ("trw", {"theta0": 1.5}, "trw: parameter theta0 must be in (0, 1), got 1.5"),
    ("trw", {"theta1": 0.9}, "trw: theta1 must be below theta0"),
    ("trw", {"alpha": "low"}, "trw: parameter alpha must be a float, got 'low'"),
    ("trw", {"bogus": 1}, "trw: unknown parameter bogus; its parameters: theta0 (default 0.8)"),
    ("rate-limit", {"burst": 0}, "rate-limit: parameter burst must be in [1, 1000000], got 0"),
    ("rate-limit", {"new_per_s": True}, "rate-limit: parameter new_per_s must be a number, got True"),
    ("rate-limit", {"new_per_s": 0.3333}, "is not a whole number per second, minute or hour"),
    ("williamson", {"policy": "bytes"}, "williamson: parameter policy must be one of packets, connections"),
    ("williamson", {"working_set_size": 2.5}, "williamson: parameter working_set_size must be an int"),
    ("none", {"x": 1}, "none: unknown parameter x; its parameters: none"),
])
def test_bad_parameters(name, params, msg):
    with pytest.raises(M.MechanismError, match=re.escape(msg)):
        M.get(name).validate(params)


def test_validate_fills_defaults_and_widens_ints_to_floats():
    assert M.get("rate-limit").validate({"new_per_s": 3}) == {"new_per_s": 3.0, "burst": 5}


def test_start_and_stop_argv():
    ctx = M.StartContext("host", python="/opt/py", interface="exp0", events="/run/trw.jsonl", protocols=("tcp",))
    assert M.get("trw").start_argv({"alpha": 0.05}, ctx) == [
        "/opt/py", "-m", "mechanisms.trw", "run", "--mode", "host", "--theta0", "0.8", "--theta1", "0.2",
        "--alpha", "0.05", "--beta", "0.99", "--timeout", "3.0", "--queue-num", "0", "--interface", "exp0",
        "--events", "/run/trw.jsonl", "--fail-closed"]
    assert M.get("trw").stop_argv(ctx) == ["/opt/py", "-m", "mechanisms.trw", "clear"]
    assert M.get("rate-limit").start_argv(None, ctx) == [
        "/opt/py", "-m", "mechanisms.ratelimit", "apply", "--placement", "host", "--new-per-s", "2.0",
        "--burst", "5", "--protocols", "tcp", "--interface", "exp0"]
    assert M.get("rate-limit").stop_argv(ctx) == ["/opt/py", "-m", "mechanisms.ratelimit", "clear"]
    w = M.get("williamson").start_argv({}, dataclasses.replace(ctx, fail_closed=False,
                                                                 initial_working_set=("198.18.9.1",)))
    assert w[:6] == ["/opt/py", "-m", "throttle", "run", "--mode", "host"]
    assert "--fail-closed" not in w and w[-2:] == ["--initial-working-set", "198.18.9.1"]
    assert M.get("none").start_argv(None, ctx) is None and M.get("none").stop_argv(ctx) is None
    with pytest.raises(M.MechanismError, match="trw does not support placement 'wire'; it supports host, gateway"):
        M.get("trw").start_argv(None, M.StartContext("wire"))


def test_the_argv_the_registry_builds_parses():
    """Every start argv is accepted by its own command line (the parser, not a run)."""
    from mechanisms.ratelimit.cli import build_parser as rl
    from mechanisms.trw.cli import build_parser as trw
    from throttle.cli import build_parser as wil
    for name, parser in (("trw", trw), ("rate-limit", rl), ("williamson", wil)):
        for placement in M.get(name).placements:
            argv = M.get(name).start_argv(None, M.StartContext(placement, interface="p0", events="/tmp/e"))
            a = parser().parse_args(argv[3:])
            assert a.verb in ("run", "apply")


def _log(outcome: str, n: int = 30, rate: float = 20.0) -> list[str]:
    return [json.dumps({"event": "attempt", "t_mono": 100 + i / rate, "t_done_mono": 100 + i / rate + 0.001,
                        "src": "198.18.8.2", "sport": 40000 + i, "dst": f"198.18.9.{i + 1}", "dport": 8080,
                        "protocol": "tcp", "outcome": outcome}) for i in range(n)]


def test_every_model_in_the_registrys_shape():
    log = _log("refused")
    trw = M.get("trw").load_model()(log, M.get("trw").validate({}), placement="host")["198.18.8.2"]
    assert (trw["blocked"], trw["out_before_block"], trw["block_attempt"]) == (True, 4, 3)
    assert trw["stop_s"] == pytest.approx(0.151)
    rl = M.get("rate-limit").load_model()(log, M.get("rate-limit").validate({}), placement="host")["198.18.8.2"]
    assert rl["blocked"] is False and rl["stop_s"] is None and rl["out_before_block"] >= 5
    w = M.get("williamson").load_model()(log, M.get("williamson").validate({"delay_queue_limit": 10}),
                                         placement="host")["198.18.8.2"]
    assert w["blocked"] is True and w["out_before_block"] == 5      # the working set, then the queue blocks


def test_the_registry_is_a_leaf():
    code = ("import sys, mechanisms; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('orchestrator', 'netfilterqueue') or m.endswith(('daemon', '.cli', '.model'))]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
