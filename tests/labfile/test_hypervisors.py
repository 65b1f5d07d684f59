"""Several hypervisors in one lab file (orchestrator/labfile/hypervisors.py): `libvirt: {uris: [...]}` checked,
`testbed up` on the first, lab instance k on uris[k mod n]; a lab file without the key resolves as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.labfile.hypervisors import uri_for
from orchestrator.labfile.load import load_lab
from tests.labfile.test_load import LABS, ROUTES, problems_of, write

VM = """\
name: t
provider: libvirt
libvirt: {uris: ['qemu:///system', 'qemu+ssh://root@hv2:2222/system?keyfile=/k', 'qemu+ssh://hv3/system']}
hosts:
  admin-server: {role: admin-server}
  blade: {role: blade}
"""


def test_several_hypervisors_the_first_is_where_up_builds_and_instances_take_them_in_turn(tmp_path: Path):
    lab = load_lab(write(tmp_path, VM), machine_routes=ROUTES)
    assert lab.options["uri"] == "qemu:///system" and len(lab.options["uris"]) == 3
    assert [uri_for(lab.options, k) for k in range(4)] == [
        "qemu:///system", "qemu+ssh://root@hv2:2222/system?keyfile=/k", "qemu+ssh://hv3/system", "qemu:///system"]


def test_a_lab_with_one_uri_is_resolved_and_hashed_as_before():
    lab = load_lab(LABS / "vm-stopping-speed.yaml", machine_routes=ROUTES)
    assert "uris" not in lab.options and uri_for(lab.options, 5) == lab.options["uri"]
    # the hash is over the file's keys as they were: a file that does not use uris keeps its hash
    from orchestrator.labfile import models
    assert "uris" not in models.LabFile.model_validate({"name": "x", "hosts": {"a": {"role": "admin-server"}},
                                                        "provider": "libvirt", "libvirt": {}}).model_dump(
        exclude_none=True)["libvirt"]


@pytest.mark.parametrize("uris, expect", [
    ("['qemu:///system', 'qemu:///system']", "libvirt.uris.1: 'qemu:///system' is the same hypervisor as uris[0]"),
    ("['qemu:///session']", "libvirt.uris.0: 'qemu:///session': a lab needs the system libvirt"),
    ("['http://hv/system']", "libvirt.uris.0: 'http://hv/system' is not a hypervisor URI"),
    ("['qemu+ssh:///system']", "libvirt.uris.0: 'qemu+ssh:///system' names no host"),
    ("[]", "libvirt.uris: List should have at least 1 item"),
])
def test_bad_hypervisor_lists_are_refused_with_their_key_path(tmp_path: Path, uris, expect):
    lines = VM.splitlines(keepends=True)
    lines[2] = f"libvirt: {{uris: {uris}}}\n"
    got = problems_of(write(tmp_path, "".join(lines)))
    where, why = expect.split(": ", 1)
    assert any(p.split(" (line")[0] == where and why in p for p in got), got


def test_uri_and_uris_together_are_refused(tmp_path: Path):
    got = problems_of(write(tmp_path, VM.replace("{uris:", "{uri: 'qemu:///system', uris:")))
    assert any(p.startswith("libvirt.uri") and "give uri or uris, not both" in p for p in got), got
