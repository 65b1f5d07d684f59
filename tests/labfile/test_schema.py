"""The JSON Schemas `testbed schema` and `testbed schema --experiment` print, held against a real validator
(jsonschema) and the project's own loader: the shipped files pass both, and a file broken in one address or
CIDR field fails both, at that field. The patterns are exact, against `ipaddress`."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import SpecError
from orchestrator.experiment.spec import experiment_schema, load_experiment
from orchestrator.labfile.ipv4 import CIDR_PATTERN, IPV4_PATTERN, cidr_notation_problem
from orchestrator.labfile.load import load_lab
from orchestrator.labfile.models import json_schema

LABS = Path(__file__).resolve().parents[2] / "labs"
LAB_SCHEMA = jsonschema.Draft202012Validator(json_schema())
EXPERIMENT_SCHEMA = jsonschema.Draft202012Validator(experiment_schema())


def is_experiment(data: dict) -> bool:
    """What the runner goes by: an experiment file starts with 'experiment: NAME', a lab file has none."""
    return "experiment" in data


# ---------------------------------------------------------------- the patterns, exactly


def ipaddress_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def ipaddress_cidr(text: str) -> bool:
    """ADDRESS/PREFIX: an address ipaddress takes, and a decimal prefix 0–32 without leading zeros — and then
    ipaddress reads the network with that prefix."""
    address, slash, prefix = text.partition("/")
    ok = (bool(slash) and ipaddress_address(address) and prefix.isascii() and prefix.isdigit()
          and prefix == str(int(prefix)) and int(prefix) <= 32)
    if ok:
        assert ipaddress.ip_network(text, strict=False).prefixlen == int(prefix)
    return ok


def matches(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None      # how jsonschema applies `pattern`: a search, not a match


TABLE = [
    # (text, is an address, is a CIDR)
    ("198.18.1.0/24", False, True), ("0.0.0.0/0", False, True), ("255.255.255.255/32", False, True),
    ("198.18.1.0/33", False, False), ("198.18.1.0/-1", False, False), ("198.18.1.0/024", False, False),
    ("198.18.1.0/00", False, False), ("198.18.1.0/", False, False), ("198.18.1.0/255.255.255.0", False, False),
    ("198.18.1.0/0.0.0.255", False, False), ("not-a-cidr", False, False), ("300.1.1.1/24", False, False),
    ("300.1.1.1", False, False), ("256.0.0.0", False, False), ("198.18.1.256", False, False),
    ("198.18.01.0/24", False, False), ("198.18.1.010", False, False), ("198.18.1/24", False, False),
    ("198.18.1.0.0/24", False, False), ("198.18.1.0/24\n", False, False), ("198.18.1.10\n", False, False),
    (" 198.18.1.0/24", False, False), ("198.18.1.0/ 24", False, False), ("fd00::/8", False, False),
    ("١٩٨.18.1.0/24", False, False), ("198.18.1.0/٢٤", False, False), ("", False, False),
    ("198.18.1.10", True, False), ("0.0.0.0", True, False), ("255.255.255.255", True, False),
    ("199.9.99.249", True, False), ("198.18.1.10/32", False, True), ("198.18.1.5/24", False, True),
]


@pytest.mark.parametrize("text,address,cidr", TABLE)
def test_patterns_on_a_table(text, address, cidr):
    assert ipaddress_address(text) is address
    assert ipaddress_cidr(text) is cidr
    assert matches(IPV4_PATTERN, text) is address
    assert matches(CIDR_PATTERN, text) is cidr
    assert (cidr_notation_problem(text) is None) is cidr


def test_patterns_mean_the_same_in_ecma_262():
    """Editors and check-jsonschema read `pattern` as ECMA-262, not Python: node says the same for the table."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: no ECMA-262 regex engine to ask")
    script = ("const [p4, pc, texts] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(texts.map(t => [new RegExp(p4, 'u').test(t), new RegExp(pc, 'u').test(t)])))")
    texts = [t for t, _, _ in TABLE]
    res = subprocess.run([node, "-e", script], input=json.dumps([IPV4_PATTERN, CIDR_PATTERN, texts]),
                         capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(res.stdout) == [[a, c] for _, a, c in TABLE]


def octet(draw) -> str:
    n = draw(st.integers(-1, 300))
    return draw(st.sampled_from([str(n), f"0{n}", f"{n:03d}"]))


@st.composite
def near_cidrs(draw) -> str:
    """Mostly well-formed, often just out of range or with a leading zero; sometimes no prefix or a netmask."""
    address = ".".join(octet(draw) for _ in range(draw(st.sampled_from([4, 4, 4, 3, 5]))))
    tail = draw(st.one_of(st.integers(-1, 40).map(lambda n: f"/{n}"), st.integers(0, 40).map(lambda n: f"/0{n}"),
                          st.just(""), st.just("/255.255.0.0"), st.sampled_from(["\n", " ", "/24\n"])))
    return address + tail


@settings(max_examples=600, deadline=None)
@given(st.one_of(near_cidrs(), st.text(alphabet="0123456789./\n :٢x", max_size=22)))
def test_patterns_agree_with_ipaddress(text):
    assert matches(IPV4_PATTERN, text) is ipaddress_address(text)
    assert matches(CIDR_PATTERN, text) is ipaddress_cidr(text)
    assert (cidr_notation_problem(text) is None) is ipaddress_cidr(text)


# ---------------------------------------------------------------- shipped files


def test_both_schemas_are_valid_json_schemas():
    for schema in (json_schema(), experiment_schema()):
        jsonschema.Draft202012Validator.check_schema(schema)
    assert experiment_schema()["title"] == "worm-testbed experiment file"


@pytest.mark.parametrize("path", sorted(LABS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_files_pass_the_schema_and_the_loader(path):
    data = yaml.safe_load(path.read_text())
    if is_experiment(data):
        assert list(EXPERIMENT_SCHEMA.iter_errors(data)) == []
        assert not list(LAB_SCHEMA.iter_errors(data)) == []      # and the lab schema would not take it
        load_experiment(path, machine_routes=[])
    else:
        assert list(LAB_SCHEMA.iter_errors(data)) == []
        assert not list(EXPERIMENT_SCHEMA.iter_errors(data)) == []
        load_lab(path, machine_routes=[])


def test_the_shipped_set_has_both_kinds():
    kinds = {is_experiment(yaml.safe_load(p.read_text())) for p in LABS.glob("*.yaml")}
    assert kinds == {True, False}


# ---------------------------------------------------------------- broken files: the same verdict, at the same key

BASE_LAB = yaml.safe_load((LABS / "stopping-speed.yaml").read_text())
BASE_EXPERIMENT = {"experiment": "t", "lab": str(LABS / "stopping-speed.yaml"),
                   "worm": {"scan": "198.18.9.0/24"}, "rates": [20]}
CIDR_FIELDS = [("lab", ("lans", "admin", "subnet")), ("lab", ("lans", "management", "subnet")),
               ("lab", ("lans", "experimental", "subnets", "targets")), ("experiment", ("worm", "scan"))]
ADDRESS_FIELDS = [("lab", ("hosts", "blade", "addresses", "admin"))]
BAD_CIDRS = ["198.18.1.0/33", "not-a-cidr", "300.1.1.1/24", "300.1.1.1", "198.18.01.0/24", "198.18.1/24",
             "198.18.1.0", "198.18.1.0/255.255.255.0", "198.18.1.0/024", "198.18.1.0/24\n", "fd00::/8", ""]
BAD_ADDRESSES = ["300.1.1.1", "198.18.1.256", "198.18.1", "198.18.1.010", "198.18.1.10/32", "not-an-address",
                 "198.18.1.10\n", ""]


def file_with(tmp_path: Path, kind: str, key: tuple, value) -> tuple[Path, dict]:
    data = copy.deepcopy(BASE_LAB if kind == "lab" else BASE_EXPERIMENT)
    cur = data
    for part in key[:-1]:
        cur = cur.setdefault(part, {})
    cur[key[-1]] = value
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def deepest(error: jsonschema.ValidationError) -> tuple:
    """Where an error is: a value of a `X | None` field fails an anyOf at the field's parent; its reasons
    (the context) name the value itself."""
    return max([tuple(error.absolute_path), *map(deepest, error.context or [])], key=len)


def verdicts(kind: str, path: Path, data: dict) -> tuple[list[tuple], list[str]]:
    """(the schema's error paths, the loader's problems) for one file."""
    schema = LAB_SCHEMA if kind == "lab" else EXPERIMENT_SCHEMA
    paths = [deepest(e) for e in schema.iter_errors(data)]
    try:
        (load_lab if kind == "lab" else load_experiment)(path, machine_routes=[])
    except SpecError as exc:
        assert exc.exit_code == 2
        return paths, [f"{where}: {why}" for where, why in exc.problems]
    return paths, []


CIDR_REFUSALS = ("is not a valid CIDR", "is not IPv4; lab networks are IPv4")
BROKEN = ([(kind, key, bad, CIDR_REFUSALS) for kind, key in CIDR_FIELDS for bad in BAD_CIDRS]
          + [(kind, key, bad, ("is not a valid IPv4 address",)) for kind, key in ADDRESS_FIELDS for bad in BAD_ADDRESSES])


@pytest.mark.parametrize("kind,key,bad,refusals", BROKEN, ids=[f"{'.'.join(k)}={b!r}" for _, k, b, _ in BROKEN])
def test_a_bad_value_fails_the_schema_and_the_loader_at_its_key(tmp_path, kind, key, bad, refusals):
    path, data = file_with(tmp_path, kind, key, bad)
    schema_paths, problems = verdicts(kind, path, data)
    assert schema_paths == [key]
    dotted = ".".join(key)
    assert any(p.startswith(dotted) and any(r in p for r in refusals) for p in problems), problems


@pytest.mark.parametrize("kind,key,good", [
    ("lab", ("lans", "admin", "subnet"), "198.18.2.0/24"),
    ("lab", ("lans", "experimental", "subnets", "targets"), "198.18.12.0/22"),
    ("lab", ("hosts", "blade", "addresses", "admin"), "198.18.1.200"),
    ("experiment", ("worm", "scan"), "198.18.9.128/25"),
])
def test_a_good_value_passes_both(tmp_path, kind, key, good):
    assert verdicts(kind, *file_with(tmp_path, kind, key, good)) == ([], [])


@pytest.mark.parametrize("kind,key,value,reason", [
    ("lab", ("lans", "admin", "subnet"), "198.18.1.5/24", "has host bits set; did you mean 198.18.1.0/24?"),
    ("lab", ("lans", "admin", "subnet"), "10.1.0.0/24", "is outside 198.18.0.0/15"),
    ("lab", ("lans", "admin", "subnet"), "198.18.1.0/31", "is too small for a LAN"),
    ("lab", ("hosts", "blade", "addresses", "admin"), "198.18.2.1", "is not within the usable addresses"),
    ("experiment", ("worm", "scan"), "198.18.100.0/24", "is not inside the lab's experimental subnets"),
])
def test_what_only_the_loader_refuses_is_well_formed_for_the_schema(tmp_path, kind, key, value, reason):
    """The schema checks the notation; where a network may be (its range, its host bits, its size, its LAN)
    is the loader's to say."""
    schema_paths, problems = verdicts(kind, *file_with(tmp_path, kind, key, value))
    assert schema_paths == []
    assert any(p.startswith(".".join(key)) and reason in p for p in problems), problems


# ---------------------------------------------------------------- the command


def test_testbed_schema_prints_either_schema():
    runner = CliRunner()
    lab = runner.invoke(app, ["schema"])
    experiment = runner.invoke(app, ["schema", "--experiment"])
    assert lab.exit_code == experiment.exit_code == 0
    assert json.loads(lab.stdout) == json_schema()
    assert json.loads(experiment.stdout) == experiment_schema()
    scan = json.loads(experiment.stdout)["$defs"]["WormSpec"]["properties"]["scan"]
    assert scan["pattern"] == CIDR_PATTERN and scan["format"] == "ipv4-cidr"
