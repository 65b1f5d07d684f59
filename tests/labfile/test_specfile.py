"""Hostile lab and experiment files: each refused with exit code 2, file, place and reason, in bounded time and
memory — an alias bomb, deep nesting, binary garbage, a huge file, things that are not files."""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
import tracemalloc
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment.spec import check_overrides, load_experiment
from orchestrator.labfile.load import load_lab
from orchestrator.labfile.specfile import LOADERS, MAX_BYTES, MAX_DEPTH, MAX_NODES, parse_yaml

LABS = Path(__file__).resolve().parents[2] / "labs"
GARBAGE = random.Random(1).randbytes(4096)         # starts with 0xf5: not UTF-8
EXPERIMENT = "experiment: t\nlab: {lab}\nworm: {{scan: 198.18.9.0/24}}\nrates: [20]\n"
LAB = """\
name: t
hosts:
  admin-server: {role: admin-server}
  blade: {role: blade}
"""


def alias_bomb(levels: int = 7, width: int = 9) -> str:
    """Billion laughs: level k is `width` aliases of level k-1 — 9**7 = 4.8 million strings from 370 bytes."""
    lines = ["name: bomb", "a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    lines += [f"a{k}: &a{k} [{','.join([f'*a{k - 1}'] * width)}]" for k in range(1, levels)]
    return "\n".join(lines) + f"\nhosts: {{h: {{role: blade, lans: *a{levels - 1}}}}}\n"


@contextlib.contextmanager
def bounded(seconds: float, mib: float):
    """The block takes less than `seconds` and allocates at most `mib` at its peak (tracemalloc)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert took < seconds, f"took {took:.2f} s"
    assert peak < mib * 2**20, f"peak {peak / 2**20:.1f} MiB"


def refused(path: Path, loader=load_lab) -> SpecError:
    with pytest.raises(SpecError) as exc:
        loader(path, machine_routes=[])
    assert exc.value.exit_code == 2
    return exc.value


def write(tmp_path: Path, data: str | bytes, name: str = "lab.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def test_the_alias_bomb_is_refused_at_once(tmp_path):
    path = write(tmp_path, alias_bomb())
    assert path.stat().st_size == 370
    with bounded(1.0, 10):
        err = refused(path)
    assert err.source == str(path)
    (where, reason), = err.problems
    assert where == "line 6, column 30"          # the alias that takes the count over the limit
    assert reason.startswith(f"more than {MAX_NODES:,} YAML nodes with alias *a3 (keys and values, each alias "
                             "counted as what it repeats)")


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_the_alias_bomb_is_refused_by_either_parser(loader):
    with bounded(1.0, 10), pytest.raises(SpecError) as exc:
        parse_yaml(alias_bomb(), "bomb.yaml", loader=loader)
    assert "YAML nodes with alias *a3" in exc.value.problems[0][1]


def test_the_alias_bomb_as_an_experiment(tmp_path):
    path = write(tmp_path, alias_bomb().replace("name: bomb", "experiment: bomb"), "exp.yaml")
    with bounded(1.0, 10):
        err = refused(path, load_experiment)
    assert err.source == str(path) and "more than 50,000 YAML nodes" in err.problems[0][1]


def test_a_recursive_alias_is_refused(tmp_path):
    err = refused(write(tmp_path, "name: t\nhosts: &h {a: *h}\n"))
    assert err.problems == [("line 2, column 15", "alias *h is inside the node it names (a recursive structure)")]


def test_aliases_and_templates_a_lab_file_can_use(tmp_path):
    """Anchors stay allowed within the count: a list reused, a host template merged with `<<:` and overridden."""
    lab = load_lab(write(tmp_path, """\
        name: t
        hosts:
          admin-server: {role: admin-server}
          blade1: &blade {role: blade, lans: &lans [management, admin, experimental]}
          blade2: {<<: *blade, addresses: {admin: 198.18.1.50}}
          target: {role: target, lans: [admin, experimental]}
          injector: {<<: *blade, role: injector, lans: [admin, experimental]}
          b3: {role: blade, lans: *lans}
        """.replace("        ", "")), machine_routes=[])
    assert lab.host("blade2").role == "blade" and lab.host("blade2").ip("admin") == "198.18.1.50"
    assert lab.host("injector").role == "injector" and lab.host("b3").role == "blade"
    assert [i.segment for i in lab.host("b3").interfaces] == [i.segment for i in lab.host("blade1").interfaces]
    # a mistake inside a template is reported where the template says it
    err = refused(write(tmp_path, LAB + "  tpl: &t {role: blade, colour: red}\n  b2: {<<: *t}\n"))
    assert ("hosts.b2.colour (line 5)", "unknown key 'colour'; known keys here: role, count, lans, addresses, "
            "image, memory_mib, vcpus, machine") in err.problems


@pytest.mark.parametrize("text", [
    "name: deep\nhosts: " + "[" * 3000 + "]" * 3000 + "\n",
    "name: deep\nhosts: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "name: deep\nhosts:\n  " + "- " * 3000 + "x\n",
    "name: deep\nhosts:\n" + "".join(" " * i + "a:\n" for i in range(1, 700)),     # 3,000 would be 4.5 MB
], ids=["flow-lists", "flow-maps", "block-lists", "block-maps"])
def test_deep_nesting_is_refused(tmp_path, text):
    with bounded(2.0, 40):
        err = refused(write(tmp_path, text))
    (where, reason), = err.problems
    assert where.startswith("line ") and ("nesting depth" in reason or f"deeper than {MAX_DEPTH} levels" in reason)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_block_nesting_is_refused_by_either_parser(loader):
    with pytest.raises(SpecError) as exc:
        parse_yaml("- " * 3000 + "x\n", "deep.yaml", loader=loader)
    assert exc.value.problems == [("line 1, column 65", f"nested deeper than {MAX_DEPTH} levels; lab and "
                                                         "experiment files need a handful")]


def test_binary_garbage_as_a_lab_an_experiment_and_an_experiments_lab(tmp_path):
    lab = write(tmp_path, GARBAGE)
    expected = [("line 1, column 1", "not UTF-8 text (byte 0xf5 at offset 0); lab and experiment files are "
                                     "YAML in UTF-8")]
    assert refused(lab).problems == expected
    exp = write(tmp_path, GARBAGE, "exp.yaml")
    assert refused(exp, load_experiment).problems == expected
    exp = write(tmp_path, EXPERIMENT.format(lab=lab), "exp2.yaml")
    err = refused(exp, load_experiment)
    assert err.source == str(lab) and err.problems == expected       # the lab file is named, not the experiment
    bad = write(tmp_path, b"name: t\nhosts: {}\n# caf\xe9\n")
    assert refused(bad).problems[0][0] == "line 3, column 6"


def test_a_50_mb_file_is_refused_by_its_size_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        fh.truncate(50_000_000)                      # sparse: st_size says 50 MB
    with bounded(0.5, 2):
        err = refused(path)
    assert err.problems == [("<top>", f"the file is 50,000,000 bytes; lab and experiment files may be at most "
                                      f"256 KiB ({MAX_BYTES:,} bytes)")]
    write(tmp_path, "name: t\n" + "#" * (MAX_BYTES - 8))          # exactly the limit is fine
    assert "the file is" not in str(refused(tmp_path / "lab.yaml"))


def test_what_is_not_a_regular_file_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)                                  # nobody writes to it: opening it blocking would hang
    with bounded(1.0, 2):
        assert refused(fifo).problems == [("<top>", "not a regular file (a lab or experiment file is read whole)")]
    assert refused(Path("/dev/zero")).problems[0][1].startswith("not a regular file")
    assert refused(tmp_path).problems == [("<top>", "cannot read: Is a directory")]
    exp = write(tmp_path, EXPERIMENT.format(lab="/dev/zero"), "exp.yaml")
    assert refused(exp, load_experiment).problems[0][0] == "lab (line 2)"


@pytest.mark.parametrize("text, where, reason", [
    ("name: a\x00b\n", "line 1, column 8", "not valid YAML: "),
    ("name: t\nhosts: \x07\n", "line 2, column 8", "not valid YAML: "),
    ("name: t\nhosts: {a: [}\n", "line 2, column 13", "not valid YAML: "),
    ("name: t\n---\nname: u\n", "line 2, column 1", "not valid YAML: expected a single document in the stream, "
                                                     "but found another document"),
    ("name: &x t\nhosts: &x {}\n", "line 2, column 8", "not valid YAML: found duplicate anchor 'x' (first on "
                                                       "line 1)"),
    ("name: t\nhosts: *nope\n", "line 2, column 8", "not valid YAML: found undefined alias 'nope'"),
    ("name: !!python/object:os.system t\n", "line 1, column 7", "not valid YAML: could not determine a "
                                                                "constructor for the tag"),
])
def test_malformed_yaml_says_where(tmp_path, text, where, reason):
    (w, r), = refused(write(tmp_path, text)).problems
    assert w == where and r.startswith(reason), (w, r)


@pytest.mark.parametrize("value, reason", [
    ("9" * 5000, "cannot read the value on line 4: Exceeds the limit (4300 digits) for integer string conversion"),
    ("!!timestamp 2020-13-45", "cannot read the value on line 4: month must be in 1..12"),
    ("!!float abc", "cannot read the value on line 4: could not convert string to float: 'abc'"),
])
def test_values_python_cannot_read_are_problems_with_a_key_path(tmp_path, value, reason):
    err = refused(write(tmp_path, LAB.replace("{role: blade}", f"{{role: blade, count: {value}}}")))
    assert ("hosts.blade.count (line 4)", reason) in [(w, r[:len(reason)]) for w, r in err.problems]


def test_many_problems_are_counted_and_long_ones_clipped(tmp_path):
    keys = ", ".join(f"k{i}: 1" for i in range(500))
    err = refused(write(tmp_path, LAB.replace("{role: blade}", f"{{role: blade, {keys}}}")
                        + "  x: {role: " + "q" * 5000 + "}\n"))
    assert len(err.problems) == 501
    text = str(err)
    assert text.startswith(f"{tmp_path / 'lab.yaml'}: 501 problems\n") and text.endswith("\n  … and 401 more")
    assert len(text.splitlines()) == 102
    role = next(r for w, r in err.problems if w.startswith("hosts.x.role"))
    assert re.search(r"q… \(5,0\d\d characters\)$", role) and len(role) < 400


@pytest.mark.parametrize("rates, repeats, problems", [
    ([0], None, [("--rates", "rate 0.0 is not a usable scan rate (0 < rate ≤ 20000 per second)")]),
    ([20, 1e9], None, [("--rates", "rate 1000000000.0 is not a usable scan rate (0 < rate ≤ 20000 per second)")]),
    ([float("nan")], None, [("--rates", "rate nan is not a usable scan rate (0 < rate ≤ 20000 per second)")]),
    ([], None, [("--rates", "List should have at least 1 item after validation, not 0")]),
    (None, 0, [("--repeat", "Input should be greater than or equal to 1")]),
    (None, 101, [("--repeat", "Input should be less than or equal to 100")]),
])
def test_command_line_overrides_are_checked_like_the_file(tmp_path, rates, repeats, problems):
    with pytest.raises(SpecError) as exc:
        check_overrides(rates, repeats)
    assert exc.value.exit_code == 2 and exc.value.source == "command line" and exc.value.problems == problems
    # the same values in a file: the same reasons, with the file's key path and line
    body = EXPERIMENT.format(lab=LABS / "stopping-speed.yaml")
    if rates is not None:
        body = body.replace("rates: [20]", f"rates: {[r if r == r else '.nan' for r in rates]}".replace("'", ""))
    if repeats is not None:
        body += f"repeats: {repeats}\n"
    err = refused(write(tmp_path, body, "exp.yaml"), load_experiment)
    assert [r for _, r in err.problems] == [r for _, r in problems]


def test_usable_overrides_pass():
    check_overrides([5, 20000], 100)
    check_overrides(None, None)


def test_a_key_that_looks_like_a_pydantic_tag_is_named(tmp_path):
    """Found by the fuzz test: a top-level key 'A' (capitalised, like the union tags pydantic puts into error
    paths) was dropped from the path, and the unknown-key message then raised IndexError."""
    err = refused(write(tmp_path, "A: 1\nName: t\n" + LAB.split("\n", 1)[1]))
    assert ("A (line 1)", "unknown key 'A'; known keys here: name, description, provider, lans, hosts, "
            "libvirt, netns") in err.problems
    assert any(w == "Name (line 2)" for w, _ in err.problems)
    exp = write(tmp_path, EXPERIMENT.format(lab=LABS / "stopping-speed.yaml") + "ThrottleSpec: 1\n", "e.yaml")
    assert any(w.startswith("ThrottleSpec (line 5)") for w, _ in refused(exp, load_experiment).problems)
