"""Through the real command line (`python -m orchestrator.cli`), no root and no lab: labs named by their files,
the two kinds of file told apart, `validate` with every problem at once, the experiment schema, one table of
exit codes, --json everywhere with errors as JSON, --version, -h, examples and no `<bool>` in the help, and
runs found by their directory's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_common import LABS, cli
from tests.results.test_results import make_run, trial

VERBS = ["up", "down", "status", "exec", "check", "schema", "provision", "validate", "analyse", "run", "report",
         "power", "console", "results list", "results show", "results compare", "image build", "image list"]

BAD_LAB = """\
name: bad1
hosts:
  admin-server: {role: admin-server, colour: red}
  blade: {role: blade, addresses: {admin: 198.18.1.9}}
  target1: {role: target, addresses: {admin: 198.18.1.9}}
  sniffer: {role: sniffer}
  sniffer2: {role: sniffer, memory_mib: 1}
"""


def nothing_made(state: Path) -> bool:
    return not (state / "labs").exists()


@pytest.mark.parametrize("args, lab", [
    (["down", str(LABS / "stopping-speed.yaml")], "stopping-speed"),
    (["down", str(LABS / "demo-sweep.yaml")], "stopping-speed"),        # an experiment file: its lab's name
    (["down", "no-such-lab"], "no-such-lab"),
    (["status", str(LABS / "stopping-speed.yaml")], "stopping-speed"),
    (["status", "no-such-lab"], "no-such-lab"),
    (["check", str(LABS / "paper-testbed.yaml")], "paper-testbed"),
    (["check", "no-such-lab"], "no-such-lab"),
    (["exec", str(LABS / "stopping-speed.yaml"), "blade", "--", "true"], "stopping-speed"),
    (["exec", "no-such-lab", "blade", "--", "true"], "no-such-lab"),
    (["provision", "no-such-lab"], "no-such-lab"),
])
def test_a_lab_not_here_is_exit_3_for_every_verb_named_by_name_or_file(tmp_path, args, lab):
    res = cli(*args, state=tmp_path / "state")
    assert res.returncode == 3, res.stderr
    assert f"no lab named '{lab}'" in res.stderr and "Traceback" not in res.stderr


def test_a_lab_not_here_is_json_with_code_3_under_json(tmp_path):
    for args in (["down", "nolab"], ["status", "nolab"], ["check", "nolab"]):
        res = cli(*args, "--json", state=tmp_path / "state")
        assert res.returncode == 3
        doc = json.loads(res.stdout)
        assert doc["exit_code"] == 3 and doc["error"].startswith("no lab named 'nolab'")
        assert res.stderr == ""


def test_up_refuses_an_experiment_file_with_one_pointer_to_run(tmp_path):
    res = cli("up", str(LABS / "demo-sweep.yaml"), state=tmp_path / "state")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {LABS / 'demo-sweep.yaml'}: 1 problem\n"
                                 "  <top>: this is an experiment file (it has 'experiment:'): run it with "
                                 "`testbed run FILE`")
    assert "unknown key" not in res.stderr and nothing_made(tmp_path / "state")


def test_run_refuses_a_lab_file_with_a_pointer_to_up(tmp_path):
    res = cli("run", str(LABS / "stopping-speed.yaml"), "--out", str(tmp_path / "run"), state=tmp_path / "state")
    assert res.returncode == 2
    assert "this is a lab file (it has 'hosts:' and no 'experiment:'): build it with `testbed up FILE`" in res.stderr
    assert not (tmp_path / "run").exists() and nothing_made(tmp_path / "state")


def test_validate_passes_every_shipped_file_and_builds_nothing(tmp_path):
    files = sorted(LABS.glob("*.yaml"))
    res = cli("validate", *map(str, files), state=tmp_path / "state")
    assert res.returncode == 0, res.stderr
    assert f"{len(files)} of {len(files)} file(s) good" in res.stdout
    assert f"{LABS / 'demo-sweep.yaml'}: ok (experiment: demo-sweep (stopping-speed) on lab stopping-speed: " \
           "8 trial(s), rates 5, 20, 100, 1000/s)" in res.stdout
    assert f"{LABS / 'stopping-speed.yaml'}: ok (lab: stopping-speed (netns): 7 hosts" in res.stdout
    assert nothing_made(tmp_path / "state")


def test_validate_reports_the_parse_and_the_semantic_checks_together(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_LAB)
    res = cli("validate", str(bad), state=tmp_path / "state")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"{bad}: 4 problems",
        "  hosts.admin-server.colour (line 3): unknown key 'colour'; known keys here: role, count, lans, addresses, "
        "image, memory_mib, vcpus, machine",
        "  hosts.sniffer2.memory_mib (line 7): Input should be greater than or equal to 64",
        "  hosts (line 2): at most one sniffer per lab; found sniffer, sniffer2",                # semantic, after
        "  hosts.target1.addresses.admin (line 5): 198.18.1.9 is given to both blade and target1",   # the cuts
    ]
    assert "0 of 1 file(s) good" in res.stdout and nothing_made(tmp_path / "state")


def test_a_cut_host_does_not_make_up_role_problems(tmp_path):
    bad = tmp_path / "bad.yaml"          # the only admin-server has a bad role value: it is cut, not "missing"
    bad.write_text("name: cut\nhosts:\n  admin-server: {role: admin-servr}\n  blade: {role: blade}\n")
    res = cli("validate", str(bad), state=tmp_path / "state")
    assert res.returncode == 2
    assert "unknown role 'admin-servr'" in res.stderr and "exactly one admin-server" not in res.stderr


def test_validate_reports_an_experiment_and_its_lab_together(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(BAD_LAB)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"experiment: e\nlab: {lab}\nworm: {{scan: 198.18.9.0/24, speed: 3}}\nrates: [0]\n")
    res = cli("validate", str(exp), "--json", state=tmp_path / "state")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["files"][0]["kind"] == "experiment"
    where = [(p["file"], p["where"]) for p in doc["files"][0]["problems"]]
    assert (str(exp), "worm.speed (line 3)") in where and (str(exp), "rates.0 (line 4)") in where
    assert (str(lab), "hosts (line 2)") in where and len([w for w in where if w[0] == str(lab)]) == 4


def test_run_reports_an_experiment_and_its_lab_together(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(BAD_LAB)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"experiment: e\nlab: {lab}\nworm: {{scan: 198.18.9.0/24}}\nrates: [0]\n")
    res = cli("run", str(exp), "--out", str(tmp_path / "run"), state=tmp_path / "state")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {exp}: 1 problem\n  rates.0 (line 4): rate 0.0 is not a usable scan rate")
    assert f"\n{lab}: 4 problems\n" in res.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, where", [
    (["--rates", "0"], "--rates: rate 0.0 is not a usable scan rate"),
    (["--repeat", "0"], "--repeat: Input should be greater than or equal to 1"),
    (["--rates", "fast"], "--rates takes numbers separated by commas"),
])
def test_bad_overrides_are_exit_2_as_json_too(tmp_path, args, where):
    res = cli("run", str(LABS / "demo-sweep.yaml"), *args, "--json", "--out", str(tmp_path / "run"),
              state=tmp_path / "state")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2 and where in doc["error"] and not (tmp_path / "run").exists()


def test_usage_errors_are_exit_2_and_json_under_json(tmp_path):
    res = cli("status", "--bogus", state=tmp_path / "state")
    assert res.returncode == 2 and "No such option: --bogus" in res.stderr
    res = cli("status", "--json", "--bogus", state=tmp_path / "state")
    assert res.returncode == 2 and json.loads(res.stdout) == {"error": "No such option: --bogus", "hint": None,
                                                              "exit_code": 2}
    res = cli("down", "--json", state=tmp_path / "state")          # neither a name nor --all
    assert res.returncode == 2 and "give a lab name or --all" in json.loads(res.stdout)["error"]


def test_schema_of_lab_and_experiment_files():
    lab = json.loads(cli("schema", state=Path("/nonexistent")).stdout)
    exp = cli("schema", "--experiment", state=Path("/nonexistent"))
    assert exp.returncode == 0
    doc = json.loads(exp.stdout)
    assert lab["title"] == "worm-testbed lab file" and "hosts" in lab["properties"]
    assert doc["title"] == "worm-testbed experiment file"
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"experiment", "lab", "rates"} <= set(doc["required"])      # worm: every kind but benign (checked)
    assert {"worm", "benign"} <= set(doc["properties"])
    assert doc["properties"]["rates"]["minItems"] == 1


def test_version_help_and_the_exit_code_table(tmp_path):
    from importlib.metadata import version

    res = cli("--version", state=tmp_path)
    assert res.returncode == 0 and res.stdout == f"worm-testbed {version('worm-testbed')}\n"
    top = cli("-h", state=tmp_path)
    assert top.returncode == 0
    text = " ".join(top.stdout.split())
    assert "Exit codes (every verb): 0 ok; 1 a failure; 2 bad input or usage; 3 not found; 130 interrupted" in text


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_h_examples_and_no_bool_noise(tmp_path, verb):
    res = cli(*verb.split(), "-h", state=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Examples:" in res.stdout and "<bool>" not in res.stdout
    if verb != "console":                                         # interactive: nothing to print as JSON
        assert "--json" in res.stdout


def test_results_show_finds_a_run_by_its_directory_name_and_exit_3_when_none(tmp_path):
    from orchestrator.results.index import Index

    run = make_run(tmp_path / "results" / "demo-20261201-190105", [trial("tcp", 20, 1, 5.25, 5)],
                   run_id="demo-sweep-20261201-190105-ab12")
    idx = Index(tmp_path / "i.sqlite")
    idx.record(run)
    idx.close()
    for ref in ("demo-20261201-190105", "demo-sweep-2026", str(run.path)):
        res = cli("results", "show", ref, "--index", str(tmp_path / "i.sqlite"), "--json", state=tmp_path)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["manifest"]["run_id"] == "demo-sweep-20261201-190105-ab12"
    res = cli("results", "show", "nothing-like-it", "--index", str(tmp_path / "i.sqlite"), state=tmp_path)
    assert res.returncode == 3 and "no run 'nothing-like-it'" in res.stderr


def test_report_out_writes_elsewhere_and_says_where_as_json(tmp_path):
    run = make_run(tmp_path / "r", [trial("tcp", 20, 1, 5.25, 5), trial("udp", 20, 1, 5.25, 5)])
    res = cli("report", str(run.path), "--out", str(tmp_path / "paper"), "--json", state=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["html"] == str(tmp_path / "paper" / "report.html")
    assert (tmp_path / "paper" / "report.md").is_file() and (tmp_path / "paper" / "plots").is_dir()
    assert not (run.path / "report.html").exists()


def test_results_compare_writes_a_side_by_side_report_with_both_curves(tmp_path):
    from orchestrator.results.index import Index

    base = make_run(tmp_path / "base-run", [trial("tcp", 20, 1, 5.25, 5), trial("tcp", 100, 1, 1.0, 0)],
                    run_id="exp-20261201-000000-aaaa")
    new = make_run(tmp_path / "new-run", [trial("tcp", 20, 1, 6.5, 7), trial("tcp", 100, 1, 1.0, 0)],
                   run_id="exp-20261202-000000-bbbb", seed=2)
    idx = Index(tmp_path / "i.sqlite")
    idx.record(base)
    idx.record(new)
    idx.close()
    res = cli("results", "compare", "base-run", "new-run", "--index", str(tmp_path / "i.sqlite"),
              "--report", str(tmp_path / "cmp"), state=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"side-by-side report: {tmp_path / 'cmp' / 'compare.html'} (and compare.md)" in res.stdout
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| tcp | 20 | 5.250 | 6.500 | 5 | 7 | yes → yes | regression | stopping time 5.250 s → 6.500 s; " \
           "attempts out before the block 5 → 7 |" in md
    assert "1 regression(s) beyond a tolerance of 10%, 2 row(s) compared." in md
    assert "- `seed`: 1 → 2" not in md            # the manifest's seed is not the experiment's
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "base run base-run (circles, dashed)" in page
    assert (tmp_path / "cmp" / "plots" / "compare-stopping-time.png").stat().st_size > 5000


def test_a_refused_kind_is_not_judged_by_its_default(tmp_path):
    exp = tmp_path / "exp.yaml"            # kind refused: its default (stopping-speed) must not demand a throttle
    exp.write_text(f"experiment: e\nkind: basline\nlab: {LABS / 'stopping-speed.yaml'}\nthrottle: none\n"
                   "worm: {scan: 198.18.9.0/24}\nrates: [5]\n")
    res = cli("validate", str(exp), state=tmp_path / "state")
    assert res.returncode == 2
    assert f"{exp}: 1 problem\n  kind (line 2): Input should be 'stopping-speed', 'baseline', 'benign' or 'spread'" in res.stderr
    assert "needs a throttle" not in res.stderr


@pytest.mark.parametrize("verb", ["validate", "run"])
@pytest.mark.parametrize("kind", ["stopping-speed", "baseline", None])
def test_every_kind_but_benign_without_a_worm_is_exit_2_naming_worm(tmp_path, verb, kind):
    exp = tmp_path / "exp.yaml"            # worm: is optional in the model (kind: benign has none): checked after
    head = f"kind: {kind}\n" if kind else ""
    exp.write_text(f"experiment: e\n{head}lab: {LABS / 'stopping-speed.yaml'}\nrates: [5]\n")
    res = cli(verb, str(exp), state=tmp_path / "state")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{exp}: 1 problem\n  worm: Field required (every kind but benign runs a worm)" in res.stderr
    assert nothing_made(tmp_path / "state")


def test_a_refused_kind_without_a_worm_is_judged_on_its_kind_alone(tmp_path):
    exp = tmp_path / "exp.yaml"            # kind refused: whether it needs a worm is not known
    exp.write_text(f"experiment: e\nkind: benigh\nlab: {LABS / 'stopping-speed.yaml'}\nrates: [5]\n")
    res = cli("validate", str(exp), state=tmp_path / "state")
    assert res.returncode == 2 and f"{exp}: 1 problem\n  kind (line 2): Input should be" in res.stderr
    assert "worm" not in res.stderr
