"""`kind: spread` experiment files: the contract's keys, their checks against the lab (exit 2 naming the key),
the carriers drawn from the seed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment.spec import load_experiment
from orchestrator.experiment.spread import (
    carriers,
    deployments,
    generation_bound,
    initial_host,
    vulnerable_hosts,
)

LABS = Path(__file__).resolve().parents[2] / "labs"
GOOD = f"""\
experiment: spread-paper
kind: spread
lab: {LABS / 'paper-testbed.yaml'}
worm: {{strategy: random, port: 8080, protocols: [tcp], scan: 198.18.8.0/22, max_attempts: 20000, lifetime_s: 600}}
rates: [20]
vulnerable: blade
initial: blade1
deploy: [0.0, 0.5, 1.0]
mechanisms: [{{name: williamson, placement: host}}]
repeats: 5
timeout_s: 600
"""


def load(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(text))
    return load_experiment(p, machine_routes=[])


def problems(tmp_path, text):
    with pytest.raises(SpecError) as exc:
        load(tmp_path, text)
    assert exc.value.exit_code == 2
    return [f"{w.split(' (line')[0]}: {r}" for w, r in exc.value.problems]


def test_the_contracts_file_loads(tmp_path):
    e = load(tmp_path, GOOD)
    assert e.spec.kind == "spread" and [m.name for m in e.mechanisms] == ["williamson"]
    vul = vulnerable_hosts(e.spec, e.lab)
    assert vul == [f"blade{i}" for i in range(1, 17)] and initial_host(e.spec, e.lab) == "blade1"
    assert deployments(e.spec) == [0.0, 0.5, 1.0]
    assert generation_bound(16) == 15 and generation_bound(200) == 64 and generation_bound(2) == 1


def test_a_list_of_hosts_and_the_defaults(tmp_path):
    text = GOOD.replace("vulnerable: blade", "vulnerable: [blade3, blade2, expt-server]").replace(
        "initial: blade1\n", "").replace("deploy: [0.0, 0.5, 1.0]\n", "")
    e = load(tmp_path, text)
    assert vulnerable_hosts(e.spec, e.lab) == ["expt-server", "blade2", "blade3"]    # the lab's order
    assert initial_host(e.spec, e.lab) == "expt-server" and deployments(e.spec) == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("change, expected", [
    (("vulnerable: blade", "vulnerable: laptop"),
     ["vulnerable: lab paper-testbed has no host or role 'laptop' (roles: admin-server, blade, gateway, injector, "
      "sniffer, target)"]),
    (("vulnerable: blade", "vulnerable: [blade1, blade99]"), ["vulnerable.1: lab paper-testbed has no host 'blade99'"]),
    (("vulnerable: blade", "vulnerable: [blade1, injector]"), ["vulnerable: injector has role injector: only blades "
                                                              "and targets run the worm server"]),
    (("initial: blade1", "initial: gateway"), ["initial: gateway is not vulnerable (vulnerable: blade1, blade2, "
                                               "blade3, blade4, blade5, blade6, … (16 hosts))"]),
    (("initial: blade1", "initial: blade77"), ["initial: lab paper-testbed has no host 'blade77'"]),
    (("0.0, 0.5, 1.0", "0.0, 1.5"), ["deploy.1: 1.5 is not a fraction of the vulnerable hosts: a fraction is in "
                                     "[0, 1] (or write 'gateway')"]),
    (("0.0, 0.5, 1.0", "-0.25, 0.5, 0.5"), ["deploy.0: -0.25 is not a fraction of the vulnerable hosts: a fraction "
                                            "is in [0, 1] (or write 'gateway')", "deploy: a deploy condition is "
                                                                                  "named twice"]),
    (("0.0, 0.5, 1.0", "0.5, edge"), ["deploy.1: 'edge' is neither a fraction of the vulnerable hosts (0 … 1) "
                                      "nor 'gateway'"]),
    (("protocols: [tcp]", "protocols: [tcp, udp]"), ["worm.protocols: a spread runs over TCP only (the worm's "
                                                      "trigger rides the connection a scan opened): write "
                                                      "protocols: [tcp]"]),
    (("scan: 198.18.8.0/22", "scan: 198.18.9.0/24"),
     ["vulnerable: blade1 (198.18.8.4) is outside the scan range 198.18.9.0/24: the worm could never reach it"]),
    (("scan: 198.18.8.0/22", "scan: 198.18.20.0/24"),
     ["worm.scan: 198.18.20.0/24 is not inside the lab's experimental subnets (198.18.8.0/22); the worm scans "
      "nothing else"]),
])
def test_bad_spread_files_exit_2_naming_the_key(tmp_path, change, expected):
    got = problems(tmp_path, GOOD.replace(*change))
    assert got[:len(expected)] == expected


def test_gateway_deployment_needs_a_gateway(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text((LABS / "paper-testbed.yaml").read_text().replace(
        "  gateway: {role: gateway, lans: [admin, experimental]}\n", ""))
    text = GOOD.replace(str(LABS / "paper-testbed.yaml"), str(lab)).replace("0.0, 0.5, 1.0", "0.0, gateway")
    assert problems(tmp_path, text) == ["deploy.1: lab paper-testbed has no gateway to deploy the mechanism on"]


@pytest.mark.parametrize("verb", ["run", "validate"])
@pytest.mark.parametrize("change, key, words", [
    (("vulnerable: blade", "vulnerable: laptop"), "vulnerable", "no host or role 'laptop'"),
    (("initial: blade1", "initial: gateway"), "initial", "gateway is not vulnerable"),
    (("0.0, 0.5, 1.0", "0.0, 1.5"), "deploy.1", "1.5 is not a fraction"),
    (("scan: 198.18.8.0/22", "scan: 198.18.20.0/24"), "worm.scan", "not inside the lab's experimental subnets"),
])
def test_the_cli_exits_2_naming_the_key(tmp_path, monkeypatch, verb, change, key, words):
    """Bad spread files stop `testbed run` (and `validate`) before anything is built: exit 2, the key named."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    p = tmp_path / "exp.yaml"
    p.write_text(GOOD.replace(*change))
    r = CliRunner().invoke(app, [verb, str(p)])
    assert r.exit_code == 2, r.output
    assert f"{key}" in r.output and words in r.output
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.json"))


def test_validate_counts_every_deploy_condition(tmp_path):
    """A spread's trials are its deploy conditions (deploy 0 once, as none) × mechanisms × rates × repeats."""
    from orchestrator.experiment.validate import validate_file

    p = tmp_path / "exp.yaml"
    p.write_text(GOOD)
    assert "15 trial(s)" in validate_file(p, machine_routes=[]).summary      # (none, 0.5, 1) × 5 repeats


def test_carriers_are_drawn_from_the_seed_and_the_repeat():
    vul = [f"blade{i}" for i in range(1, 17)]
    half = carriers(vul, 0.5, 1, 1)
    assert len(half) == 8 and half == carriers(vul, 0.5, 1, 1) and set(half) <= set(vul)
    assert half != carriers(vul, 0.5, 1, 2) or half != carriers(vul, 0.5, 2, 1)
    assert carriers(vul, 0.0, 1, 1) == [] and carriers(vul, 1.0, 1, 1) == vul
    assert carriers(vul, "gateway", 1, 1) == [] and len(carriers(vul, 0.3, 1, 1)) == 5
