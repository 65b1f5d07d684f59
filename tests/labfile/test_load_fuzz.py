"""Fuzzing both loaders — lab files and experiment files — with random bytes, random YAML-ish text and random
YAML documents made of the files' own vocabulary (with shared parts, so anchors and aliases): every input is
either a valid file or a SpecError with exit code 2, never another exception, in bounded time and memory."""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.experiment.spec import load_experiment
from orchestrator.labfile.load import load_lab

LABS = Path(__file__).resolve().parents[2] / "labs"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(FUZZ, max_examples=30)     # documents cost more to make than to refuse
SECONDS, MIB = 2.0, 64                     # generous: a refusal takes milliseconds and a few hundred KiB

KEYS = ["name", "hosts", "role", "lans", "addresses", "subnet", "subnets", "count", "provider", "management",
        "admin", "experimental", "experimental.a", "blade", "target", "gateway", "sniffer", "injector",
        "admin-server", "libvirt", "image", "experiment", "lab", "worm", "rates", "repeats", "throttle",
        "placement", "scan", "protocols", "kind", "state", "infected", "timeout_s", "<<"]
SCALARS = st.one_of(
    st.sampled_from(KEYS), st.sampled_from(["198.18.1.0/24", "198.18.8.0/22", "198.18.1.7", "10.0.0.0/8",
                                            "tcp", "udp", "host", "none", "baseline", "", "0/0"]),
    st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=12), st.just(str(LABS / "stopping-speed.yaml")))
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6),
        inner.map(lambda x: [x, x, x]),              # one object three times: dumped as an anchor and aliases
    ),
    max_leaves=20)
YAMLISH = st.text(alphabet="[]{}:-,&*!|>'\"#%@`?<=~ \n\t\\abcnlrst01./xyz\x00\x85\ufeff", max_size=400)


def check(data: bytes) -> None:
    """Both loaders on `data`, and an experiment whose `lab:` is `data`: valid, or SpecError(2); bounded."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.yaml"
        path.write_bytes(data)
        (Path(d) / "e.yaml").write_text(f"experiment: t\nlab: {path}\nworm: {{scan: 198.18.9.0/24}}\nrates: [5]\n")
        for load, target in ((load_lab, path), (load_experiment, path), (load_experiment, Path(d) / "e.yaml")):
            tracemalloc.start()
            t0 = time.perf_counter()
            try:
                load(target, machine_routes=[])
            except SpecError as exc:
                assert exc.exit_code == 2 and exc.problems and str(exc)
            finally:
                took = time.perf_counter() - t0
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert took < SECONDS and peak < MIB * 2**20, (load.__name__, took, peak)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(YAMLISH)
def test_random_yaml_text(text):
    check(text.encode("utf-8", "surrogatepass"))


@FEWER
@given(DOCS)
def test_random_yaml_documents(doc):
    check(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass"))


@FEWER
@given(st.dictionaries(st.sampled_from(KEYS), DOCS, max_size=8), st.sampled_from(["lab", "experiment"]))
def test_random_documents_that_look_like_the_files(doc, kind):
    base = ({"name": "t", "hosts": {"admin-server": {"role": "admin-server"}}} if kind == "lab" else
            {"experiment": "t", "lab": str(LABS / "stopping-speed.yaml"), "worm": {"scan": "198.18.9.0/24"},
             "rates": [5]})
    check(yaml.safe_dump({**base, **doc}, allow_unicode=True).encode("utf-8", "surrogatepass"))
