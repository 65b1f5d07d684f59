"""The command line: bad input is one line and exit code 2 (never a traceback), profiles fill in values, and
the parameters a server hands its scanner survive the trip through argv and through a trigger."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.testworm.test_interlocks import ROUTE_ROOT
from testworm import cli, interlocks
from testworm import params as P
from testworm.addrs import AddressSet
from testworm.errors import WormError
from testworm.interlocks import Environment, parse_route_table
from testworm.scanner import wire_params
from testworm.server import params_argv

BASE = ["scan", "--port", "7000", "--allow", "198.18.201.0/24", "--log", "LOG"]


def run(capsys, argv, tmp_path=None):
    argv = [a.replace("LOG", str(tmp_path / "scan.jsonl")) if tmp_path else a for a in argv]
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("extra, message", [
    (["--rate", "0"], "--rate 0 out of range (must be > 0 and <= 100000)"),
    (["--rate", "-5"], "--rate -5 out of range"),
    (["--rate", "nan"], "--rate must be finite, not nan"),
    (["--rate", "inf"], "--rate must be finite, not inf"),
    (["--rate", "1e9"], "--rate 1e+09 out of range"),
    (["--rate", "fast"], "--rate must be a number, not 'fast'"),
    (["--rate", "10", "--targets", ""], "--targets is empty"),
    (["--rate", "10", "--targets", "198.18.201.0/33"], "malformed CIDR '198.18.201.0/33'"),
    (["--rate", "10", "--targets", "garbage"], "malformed CIDR 'garbage'"),
    (["--rate", "10", "--targets", "198.18.202.0/24"], "--targets: 198.18.202.0 is not inside the allow-list"),
    (["--rate", "10", "--allow", "8.8.8.0/24"], "the allow-list reaches 8.8.8.0, outside the lab ranges"),
    (["--rate", "10", "--allow", "2001:db8::/64"], "malformed CIDR '2001:db8::/64'"),
    (["--rate", "10", "--lab-ranges", "0.0.0.0/0"], "outside the blocks a lab may use"),
    (["--rate", "10", "--strategy", "zigzag"], "unknown strategy 'zigzag'"),
    (["--profile", "iloveyou-like"], "unknown profile 'iloveyou-like' (choose one of blaster-like"),
    (["--rate", "10", "--protocol", "icmp"], "unknown protocol 'icmp'"),
    (["--rate", "10", "--port", "70000"], "--port 70000 out of range"),
    (["--rate", "10", "--lifetime", "0"], "--lifetime 0 out of range"),
    (["--rate", "10", "--lifetime", "86400"], "--lifetime 86400 out of range"),
    (["--rate", "10", "--max-attempts", "0"], "--max-attempts 0 out of range"),
    (["--rate", "10", "--max-attempts", "2.5"], "--max-attempts must be a whole number"),
    (["--rate", "10", "--local-weights", "1,2"], "--local-weights must be three non-negative numbers"),
    (["--rate", "10", "--strategy", "hit-list"], "strategy hit-list needs --hit-list"),
    (["--rate", "10", "--start", "198.18.202.1"], "--start 198.18.202.1 is not one of the targets"),
    (["--rate", "10", "--key", "/nonexistent/key"], "cannot read key file /nonexistent/key"),
    (["--rate", "10", "--generation", "5", "--max-generations", "2"], "generation 5 is beyond the bound"),
    (["--rate", "10", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, extra, message):
    code, out, err = run(capsys, BASE + extra, tmp_path)  # a repeated option: the last one counts
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("testworm: ") and "Traceback" not in err
    assert not (tmp_path / "scan.jsonl").exists()


def test_missing_required_option(capsys):
    code, _, err = run(capsys, ["scan", "--rate", "1", "--port", "1", "--allow", "198.18.0.0/24"])
    assert (code, err) == (2, "testworm: the following arguments are required: --log\n")


def test_server_and_client_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, ["server", "--listen", "nowhere", "--key", "k", "--state-dir", str(tmp_path)])
    assert (code, err) == (2, "testworm: expected ADDR:PORT, not 'nowhere'\n")
    code, _, err = run(capsys, ["kill", "192.0.2.1:7000", "--key", "k"])
    assert code == 2 and "192.0.2.1 is outside the lab ranges 198.18.0.0/15" in err
    code, _, err = run(capsys, ["trigger", "198.18.201.2:7000", "--key", "k", "--rate", "-1"])
    assert code == 2 and "--rate -1 out of range" in err


def test_refused_in_the_root_namespace_before_any_socket_exists(capsys, tmp_path, monkeypatch):
    root_like = Environment(own_netns=(4, 1), root_netns=[(4, 1)], lab_guest=False,
                            routes_v4=parse_route_table(ROUTE_ROOT, "little"), defaults_v6=[])
    monkeypatch.setattr(interlocks, "read_environment", lambda probe=True: root_like)
    made = []

    class NoSockets(socket.socket):
        def __init__(self, *a, **k):
            made.append(a)
            raise AssertionError("a socket was created before the interlock refused")
    monkeypatch.setattr(socket, "socket", NoSockets)
    code, _, err = run(capsys, ["scan", "--rate", "10", "--port", "7000", "--allow", "198.18.201.0/24",
                                "--log", str(tmp_path / "x.jsonl")])
    assert code == 2
    assert err.startswith("testworm: refusing to run outside a lab: this is the machine's root network namespace")
    assert made == [] and not (tmp_path / "x.jsonl").exists()


def test_profiles_fill_in_and_explicit_values_win():
    p = P.resolve({"profile": "slammer-like", "allow": ["198.18.0.0/16"]})
    assert (p.protocol, p.port, p.rate, p.strategy, p.udp_size) == ("udp", 1434, 4000.0, "random", 376)
    p = P.resolve({"profile": "slammer-like", "allow": ["198.18.0.0/16"], "rate": "20", "port": 7000})
    assert (p.rate, p.port) == (20.0, 7000)
    cr = P.resolve({"profile": "codered2-like", "allow": ["198.18.0.0/16"]})
    assert cr.local_weights == (0.375, 0.5, 0.125) and cr.max_in_flight == 300
    bl = P.resolve({"profile": "blaster-like", "allow": ["198.18.0.0/16"]})
    assert (bl.start, bl.burst, bl.port) == ("blaster", 20, 135)
    for name in ("nimda-like", "codered2-like", "blaster-like", "slammer-like"):
        P.resolve({"profile": name, "allow": ["198.18.0.0/16"]})


def test_params_survive_argv_and_the_wire():
    raw = {"rate": "123.456", "port": 7000, "allow": ["198.18.0.0/16"], "targets": ["198.18.8.0/22"],
           "strategy": "local-preference", "seed": 42, "local_weights": "3,1,1", "burst": 2,
           "max_attempts": 77, "lifetime_s": 12.5, "connect_timeout_s": 0.75, "max_in_flight": 9,
           "generation": 1, "max_generations": 4, "start": "self", "profile": "nimda-like"}
    p = P.resolve(raw)
    a = cli.build_parser().parse_args(["scan", *params_argv(p.to_dict()), "--log", "-"])
    assert P.resolve(cli._raw_params(a)) == p
    # a trigger carries wire_params; the server adds what it decides (generation, lab ranges)
    again = P.resolve({**wire_params(p), "generation": 1, "lab_ranges": ["198.18.0.0/15"]})
    assert again == p
    hl = P.resolve({"rate": 1, "port": 1, "allow": ["198.18.0.0/16"], "strategy": "hit-list",
                    "hit_list": ["198.18.0.9", "198.18.0.3"]})
    assert hl.targets == AddressSet.from_cidrs(["198.18.0.3/32", "198.18.0.9/32"])
    a = cli.build_parser().parse_args(["scan", *params_argv(hl.to_dict()), "--log", "-"])
    assert P.resolve(cli._raw_params(a)) == hl


def test_hit_list_from_a_file(tmp_path):
    f = tmp_path / "hits"
    f.write_text("# the hit list\n198.18.0.9\n198.18.0.3  # second\n\n")
    a = cli.build_parser().parse_args(["scan", "--hit-list", f"@{f}", "--log", "-"])
    assert cli._raw_params(a)["hit_list"] == ["198.18.0.9", "198.18.0.3"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats()
    | st.text(max_size=20) | st.sampled_from(["198.18.0.0/16", "198.18.1.1", "tcp", "udp", "random", "self",
                                             "nimda-like", "1,1,1", "1e400"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(P.KEYS), json_values, max_size=8))
def test_any_wire_params_are_accepted_or_refused_never_crash(raw):
    # what a server does with the params of an authenticated trigger
    raw = {**raw, "allow": raw.get("allow", ["198.18.0.0/16"])}
    try:
        p = P.resolve(raw)
    except WormError:
        return
    # whatever was accepted nests inside the benchmark block: targets ⊆ allow ⊆ lab ranges ⊆ 198.18.0.0/15
    bench = AddressSet.from_cidrs(["198.18.0.0/15"])
    assert p.lab_ranges.outside(bench) is None
    assert p.allow.outside(p.lab_ranges) is None and p.targets.outside(p.allow) is None


def test_huge_numbers_are_refused_not_crashed(capsys):
    code, _, err = run(capsys, ["scan", "--rate", "9" * 400, "--port", "1", "--allow", "198.18.0.0/24",
                                "--log", "-"])
    assert (code, err) == (2, "testworm: --rate out of range\n")


def test_a_hit_list_file_is_read_bounded(capsys, tmp_path):
    """Binary, endless or huge hit-list files are one line and exit 2, never read whole or hung on."""
    garbage, fifo, big = tmp_path / "garbage", tmp_path / "fifo", tmp_path / "big"
    garbage.write_bytes(b"198.18.201.5\n\xf5\xb1 \n")
    os.mkfifo(fifo)
    with open(big, "wb") as fh:
        fh.truncate(50_000_000)
    for path, message in ((garbage, f"hit list {garbage} is not UTF-8 text (byte 0xf5 at offset 13)"),
                          (fifo, f"hit list {fifo} is not a regular file"),
                          (Path("/dev/zero"), "hit list /dev/zero is not a regular file"),
                          (big, f"hit list {big} is larger than 1,048,576 bytes (1024 addresses at most)")):
        code, _, err = run(capsys, BASE + ["--rate", "10", "--strategy", "hit-list", "--hit-list", f"@{path}"],
                           tmp_path)
        assert (code, err) == (2, f"testworm: {message}\n")
    (tmp_path / "ok").write_text("198.18.201.5  # a comment\n\n198.18.201.9\n")
    assert cli._hit_list(["@" + str(tmp_path / "ok"), "198.18.201.7"]) == ["198.18.201.5", "198.18.201.9",
                                                                          "198.18.201.7"]


def test_a_bug_is_one_line_and_debug_shows_its_traceback(capsys, monkeypatch, tmp_path):
    def broken(a):
        raise KeyError("rate")
    monkeypatch.setattr(cli, "cmd_scan", broken)
    line = "testworm: internal error: KeyError: 'rate' (a bug; --debug shows the traceback)\n"
    code, _, err = run(capsys, BASE + ["--rate", "10"], tmp_path)
    assert (code, err) == (1, line)
    code, _, err = run(capsys, BASE + ["--rate", "10", "--debug"], tmp_path)
    assert code == 1 and err.startswith("Traceback (most recent call last):") and err.endswith(line)
