"""Pure parts of the libvirt provider and the image builder: XML, names, the seed, cache keys, apt sources,
the minimal initrd. No daemon, no root."""

from __future__ import annotations

import io
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.labfile.load import load_lab
from orchestrator.providers.libvirt import images, initrd, seed, xml

LABS = Path(__file__).resolve().parents[3] / "labs"


@pytest.fixture(scope="module")
def lab():
    return load_lab(LABS / "vm-stopping-speed.yaml", machine_routes=[])


def test_networks_are_isolated_bridges_tagged_with_the_lab(lab):
    for seg in lab.segments:
        doc = xml.network_xml(lab, seg.key, "/state")
        root = ET.fromstring(doc)
        assert root.find("forward") is None and root.find("ip") is None and root.find("dhcp") is None
        assert root.findtext("name").startswith("wt-vm-stopping-speed-")
        assert len(root.find("bridge").get("name")) <= 15
        assert xml.parse_metadata(doc) == {"lab": "vm-stopping-speed", "state-dir": "/state", "segment": seg.key,
                                         "subnet": seg.subnet}
        xml.assert_isolated(doc)


@pytest.mark.parametrize("doc", [
    "<network><name>wt-x-admin</name><forward mode='nat'/></network>",
    "<network><name>default</name></network>",
    "<network><name>someone-elses</name></network>",
])
def test_anything_that_could_forward_or_is_not_ours_is_refused(doc):
    with pytest.raises(ValueError):
        xml.assert_isolated(doc)


def test_domain_xml_tcg_tuning_nics_and_seed(lab):
    blade = lab.host("blade")
    boot = xml.BootSpec("ov", "sd", "/k", "/i", "root=/dev/vda console=ttyS0")
    doc = xml.domain_xml(lab, blade, boot, domain_type="qemu", memory_mib=192, vcpus=1, tb_cache_mib=96,
                       state_dir="/state")
    root = ET.fromstring(doc)
    assert root.get("type") == "qemu"
    assert root.find("features/tcg/tb-cache").text == "96"
    assert root.find("memory").text == "192"
    assert root.find("os/kernel").text == "/k" and root.find("os/cmdline").text.startswith("root=/dev/vda")
    nics = root.findall("devices/interface")
    assert [n.find("mac").get("address") for n in nics] == [i.mac for i in blade.interfaces]
    assert [n.find("source").get("network") for n in nics] == [
        "wt-vm-stopping-speed-mgmt", "wt-vm-stopping-speed-admin", "wt-vm-stopping-speed-exp0"]
    assert all(len(n.find("target").get("dev")) <= 15 for n in nics)
    seeds = [d for d in root.findall("devices/disk") if d.findtext("serial") == xml.SEED_SERIAL]
    assert len(seeds) == 1 and seeds[0].find("readonly") is not None
    assert root.find("devices/channel/target").get("name") == xml.AGENT_CHANNEL
    assert xml.parse_metadata(doc)["host"] == "blade"
    kvm = ET.fromstring(xml.domain_xml(lab, blade, boot, domain_type="kvm", memory_mib=192, vcpus=1,
                                     tb_cache_mib=96, state_dir="/state"))
    assert kvm.find("features/tcg") is None


def test_the_sniffer_listens_on_taps_of_its_own_fed_by_the_mirror(lab):
    sniffer = lab.host("sniffer")
    doc = xml.domain_xml(lab, sniffer, xml.BootSpec("ov", None, None, None, ""), domain_type="qemu",
                       memory_mib=192, vcpus=1, tb_cache_mib=96, state_dir="/s")
    passive = [n for n in ET.fromstring(doc).findall("devices/interface") if n.get("type") == "ethernet"]
    assert len(passive) == 3 and all(n.find("target").get("managed") == "no" for n in passive)
    plan = xml.mirror_plan(lab)
    sniffer_taps = {xml.tap_name(lab.name, "sniffer", i.ifname) for i in sniffer.interfaces if i.mirror}
    # every experimental port of every other VM, exactly once, into the sniffer's tap on its segment
    expected = {xml.tap_name(lab.name, h.name, i.ifname) for h in xml.vm_hosts(lab) for i in h.interfaces
                if i.segment.startswith("experimental") and not i.mirror}
    assert sorted(s for s, _ in plan) == sorted(expected)
    assert {d for _, d in plan} == sniffer_taps


def test_the_admin_server_is_not_a_vm(lab):
    assert "admin-server" not in {h.name for h in xml.vm_hosts(lab)}
    assert xml.admin_server(lab).ip("admin") == "198.18.1.1"


def test_names_fit_linux_limits_and_differ_between_labs():
    assert len(xml.tap_name("a" * 24, "b" * 20, "exp12")) <= 15
    assert xml.tap_name("lab1", "h", "exp0") != xml.tap_name("lab2", "h", "exp0")
    assert xml.bridge_name("lab1", "admin") != xml.bridge_name("lab1", "mgmt")
    assert xml.overlay_volume("lab", "h").startswith(xml.volume_prefix("lab"))
    assert not xml.overlay_volume("lab-2", "h").startswith(xml.volume_prefix("lab"))


def test_seed_holds_keys_addresses_and_isolation_and_is_deterministic(lab):
    gw = lab.host("gateway")
    files = seed.seed_files(gw, "ssh-ed25519 AAAA client", "PRIVATE", "ssh-ed25519 BBBB root@gateway")
    assert set(files) == {"apply.sh", "authorized_keys", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                          "isolation.nft"}
    assert files["ssh_host_ed25519_key"][1] == 0o600
    script = files["apply.sh"][0].decode()
    assert "hostname gateway" in script
    assert "addr add 198.18.8.1/24 dev exp0" in script and "addr add 198.18.9.1/24 dev exp1" in script
    assert "net.ipv4.ip_forward=1" in script and "net.ipv4.conf.admin0.forwarding=0" in script
    assert script.index("isolation.nft") < script.index("ip -batch")      # filter before any link is up
    assert ": > /etc/testworm/lab-guest && chmod 644 /etc/testworm/lab-guest" in script   # the worm's marker
    blob = seed.seed_tar(files)
    assert blob == seed.seed_tar(files) and len(blob) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.extractfile("authorized_keys").read() == b"ssh-ed25519 AAAA client\n"
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)


def test_sniffer_seed_keeps_its_ports_passive(lab):
    script = seed.apply_script(lab.host("sniffer"))
    assert "link set exp0 arp off multicast off promisc on up" in script
    assert "addr add" not in script.split("exp0")[-1].split("\n")[0]
    assert "route add default" not in script


def test_cache_key_follows_the_recipe_and_sources(tmp_path):
    d = tmp_path / "r"
    (d / "overlay").mkdir(parents=True)
    (d / "image.yaml").write_text("name: r\n")
    k1 = images.cache_key(d, ["deb http://m bookworm main"])
    assert k1 == images.cache_key(d, ["deb http://m bookworm main"])
    assert k1 != images.cache_key(d, ["deb http://other bookworm main"])
    (d / "overlay" / "f").write_text("x")
    k2 = images.cache_key(d, ["deb http://m bookworm main"])
    assert k2 != k1
    (d / "overlay" / "f").write_text("y")
    assert images.cache_key(d, ["deb http://m bookworm main"]) != k2


def test_apt_sources_both_formats_and_the_suite_family():
    texts = [("debian.sources", "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
                                "Components: main contrib\n\nTypes: deb\nURIs: http://security.debian.org/debian-security\n"
                                "Suites: bookworm-security\nComponents: main\n"),
             ("other.list", "deb [signed-by=/x.gpg] https://example.invalid/apt cloud-sdk-bookworm main\n"
                            "# deb http://commented bookworm main\n")]
    src = images.parse_apt_sources(texts)
    assert ("http://deb.debian.org/debian", "bookworm", ["main", "contrib"]) in src
    recipe = images.Recipe(name="d", builder="mmdebstrap", suite="bookworm")
    assert images.mirror_lines(recipe, src) == [
        "deb http://deb.debian.org/debian bookworm main", "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://security.debian.org/debian-security bookworm-security main"]


def test_shipped_recipe_is_valid_and_carries_what_every_role_needs():
    recipe, _ = images.load_recipe("debian")
    for pkg in ("openssh-server", "python3", "tcpdump", "nftables", "iptables", "qemu-guest-agent",
                "libnetfilter-queue1", "busybox-static"):
        assert pkg in recipe.packages
    assert any(w.startswith("NetfilterQueue") for w in recipe.wheels)
    assert "ipv6.disable=1" in recipe.cmdline and "wt-seed.service" in recipe.enable


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(images.ImageError, match="known: .*debian"):
        images.load_recipe("no-such-image")


def test_initrd_modules_in_dependency_order_and_a_valid_cpio():
    dep = ("kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko "
           "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
           "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
           "kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n"
           "kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n")
    order = initrd.module_order(dep, ["virtio_pci", "virtio_blk"])
    assert order.index("kernel/drivers/virtio/virtio_ring.ko") < order.index("kernel/drivers/virtio/virtio_pci.ko")
    assert order.count("kernel/drivers/virtio/virtio.ko") == 1
    with pytest.raises(images.ImageError):
        initrd.module_order(dep, ["ext4"])
    blob = initrd.cpio_newc([("bin", 0o040755, b""), ("init", 0o100755, b"#!/bin/sh\n")])
    assert _read_newc(blob) == [("bin", 0o040755, b""), ("init", 0o100755, b"#!/bin/sh\n")]


def _read_newc(blob: bytes) -> list[tuple[str, int, bytes]]:
    """An independent reader of the newc format (as the kernel unpacks it)."""
    out, pos = [], 0
    while True:
        assert blob[pos:pos + 6] == b"070701"
        f = [int(blob[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = blob[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        data = blob[pos:pos + size]
        pos += size + (4 - size % 4) % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, data))


def test_a_recipe_has_one_initrd_key_for_both_builders():
    """`initrd` was declared twice (mmdebstrap's kind, import's file): the second won, so a mmdebstrap recipe
    without it got the distribution's initrd instead of the documented default, ours."""
    assert images.Recipe(name="d", builder="mmdebstrap", suite="bookworm").initrd_kind == "minimal"
    assert images.Recipe(name="d", builder="mmdebstrap", initrd="distribution").initrd_kind == "distribution"
    assert images.Recipe(name="d", builder="import", disk="d.qcow2", initrd="boot/initrd.img").initrd == "boot/initrd.img"
    with pytest.raises(ValueError, match="initrd is minimal or distribution for a mmdebstrap image, not 'busybox'"):
        images.Recipe(name="d", builder="mmdebstrap", initrd="busybox")
