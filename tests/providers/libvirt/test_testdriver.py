"""The libvirt provider against libvirt's test driver (test:///default): no daemon, no QEMU, no root.

Covers what the provider defines (XML, tags), what it journals before making anything, that `down` removes
exactly the lab's own resources and nothing else, and the refusals that must leave nothing defined.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from orchestrator.errors import LabExistsError, ProviderError  # noqa: E402
from orchestrator.labfile.load import load_lab  # noqa: E402
from orchestrator.localrun import is_root  # noqa: E402
from orchestrator.providers.libvirt import images, xml  # noqa: E402
from orchestrator.providers.libvirt.provider import LibvirtProvider  # noqa: E402
from orchestrator.providers.state import StateStore  # noqa: E402

LABS = Path(__file__).resolve().parents[3] / "labs"
URI = "test:///default"


@pytest.fixture
def conn():
    c = libvirt.open(URI)        # held open: the test driver keeps its state while a connection lives
    yield c
    c.close()


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TESTBED_IMAGE_DIR", str(tmp_path / "images"))
    img_dir = tmp_path / "images" / "debian" / "k1"
    img_dir.mkdir(parents=True)
    for f in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (img_dir / f).write_bytes(b"x" * 1024)
    fake = images.BuiltImage("debian", "k1", img_dir, {"disk": "disk.qcow2", "kernel": "vmlinuz",
                                                        "initrd": "initrd.img", "cmdline": "root=/dev/vda"})

    def require(name):
        if name != "debian":
            raise images.ImageError(f"guest image '{name}' is not built", hint="testbed image build")
        return fake

    monkeypatch.setattr(images, "require", require)
    return StateStore(tmp_path / "state")


def test_lab(name="tdlab", **opts):
    lab = load_lab(LABS / "vm-stopping-speed.yaml", machine_routes=[], name_override=name)
    return dataclasses.replace(lab, options={**lab.options, "uri": URI, **opts})


test_lab.__test__ = False  # a helper, not a test


def names(conn):
    return ({d.name() for d in conn.listAllDomains(0)}, {n.name() for n in conn.listAllNetworks(0)})


def test_up_defines_tagged_networks_and_domains_and_journals_them_first(conn, store):
    before_doms, before_nets = names(conn)
    prov = LibvirtProvider(store)
    lab = test_lab()
    prov.create(lab)
    doms, nets = names(conn)
    assert doms - before_doms == {f"wt-tdlab-{h}" for h in ("gateway", "blade", "sniffer", "injector")}
    assert nets - before_nets == {f"wt-tdlab-{s}" for s in ("mgmt", "admin", "exp0", "exp1", "exp2")}
    for d in doms - before_doms:
        meta = xml.parse_metadata(conn.lookupByName(d).XMLDesc(0))
        assert meta["lab"] == "tdlab" and meta["state-dir"] == str(store.root)
    for n in nets - before_nets:
        doc = conn.networkLookupByName(n).XMLDesc(0)
        assert xml.parse_metadata(doc)["lab"] == "tdlab" and "<forward" not in doc
        assert conn.networkLookupByName(n).isActive()
    rec = store.require("tdlab")
    assert rec.state == "up" and rec.extra["domain_type"] == "qemu"
    kinds = {e["kind"] for e in rec.journal}
    assert {"network", "volume", "domain", "tap", "file"} <= kinds
    assert set(rec.owns("domain")) == doms - before_doms
    pool = conn.storagePoolLookupByName(xml.POOL)
    vols = set(pool.listVolumes())
    assert {v for v in vols if v.startswith("wt-tdlab--")} == set(rec.owns("volume"))
    assert prov.status("tdlab").state == "up"
    with pytest.raises(LabExistsError):
        prov.create(lab)

    removed = prov.destroy("tdlab")
    assert {r.kind for r in removed} >= {"domain", "network", "volume"}
    assert names(conn) == (before_doms, before_nets)           # the driver's own 'test' and 'default' remain
    assert not [v for v in pool.listVolumes() if v.startswith("wt-tdlab--")]
    assert any(v.startswith("wt-image-debian-k1") for v in pool.listVolumes())   # shared, not the lab's
    assert store.load("tdlab") is None
    assert prov.destroy("tdlab") == []                           # idempotent


def test_down_leaves_a_same_named_resource_it_did_not_tag(conn, store):
    prov = LibvirtProvider(store)
    prov.create(test_lab("tdown"))
    # someone replaces one domain with their own of the same name
    dom = conn.lookupByName("wt-tdown-blade")
    dom.destroy()
    dom.undefine()
    foreign = conn.defineXML("<domain type='test'><name>wt-tdown-blade</name><memory>65536</memory>"
                             "<os><type>hvm</type></os></domain>")
    with pytest.raises(ProviderError, match="not tagged"):
        prov.destroy("tdown")
    assert conn.lookupByName("wt-tdown-blade").UUIDString() == foreign.UUIDString()
    assert "wt-tdown-gateway" not in names(conn)[0]             # everything else of the lab is gone
    assert store.load("tdown") is not None                      # the state is kept to retry
    foreign.undefine()
    prov.destroy("tdown")
    assert store.load("tdown") is None


def test_failure_half_way_rolls_back_everything(conn, store, monkeypatch):
    before = names(conn)
    monkeypatch.setenv("TESTBED_FAULT_FAIL", "after-define")
    with pytest.raises(ProviderError, match="injected failure"):
        LibvirtProvider(store).create(test_lab("tfail"))
    assert names(conn) == before
    assert store.load("tfail") is None
    pool = conn.storagePoolLookupByName(xml.POOL)
    assert not [v for v in pool.listVolumes() if v.startswith("wt-tfail--")]


def test_refusals_leave_nothing_defined(conn, store):
    before = names(conn)
    prov = LibvirtProvider(store)
    with pytest.raises(ProviderError, match="default"):
        prov.create(test_lab("tref", network="default"))
    with pytest.raises(ProviderError, match="session"):
        prov.create(test_lab("tref", uri="qemu:///session"))
    lab = test_lab("tref")
    hosts = tuple(dataclasses.replace(h, options={"image": "nosuch"}) if h.name == "blade" else h
                  for h in lab.hosts)
    with pytest.raises(images.ImageError, match="not built"):
        prov.create(dataclasses.replace(lab, hosts=hosts))
    # a name clash with something no lab recorded: refused before anything is made
    conn.defineXML("<domain type='test'><name>wt-tref-gateway</name><memory>65536</memory>"
                   "<os><type>hvm</type></os></domain>")
    try:
        with pytest.raises(ProviderError, match="already exist"):
            prov.create(lab)
        assert names(conn)[1] == before[1]
    finally:
        conn.lookupByName("wt-tref-gateway").undefine()
    assert names(conn) == before
    assert store.names() == []


def test_unreachable_daemon_is_explained(store):
    if not is_root():
        pytest.skip("as a user, the provider first asks for root")
    lab = test_lab("tdead", uri="qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(ProviderError) as exc:
        LibvirtProvider(store).create(lab)
    assert "no libvirt daemon" in exc.value.message and "libvirtd" in (exc.value.hint or "")
    assert store.names() == []


def test_cli_refuses_the_default_network_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys
    lab = tmp_path / "bad.yaml"
    lab.write_text("name: bad\nprovider: libvirt\nlibvirt: {network: default}\nhosts:\n"
                   "  admin-server: {role: admin-server}\n  blade: {role: blade}\n")
    cp = subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", str(lab)], capture_output=True, text=True,
                        env={**os.environ, "TESTBED_STATE_DIR": str(tmp_path / "s")}, timeout=60,
                        cwd=LABS.parent)
    assert cp.returncode == 1 and "default" in cp.stderr and "hint:" in cp.stderr
    assert "Traceback" not in cp.stderr


def test_a_parallel_instance_is_built_recorded_and_removed_on_its_own_hypervisor(conn, store, tmp_path, monkeypatch):
    """Lab instance 2 of a lab listing two hypervisors is built by the real provider on the second (libvirt's
    test driver here), its record names it, `down` goes there. The first, qemu:///system, is never contacted:
    a connection to any other URI fails the test before anything is made."""
    from orchestrator.experiment import pool, runner
    from orchestrator.experiment.spec import load_experiment
    from orchestrator.lab import lifecycle
    from orchestrator.providers.libvirt import hypervisor
    real_connect = hypervisor.connect

    def only_the_test_driver(uri, *a, **kw):
        assert uri == URI, f"connected to {uri}"
        return real_connect(uri, *a, **kw)
    monkeypatch.setattr(hypervisor, "connect", only_the_test_driver)
    text = (LABS / "vm-stopping-speed.yaml").read_text().replace("name: vm-stopping-speed", "name: tdhv")
    lab = tmp_path / "lab.yaml"
    lab.write_text(text.replace("  uri: qemu:///system", f"  uris: ['qemu:///system', '{URI}']"))
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(f"{{experiment: hv, lab: '{lab}', rates: [20, 10], worm: {{scan: 198.18.9.0/24}}}}")
    exp = load_experiment(exp_file, machine_routes=[])
    before = names(conn)
    second = pool.instance(exp, 2)
    assert (second.lab.name, second.lab.options["uri"]) == ("tdhv-2", URI)
    assert pool.instance(exp, 3).lab.options["uri"] == "qemu:///system"          # taken in turn
    runner.build_lab(second, store)
    rec = store.require("tdhv-2")
    assert rec.extra["uri"] == URI and rec.topology.options["uri"] == URI
    assert names(conn)[0] - before[0] == {f"wt-tdhv-2-{h}" for h in ("gateway", "blade", "sniffer", "injector")}
    assert any(URI in n for n in lifecycle.status("tdhv-2", store=store).notes)
    lifecycle.down("tdhv-2", store=store)
    assert names(conn) == before and store.names() == []
