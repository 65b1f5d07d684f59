"""Through the real command line: hostile files and bad overrides are exit 2 with file, place and reason and
build nothing; an unexpected exception is one line with a pointer to --debug, which shows the traceback."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from orchestrator.cli import common
from orchestrator.providers.netns import namespaces

REPO = Path(__file__).resolve().parents[2]
LABS = REPO / "labs"


def cli(*args: str, state: Path, extra: list[str] | None = None, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    argv = extra if extra is not None else ["-m", "orchestrator.cli"]
    return subprocess.run([sys.executable, *argv, *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "TESTBED_STATE_DIR": str(state), "COLUMNS": "200", **(env or {})})


@pytest.fixture
def files(tmp_path):
    bomb = ["name: bomb", "a0: &a0 [" + ",".join(["lol"] * 9) + "]"]
    bomb += [f"a{k}: &a{k} [{','.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 7)]
    garbage = random.Random(1).randbytes(4096)
    out = {"bomb": "\n".join(bomb) + "\nhosts: {h: {role: blade, lans: *a6}}\n",
           "deep": "name: deep\nhosts: " + "[" * 3000 + "]" * 3000 + "\n",
           "garbage": garbage}
    paths = {}
    for name, data in out.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_bytes(data.encode() if isinstance(data, str) else data)
    paths["exp-garbage-lab"] = tmp_path / "exp-garbage-lab.yaml"
    paths["exp-garbage-lab"].write_text(f"experiment: t\nlab: {paths['garbage']}\nworm: {{scan: 198.18.9.0/24}}\n"
                                        "rates: [5]\n")
    return paths


@pytest.mark.parametrize("case, where_reason", [
    ("bomb", "line 6, column 30: more than 50,000 YAML nodes with alias *a3"),
    ("deep", "line 2, column 1007: not valid YAML: exceeded maximum nesting depth"),
    ("garbage", "line 1, column 1: not UTF-8 text (byte 0xf5 at offset 0)"),
])
def test_up_with_a_hostile_file_is_exit_2_and_builds_nothing(tmp_path, files, case, where_reason):
    before = namespaces.list_netns()
    res = cli("up", str(files[case]), state=tmp_path / "state")
    assert res.returncode == 2, res.stderr
    assert res.stderr == f"error: {files[case]}: 1 problem\n  {where_reason}" + res.stderr.split(where_reason)[1]
    assert res.stderr.count("\n") == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "state" / "labs").exists() and namespaces.list_netns() == before


@pytest.mark.parametrize("case, args, expected", [
    ("exp-garbage-lab", [], "error: {lab}: 1 problem\n  line 1, column 1: not UTF-8 text"),
    (None, ["--rates", "0,1e9"], "error: command line: 2 problems\n"
                                 "  --rates: rate 0.0 is not a usable scan rate (0 < rate ≤ 20000 per second)\n"
                                 "  --rates: rate 1000000000.0 is not a usable scan rate (0 < rate ≤ 20000 per "
                                 "second)\n"),
    (None, ["--repeat", "0"], "error: command line: 1 problem\n  --repeat: Input should be greater than or equal "
                              "to 1\n"),
])
def test_run_refuses_bad_files_and_overrides_before_anything(tmp_path, files, case, args, expected):
    path = files[case] if case else LABS / "demo-sweep.yaml"
    res = cli("run", str(path), *args, "--out", str(tmp_path / "run"), "--index", str(tmp_path / "i.sqlite"),
              state=tmp_path / "state")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(expected.format(path=path, lab=files["garbage"])), res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "state" / "labs").exists()


def test_schema_still_prints(tmp_path):
    res = cli("schema", state=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["title"] == "worm-testbed lab file"


# a bug, on purpose: the lab listing raises something nobody anticipated
BUGGY = ["-c", "import sys; from orchestrator import cli\nfrom orchestrator.lab import lifecycle\n"
               "def broken(**kw): raise KeyError('hosts')\n"
               "lifecycle.status_all = broken\nsys.exit(cli.main())"]
LINE = ("error: unexpected KeyError: 'hosts' — a bug in worm-testbed; run it again with --debug for the "
        "traceback\n")


def test_an_unexpected_exception_is_one_line_with_a_pointer_to_debug(tmp_path):
    res = cli("status", state=tmp_path, extra=BUGGY)
    assert (res.returncode, res.stderr) == (1, LINE)


@pytest.mark.parametrize("args, env", [(["status", "--debug"], {}), (["status"], {"TESTBED_DEBUG": "1"})])
def test_debug_shows_the_traceback(tmp_path, args, env):
    res = cli(*args, state=tmp_path, extra=BUGGY, env=env)
    assert res.returncode == 1
    assert res.stderr.startswith("Traceback (most recent call last):\n") and "in broken\n" in res.stderr
    assert res.stderr.endswith("KeyError: 'hosts'\n" + LINE)


def test_debug_after_a_double_dash_belongs_to_the_command(capsys, monkeypatch):
    app = typer.Typer()

    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    @common.handles_errors
    def echo(words: list[str]):
        print(" ".join(words), common.debugging())

    @app.command()
    def other():
        pass

    monkeypatch.setattr(common, "_debug", False)
    assert common.main(app, ["echo", "a", "--", "b", "--debug"]) == 0
    assert capsys.readouterr().out == "a b --debug False\n"
    assert common.main(app, ["echo", "a", "--debug", "--", "b"]) == 0
    assert capsys.readouterr().out == "a b True\n"


@pytest.mark.parametrize("args", [["schema"], ["schema", "--experiment"], ["--debug", "schema"]])
def test_a_reader_that_goes_away_ends_the_verb_quietly(tmp_path, args):
    """`testbed schema | head`: stdout's pipe is closed before the verb writes. Exit 141 (a shell's SIGPIPE
    code), nothing on stderr — not the one line about a bug."""
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], stdout=w_fd, stderr=subprocess.PIPE,
                           text=True, cwd=REPO, timeout=120, env={**os.environ, "TESTBED_STATE_DIR": str(tmp_path)})
    finally:
        os.close(w_fd)
    assert (r.returncode, r.stderr) == (common.READER_GONE, "")

