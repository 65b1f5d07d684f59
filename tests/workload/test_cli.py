"""The command line: help, schedules, and every bad input one line `workload: …` with exit code 2 — including
the root-namespace interlock, run for real here (this test runs in the machine's root namespace) with socket
creation made impossible, so a broken interlock fails the test instead of sending a packet."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testworm import interlocks
from workload import cli

REPO = Path(__file__).resolve().parents[2]
SRV = ["--servers", "198.18.201.2", "198.18.201.3"]
RUN = ["run", *SRV, "--allow", "198.18.201.0/24", "--rate", "5", "--duration", "1"]


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_every_verb():
    r = subprocess.run([sys.executable, "-m", "workload", "--help"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0
    for word in ("serve", "schedule", "run", "analyse", "--allow is required", "root network namespace",
                 "same seed gives", "Exit codes"):
        assert word in r.stdout
    r = subprocess.run([sys.executable, "-m", "workload", "run", "--help"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "--trace-source" in r.stdout and "--burst" in r.stdout


def test_schedule_prints_a_replayable_csv_and_a_summary(capsys, tmp_path):
    code, out, _ = run(["schedule", *SRV, "--rate", "4", "--duration", "1", "--arrivals", "periodic"], capsys)
    assert code == 0
    assert out.splitlines()[0] == "time,destination,protocol,port" and len(out.splitlines()) == 5
    (tmp_path / "t.csv").write_text(out)
    code, again, _ = run(["schedule", *SRV, "--trace", str(tmp_path / "t.csv")], capsys)
    assert code == 0 and again == out
    code, out, _ = run(["schedule", *SRV, "--rate", "4", "--duration", "1", "--format", "summary"], capsys)
    s = json.loads(out)
    assert code == 0 and len(s["fingerprint"]) == 64 and s["params"]["popularity"] == "zipf"


@pytest.mark.parametrize("argv, message", [
    (["schedule", *SRV, "--rate", "0", "--duration", "1"], "--rate 0 out of range (must be > 0 and <= 10000)"),
    (["schedule", *SRV, "--rate", "nan", "--duration", "1"], "--rate must be finite, not nan"),
    (["schedule", *SRV, "--duration", "1"], "--rate is required (new connections per second), or give --trace"),
    (["schedule", *SRV, "--rate", "1", "--duration", "7200"], "--duration 7200 out of range (must be > 0 and <= 3600)"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--burst", "0"], "--burst 0 out of range (must be >= 1 and <= 100)"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--popularity", "pareto"],
     "--popularity 'pareto': expected one of zipf, uniform"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--udp-fraction", "1.5"],
     "--udp-fraction 1.5 out of range (must be >= 0 and <= 1)"),
    (["schedule", "--servers", "198.18.201.2", "198.18.201.2", "--rate", "1", "--duration", "1"],
     "--servers: 198.18.201.2 is given twice"),
    (["schedule", "--servers", "example.com", "--rate", "1", "--duration", "1"], "not an IPv4 address: 'example.com'"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--format", "xml"], "--format 'xml': expected one of csv, jsonl, summary"),
    (["schedule", *SRV, "--trace", "/nonexistent.csv"], "cannot read trace /nonexistent.csv: No such file or directory"),
    (["run", *SRV, "--rate", "1", "--duration", "1", "--log", "x"],
     "--allow is required: the CIDRs the workload may connect to"),
    (["run", *SRV, "--allow", "198.18.202.0/24", "--rate", "1", "--duration", "1", "--log", "x"],
     "servers: 198.18.201.2 is not inside the allow-list 198.18.202.0/24"),
    (["run", "--servers", "10.0.0.1", "--allow", "10.0.0.0/8", "--rate", "1", "--duration", "1", "--log", "x"],
     "the allow-list reaches 10.0.0.0, outside the lab ranges 198.18.0.0/15"),
    (["run", *SRV, "--allow", "198.18.201.0/24", "--lab-ranges", "192.168.0.0/16", "--rate", "1", "--duration", "1",
      "--log", "x"], "lab range 192.168.0.0/16 reaches 192.168.0.0, outside the blocks a lab may use (198.18.0.0/15)"),
    ([*RUN, "--log", "x", "--timeout", "0"], "--timeout 0 out of range (must be > 0 and <= 60)"),
    ([*RUN, "--log", "x", "--max-in-flight", "100000"], "--max-in-flight 100000 out of range (must be >= 1 and <= 4096)"),
    (["serve", "--log", "x"], "serve: give --tcp ADDR:PORT and/or --udp ADDR:PORT"),
    (["serve", "--tcp", "8.8.8.8:80", "--log", "x"], "8.8.8.8 is outside the lab ranges 198.18.0.0/15"),
    (["serve", "--tcp", "198.18.201.2", "--log", "x"], "expected ADDR:PORT, not '198.18.201.2'"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--miss", "0.1"],
     "--miss needs --stale: the addresses without a server that missed connections go to"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--miss", "1.5", "--stale", "198.18.201.9"],
     "--miss 1.5 out of range (must be >= 0 and <= 1)"),
    (["schedule", *SRV, "--rate", "1", "--duration", "1", "--miss", "0.1", "--stale", SRV[1]],
     f"--stale: {SRV[1]} is a server's address or given twice"),
    ([*RUN, "--log", "x", "--miss", "0.5", "--stale", "198.18.202.9"],
     "servers: 198.18.202.9 is not inside the allow-list 198.18.201.0/24"),
    (["analyse", "--log", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl: No such file or directory"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(argv, capsys)
    assert (code, out, err) == (2, "", f"workload: {message}\n")


def test_an_unknown_verb(capsys):
    code, out, err = run(["frobnicate"], capsys)
    assert code == 2 and out == "" and err.startswith("workload: argument cmd: invalid choice: 'frobnicate'")


def test_a_trace_error_names_its_line(capsys, tmp_path):
    (tmp_path / "t.csv").write_text("time,destination,protocol,port\n0,0,tcp,80\n0.1,0,tcp,x\n")
    code, _, err = run(["schedule", *SRV, "--trace", str(tmp_path / "t.csv")], capsys)
    assert (code, err) == (2, f"workload: {tmp_path}/t.csv line 3: port 'x' is not 1 … 65535\n")
    code, _, err = run(["schedule", *SRV, "--trace", str(tmp_path / "t.csv"), "--rate", "1"], capsys)
    assert (code, err) == (2, "workload: --trace replays a trace: --rate and --duration do not apply\n")


@pytest.fixture
def no_sockets(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a socket was created before the interlock refused")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_run_and_serve_refuse_the_root_namespace(capsys, tmp_path, no_sockets):
    env = interlocks.read_environment(probe=False)
    if env.own_netns is None or env.own_netns not in env.root_netns:
        pytest.skip("not in the machine's root network namespace")
    code, out, err = run([*RUN, "--log", str(tmp_path / "run.jsonl")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("workload: refusing to run outside a lab: this is the machine's root network namespace")
    assert not (tmp_path / "run.jsonl").exists()
    code, _, err = run(["serve", "--tcp", "198.18.201.2:8080", "--log", str(tmp_path / "s.jsonl")], capsys)
    assert code == 2 and "this is the machine's root network namespace" in err
    assert not (tmp_path / "s.jsonl").exists()


def test_analyse_prints_the_summary_and_writes_rows(capsys, tmp_path):
    log = tmp_path / "run.jsonl"
    recs = [{"event": "start", "t_mono": 1.0, "t_wall": 2.0, "connections": 2},
            {"event": "conn", "i": 0, "t_mono": 10.001, "t_wall": 0, "due_mono": 10.0, "due_wall": 100.0,
             "t_established_mono": 10.002, "t_answer_mono": 10.003, "src": "198.18.201.1", "sport": 1,
             "dst": "198.18.201.2", "dport": 8080, "protocol": "tcp", "outcome": "ok"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    code, out, _ = run(["analyse", "--log", str(log), "--rows", str(tmp_path / "rows.csv")], capsys)
    s = json.loads(out)
    assert code == 0 and (s["connections"], s["scheduled"], s["not_logged"], s["ok"]) == (1, 2, 1, 1)
    assert s["delay_established_s"]["max"] == pytest.approx(0.002)
    assert (tmp_path / "rows.csv").read_text().splitlines()[0].startswith("i,t_sched,protocol,dst,dport,outcome")
