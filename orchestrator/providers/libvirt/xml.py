"""Pure parts of the libvirt provider: resource names and the XML of networks, volumes and domains.

Every name is derived from the lab and host names (and a short hash where Linux limits interface names to
15 characters), so a lab's resources can be listed before any exists and journalled before each is made.
Every network and domain carries a `<wt:lab>` metadata element naming the lab and the state directory that
owns it; volumes cannot carry metadata, so their names start with the lab's prefix and the journal lists them.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from orchestrator.labfile.topology import Host, Interface, Lab

NS = "https://worm-testbed.invalid/xmlns/libvirt/1"
NS_PREFIX = "wt"
POOL = "worm-testbed"
SEG_SHORT = {"management": "mgmt", "admin": "admin"}
AGENT_CHANNEL = "org.qemu.guest_agent.0"
SEED_SERIAL = "wt-seed"


def _h(*parts: str, n: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def seg_short(segment_key: str, lab: Lab) -> str:
    if segment_key in SEG_SHORT:
        return SEG_SHORT[segment_key]
    return lab.segment(segment_key).ifname          # exp0, exp1, …


def network_name(lab: str, short: str) -> str:
    return f"wt-{lab}-{short}"


def bridge_name(lab: str, short: str) -> str:
    return f"wtb{_h(lab, short)}"                   # 11 characters


def domain_name(lab: str, host: str) -> str:
    return f"wt-{lab}-{host}"


def tap_name(lab: str, host: str, ifname: str) -> str:
    return f"wtt{_h(lab, host, ifname)}"


def veth_name(lab: str, host: str, ifname: str) -> str:
    """The root-namespace end of the admin server's veth into a lab bridge."""
    return f"wtv{_h(lab, host, ifname)}"


def volume_prefix(lab: str) -> str:
    return f"wt-{lab}--"


def overlay_volume(lab: str, host: str) -> str:
    return f"{volume_prefix(lab)}{host}.qcow2"


def seed_volume(lab: str, host: str) -> str:
    return f"{volume_prefix(lab)}{host}.seed"


def base_volume(image: str, key: str, what: str) -> str:
    """Shared, read-only volumes of a built image (disk.qcow2, vmlinuz, initrd.img): not owned by any lab."""
    return f"wt-image-{image}-{key}-{what}"


def serial_log(lab: str, host: str) -> str:
    return f"/var/log/libvirt/qemu/{domain_name(lab, host)}-serial.log"


def domain_log(domain: str) -> str:
    """QEMU's own log, which libvirt writes per domain and leaves behind."""
    return f"/var/log/libvirt/qemu/{domain}.log"


def vm_hosts(lab: Lab) -> list[Host]:
    """Hosts that are virtual machines: all but the admin server, which is the hypervisor's own side."""
    return [h for h in lab.hosts if h.role != "admin-server"]


def admin_server(lab: Lab) -> Host:
    return lab.by_role("admin-server")[0]


def mirror_plan(lab: Lab) -> list[tuple[str, str]]:
    """(source tap, sniffer tap): every experimental VM port's ingress (what the VM sends) is mirrored once
    into the sniffer's passive tap on the same segment."""
    sniffer_taps = {i.segment: tap_name(lab.name, h.name, i.ifname)
                    for h in vm_hosts(lab) for i in h.interfaces if i.mirror}
    out = []
    for h in vm_hosts(lab):
        for i in h.interfaces:
            if not i.mirror and i.segment.startswith("experimental") and i.segment in sniffer_taps:
                out.append((tap_name(lab.name, h.name, i.ifname), sniffer_taps[i.segment]))
    return out


# ---------------------------------------------------------------- metadata


def metadata_xml(lab: str, state_dir: str, **extra: str) -> str:
    attrs = " ".join(f"{k.replace('_', '-')}={quoteattr(v)}" for k, v in
                     {"lab": lab, "state-dir": state_dir, **extra}.items())
    return f"<{NS_PREFIX}:lab xmlns:{NS_PREFIX}={quoteattr(NS)} {attrs}/>"


def parse_metadata(xml: str) -> dict[str, str] | None:
    """The attributes of our <wt:lab> element in a domain's or network's XML, or None if it has none."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"./metadata/{{{NS}}}lab") if root.tag != f"{{{NS}}}lab" else root
    return dict(el.attrib) if el is not None else None


# ---------------------------------------------------------------- networks


def network_xml(lab: Lab, segment_key: str, state_dir: str) -> str:
    """An isolated network: a bridge and nothing else — no <forward> (no route, no NAT to any uplink), no <ip>
    (the hypervisor's root namespace has no address on it; the admin server's namespace is plugged in instead),
    so libvirt starts no dnsmasq either."""
    short = seg_short(segment_key, lab)
    seg = lab.segment(segment_key)
    return (f"<network>\n  <name>{network_name(lab.name, short)}</name>\n"
            f"  <metadata>{metadata_xml(lab.name, state_dir, segment=segment_key, subnet=seg.subnet)}</metadata>\n"
            f"  <bridge name='{bridge_name(lab.name, short)}' stp='off' delay='0'/>\n"
            "</network>\n")


def assert_isolated(xml: str) -> None:
    """Defence in depth: refuse to define any network XML that could forward to the outside."""
    root = ET.fromstring(xml)
    if root.find("forward") is not None:
        raise ValueError("a lab network must not have a <forward> element")
    name = root.findtext("name") or ""
    if name == "default" or not name.startswith("wt-"):
        raise ValueError(f"refusing to define network '{name}': lab networks are named wt-<lab>-<segment>")


# ---------------------------------------------------------------- volumes


def pool_xml(path: str) -> str:
    return (f"<pool type='dir'>\n  <name>{POOL}</name>\n  <target><path>{path}</path></target>\n</pool>\n")


def volume_xml(name: str, capacity: int, fmt: str = "raw", backing: str | None = None,
               backing_fmt: str = "qcow2") -> str:
    back = (f"  <backingStore><path>{backing}</path><format type='{backing_fmt}'/></backingStore>\n"
            if backing else "")
    return (f"<volume>\n  <name>{name}</name>\n  <capacity unit='bytes'>{capacity}</capacity>\n"
            f"  <target><format type='{fmt}'/><permissions><mode>0600</mode></permissions></target>\n"
            f"{back}</volume>\n")


# ---------------------------------------------------------------- domains


@dataclass(frozen=True)
class BootSpec:
    disk_volume: str             # the host's overlay
    seed_volume: str | None
    kernel: str | None           # paths on the hypervisor (the image's base volumes)
    initrd: str | None
    cmdline: str


def _interface_xml(lab: Lab, host: Host, i: Interface) -> str:
    tap = tap_name(lab.name, host.name, i.ifname)
    if i.mirror:
        # the sniffer's passive port: a tap of our own on no bridge, fed only by the hypervisor's mirror
        return (f"    <interface type='ethernet'>\n      <mac address='{i.mac}'/>\n"
                f"      <target dev='{tap}' managed='no'/>\n      <model type='virtio'/>\n    </interface>\n")
    net = network_name(lab.name, seg_short(i.segment, lab))
    return (f"    <interface type='network'>\n      <source network='{net}'/>\n      <mac address='{i.mac}'/>\n"
            f"      <target dev='{tap}'/>\n      <model type='virtio'/>\n    </interface>\n")


def domain_xml(lab: Lab, host: Host, boot: BootSpec, *, domain_type: str, memory_mib: int, vcpus: int,
               tb_cache_mib: int, state_dir: str, pool: str = POOL) -> str:
    name = domain_name(lab.name, host.name)
    features = "    <acpi/>\n"
    if domain_type == "qemu":
        features += f"    <tcg>\n      <tb-cache unit='MiB'>{tb_cache_mib}</tb-cache>\n    </tcg>\n"
    os_boot = "    <type arch='x86_64' machine='pc'>hvm</type>\n"
    if boot.kernel:
        os_boot += f"    <kernel>{boot.kernel}</kernel>\n"
        if boot.initrd:
            os_boot += f"    <initrd>{boot.initrd}</initrd>\n"
        os_boot += f"    <cmdline>{_esc(boot.cmdline)}</cmdline>\n"
    else:
        os_boot += "    <boot dev='hd'/>\n"
    disks = (f"    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2' cache='unsafe'/>\n"
             f"      <source pool='{pool}' volume='{boot.disk_volume}'/>\n"
             "      <target dev='vda' bus='virtio'/>\n    </disk>\n")
    if boot.seed_volume:
        disks += (f"    <disk type='volume' device='disk'>\n      <driver name='qemu' type='raw'/>\n"
                  f"      <source pool='{pool}' volume='{boot.seed_volume}'/>\n"
                  f"      <target dev='vdb' bus='virtio'/>\n      <serial>{SEED_SERIAL}</serial>\n"
                  "      <readonly/>\n    </disk>\n")
    nics = "".join(_interface_xml(lab, host, i) for i in host.interfaces)
    meta = metadata_xml(lab.name, state_dir, host=host.name, role=host.role)
    return (f"<domain type='{domain_type}'>\n  <name>{name}</name>\n"
            f"  <title>worm-testbed lab {lab.name}: {host.name} ({host.role})</title>\n"
            f"  <metadata>{meta}</metadata>\n"
            f"  <memory unit='MiB'>{memory_mib}</memory>\n  <vcpu>{vcpus}</vcpu>\n"
            f"  <os>\n{os_boot}  </os>\n  <features>\n{features}  </features>\n"
            "  <clock offset='utc'/>\n"
            "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n"
            f"  <devices>\n{disks}{nics}"
            f"    <serial type='pty'>\n      <log file='{serial_log(lab.name, host.name)}' append='on'/>\n"
            "      <target port='0'/>\n    </serial>\n"
            "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n"
            f"    <channel type='unix'>\n      <target type='virtio' name='{AGENT_CHANNEL}'/>\n    </channel>\n"
            "    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n"
            "    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>\n"
            "  </devices>\n</domain>\n")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def probe_domain_xml(name: str, kernel: str, log: str) -> str:
    """A throw-away KVM domain: does the image's kernel print anything under KVM within a few seconds?"""
    return (f"<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>128</memory>\n  <vcpu>1</vcpu>\n"
            f"  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n    <kernel>{kernel}</kernel>\n"
            "    <cmdline>console=ttyS0 panic=-1 earlyprintk=ttyS0</cmdline>\n  </os>\n"
            "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n"
            f"  <devices>\n    <serial type='file'>\n      <source path='{log}'/>\n      <target port='0'/>\n"
            "    </serial>\n    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n"
            "  </devices>\n</domain>\n")
