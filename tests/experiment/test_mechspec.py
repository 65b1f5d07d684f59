"""The `mechanisms:` block: registry names and parameters, the legacy throttle:/kind: forms, and a user's own
mechanism (role, commands, placeholders) — every bad block refused with exit 2, naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment.mechspec import fill, placeholders
from orchestrator.experiment.spec import experiment_schema, load_experiment

LABS = Path(__file__).resolve().parents[2] / "labs"
HEAD = f"""\
experiment: t
lab: {LABS / 'stopping-speed.yaml'}
worm: {{scan: 198.18.9.0/24}}
rates: [20]
"""


def load(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(HEAD + textwrap.dedent(text))
    return load_experiment(p, machine_routes=[])


def problems(tmp_path, text):
    with pytest.raises(SpecError) as exc:
        load(tmp_path, text)
    assert exc.value.exit_code == 2
    return [(w.split(" (line")[0], r) for w, r in exc.value.problems]


def role(tmp_path, name="roles/my-limiter"):
    d = tmp_path / name / "tasks"
    d.mkdir(parents=True)
    (d / "main.yml").write_text("- ansible.builtin.debug: {msg: hi}\n")
    return name


def test_builtins_with_their_params_and_defaults(tmp_path):
    e = load(tmp_path, """\
        mechanisms:
          - {name: williamson, placement: host, params: {working_set_size: 5, delay_queue_limit: 100}}
          - {name: trw, params: {theta0: 0.8, theta1: 0.2, alpha: 0.01, beta: 0.99}}
          - {name: rate-limit, params: {new_per_s: 2, burst: 5}}
          - {name: none}
        """)
    assert [m.name for m in e.mechanisms] == ["williamson", "trw", "rate-limit", "none"]
    assert e.mechanisms[0].params["release_clock"] == "armed"          # a default filled in
    assert e.mechanisms[2].params == {"new_per_s": 2.0, "burst": 5}
    assert e.mechanisms[3].is_none and not e.legacy


def test_legacy_throttle_and_baseline_are_williamson_and_none(tmp_path):
    (m,) = load(tmp_path, "throttle: {placement: gateway, working_set_size: 4, policy: connections}\n").mechanisms
    assert (m.name, m.placement, m.params["working_set_size"], m.params["policy"]) == ("williamson", "gateway", 4,
                                                                                     "connections")
    (b,) = load(tmp_path, "kind: baseline\nthrottle: none\n").mechanisms
    assert b.is_none


def test_unknown_name_lists_the_registry_with_parameters(tmp_path):
    ((where, why),) = problems(tmp_path, "mechanisms: [{name: bloom}]\n")
    assert where == "mechanisms.0.name" and "unknown mechanism 'bloom'" in why
    for text in ("williamson", "trw", "rate-limit", "none", "theta0 = 0.8", "new_per_s = 2.0"):
        assert text in why


@pytest.mark.parametrize("block, where, why", [
    ("{name: trw, params: {theta0: 1.5}}", "mechanisms.0.params.theta0", "trw: parameter theta0 must be in (0, 1)"),
    ("{name: trw, params: {gamma: 1}}", "mechanisms.0.params", "trw: unknown parameter gamma"),
    ("{name: rate-limit, params: {burst: two}}", "mechanisms.0.params.burst", "must be an int, got 'two'"),
    ("{name: rate-limit, placement: wire}", "mechanisms.0.placement", "rate-limit does not support placement 'wire'"),
    ("{name: williamson, params: {policy: all}}", "mechanisms.0.params.policy", "must be one of packets, connections"),
])
def test_bad_params_name_the_field(tmp_path, block, where, why):
    ((w, r),) = problems(tmp_path, f"mechanisms: [{block}]\n")
    assert w == where and why in r


def test_mechanisms_replace_throttle_and_are_named_once(tmp_path):
    out = problems(tmp_path, "throttle: {placement: host}\nmechanisms: [{name: none}, {name: none}]\n")
    assert ("mechanisms", "name the mechanisms in one place") == (out[0][0], out[0][1][:32])
    assert out[1] == ("mechanisms.1.name", "none is named twice (a sweep runs each mechanism once)")


def test_a_custom_mechanism_resolves_its_role(tmp_path):
    r = role(tmp_path)
    (m,) = load(tmp_path, f"""\
        mechanisms:
          - name: my-limiter
            placement: host
            custom: {{role: {r}, start: "my-limiter --iface {{iface}} --protocol {{protocol}}",
                      stop: "my-limiter --stop", events: "{{run}}/my-limiter.jsonl"}}
        """).mechanisms
    assert m.descriptor is None and m.role_path == (tmp_path / r).resolve() and m.event_log
    assert fill(m.custom.start, {"iface": "eth1", "protocol": "tcp"}) == "my-limiter --iface eth1 --protocol tcp"


@pytest.mark.parametrize("custom, where, why", [
    ('{role: roles/absent, start: "x", stop: "y"}', "mechanisms.0.custom.role", "does not exist"),
    ('{role: ROLE, start: "x --on {interface}", stop: "y"}', "mechanisms.0.custom.start",
     "unknown placeholder {interface}; known: {iface}, {protocol}, {run}, {host}"),
    ('{role: ROLE, start: "x", stop: "y {run", events: "{run}/e.jsonl"}', "mechanisms.0.custom.stop", "brace"),
    ('{role: ROLE, start: "x {iface:>4}", stop: "y"}', "mechanisms.0.custom.start", "is not a placeholder"),
    ('{role: ROLE, start: "x", stop: "y", events: "{home}/e"}', "mechanisms.0.custom.events", "unknown placeholder"),
    ('{role: ROLE, start: " ", stop: "y"}', "mechanisms.0.custom.start", "is empty"),
])
def test_bad_custom_blocks(tmp_path, custom, where, why):
    r = role(tmp_path)
    ((w, reason),) = problems(tmp_path, f"mechanisms: [{{name: mine, custom: {custom.replace('ROLE', r)}}}]\n")
    assert w == where and why in reason


def test_a_custom_mechanism_may_not_take_a_builtins_name_or_the_wire(tmp_path):
    r = role(tmp_path)
    out = problems(tmp_path, f"""\
        mechanisms:
          - {{name: trw, custom: {{role: {r}, start: x, stop: y}}}}
          - {{name: mine, placement: wire, custom: {{role: {r}, start: x, stop: y}}}}
        """)
    assert out == [("mechanisms.0.name", "trw is a built-in mechanism; give your own another name"),
                   ("mechanisms.1.placement", "a custom mechanism runs at host or gateway, not wire")]


def test_placeholder_parsing():
    assert placeholders("a {iface} {{literal}} {run}/x") == ["iface", "run"]
    with pytest.raises(ValueError):
        placeholders("a {iface!r}")


def test_the_schema_describes_mechanisms():
    s = experiment_schema()
    assert s["title"] == "worm-testbed experiment file"
    assert {"name", "placement", "params", "custom"} <= set(s["$defs"]["MechanismSpec"]["properties"])
    assert set(s["$defs"]["CustomSpec"]["required"]) == {"role", "start", "stop"}


def test_testbed_mechanisms_prints_the_registry():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "mechanisms", "--json"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    reg = {m["name"]: m for m in json.loads(out)}
    assert list(reg) == ["williamson", "trw", "rate-limit", "none"]
    assert [p["name"] for p in reg["rate-limit"]["params"]] == ["new_per_s", "burst"]
    text = subprocess.run([sys.executable, "-m", "orchestrator.cli", "mechanisms"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "theta0 = 0.8" in text and "placements: host, gateway" in text
