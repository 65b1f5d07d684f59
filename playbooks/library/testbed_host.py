#!/usr/bin/python3
"""Ansible module: bring one lab host to a declared state in a single task (standard library only).

Fewer, heavier tasks: measured here, Ansible costs ~2.5 s of CPU per task across 21 hosts, so each role of
worm-testbed is one call of this module rather than a dozen small tasks. Everything is idempotent:
`changed` is true only when something was actually written or applied.

Options (all optional):
  dirs:      [path, …]                                   directories to create (0755)
  trees:     [{root, files: {rel: base64}, purge: [top-level names]}]  file trees (code); stale files in
             the purged top-level directories are removed
  files:     [{path, content: text | b64: base64, mode: "0600"}]
  sysctls:   {"net.ipv4.ip_forward": "1", …}
  nft:       {table_name: ruleset text}                  (re)loaded when the text changed or the table is gone
  commands:  [name, …]                                   must be on PATH
  python:    {interpreter: path, path: dir, modules: [name, …]}   must import (with dir on sys.path)
  no_address: [ifname, …]                                must carry no IP address (the sniffer's ports)
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

DOCUMENTATION = r"""
module: testbed_host
short_description: bring a worm-testbed lab host to a declared state in one task
description: see the module's docstring; directories, code trees, files, sysctls, nftables tables, checks.
"""


def write_if_changed(path, data, mode):
    try:
        with open(path, "rb") as fh:
            same = fh.read() == data
        if same and (os.stat(path).st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".testbed.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def apply(params, run=subprocess.run):
    """Apply the declared state; returns (changed items, failure message or None). Each step below applies one
    kind of item, appends what it changed, and returns a failure or None; the first failure ends the run."""
    changed = []
    for step in (_dirs, _trees, _files, _sysctls, _nft, _commands, _python, _no_address):
        failure = step(params, changed, run)
        if failure:
            return changed, failure
    return changed, None


def _dirs(params, changed, run):
    for d in params.get("dirs") or []:
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o755, exist_ok=True)
            changed.append(f"dir {d}")


def _trees(params, changed, run):
    for tree in params.get("trees") or []:
        root = tree["root"]
        want = {rel: base64.b64decode(b) for rel, b in tree["files"].items()}
        for rel, data in sorted(want.items()):
            if write_if_changed(os.path.join(root, rel), data, 0o644):
                changed.append(f"file {os.path.join(root, rel)}")
        for top in tree.get("purge") or []:
            _purge(root, os.path.join(root, top), want, changed)


def _purge(root, base, want, changed):
    """Files under `base` the tree does not declare, and the directories they leave empty."""
    for dirpath, _dirs, filenames in os.walk(base, topdown=False):
        for f in filenames:
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if rel not in want:
                os.unlink(os.path.join(dirpath, f))
                if "__pycache__" not in rel:
                    changed.append(f"removed {rel}")
        if dirpath != base and not os.listdir(dirpath):
            os.rmdir(dirpath)


def _files(params, changed, run):
    for spec in params.get("files") or []:
        path = spec["path"]
        data = base64.b64decode(spec["b64"]) if spec.get("b64") else (spec.get("content") or "").encode()
        if write_if_changed(path, data, int(str(spec.get("mode") or "0644"), 8)):
            changed.append(f"file {path}")


def _sysctls(params, changed, run):
    for key, value in sorted((params.get("sysctls") or {}).items()):
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path) as fh:
                current = fh.read().strip()
        except OSError as exc:
            return f"sysctl {key}: {exc.strerror}"
        if current != str(value):
            with open(path, "w") as fh:
                fh.write(str(value))
            changed.append(f"sysctl {key}={value}")
    return None


def _nft(params, changed, run):
    for table, ruleset in sorted((params.get("nft") or {}).items()):
        digest = hashlib.sha256(ruleset.encode()).hexdigest()
        stamp = f"/run/testbed-nft-{table}.sha256"   # /run: gone after a reboot, as the table is
        present = run(["nft", "list", "table", "inet", table], capture_output=True).returncode == 0
        try:
            with open(stamp) as fh:
                same = fh.read().strip() == digest
        except FileNotFoundError:
            same = False
        if present and same:
            continue
        text = (f"table inet {table}\ndelete table inet {table}\n" if present else "") + ruleset
        p = run(["nft", "-f", "-"], input=text.encode(), capture_output=True)
        if p.returncode != 0:
            return f"nft table {table}: {p.stderr.decode(errors='replace').strip()}"
        with open(stamp, "w") as fh:
            fh.write(digest + "\n")
        changed.append(f"nft table {table}")
    return None


def _commands(params, changed, run):
    missing = [c for c in params.get("commands") or [] if shutil.which(c) is None]
    return f"missing command(s): {', '.join(missing)}" if missing else None


def _python(params, changed, run):
    py = params.get("python")
    if py and py.get("modules"):
        code = "import importlib,sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
        env = dict(os.environ, PYTHONPATH=py["path"]) if py.get("path") else None
        p = run([py["interpreter"], "-c", code, *py["modules"]], capture_output=True, env=env)
        if p.returncode != 0:
            last = p.stderr.decode(errors="replace").strip().splitlines()
            return f"{py['interpreter']} cannot import {', '.join(py['modules'])}: {last[-1] if last else p.returncode}"
    return None


def _no_address(params, changed, run):
    for ifname in params.get("no_address") or []:
        p = run(["ip", "-j", "addr", "show", "dev", ifname], capture_output=True)
        info = json.loads(p.stdout or b"[]") if p.returncode == 0 else []
        if not info:
            return f"interface {ifname} is missing"
        addrs = [a["local"] for a in info[0].get("addr_info", [])]
        if addrs:
            return f"interface {ifname} must carry no address but has {', '.join(addrs)}"
    return None


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec={
        "dirs": {"type": "list", "elements": "str", "default": []},
        "trees": {"type": "list", "elements": "dict", "default": [], "no_log": True},   # keep code out of logs
        "files": {"type": "list", "elements": "dict", "default": [], "no_log": True},   # and the lab's keys
        "sysctls": {"type": "dict", "default": {}},
        "nft": {"type": "dict", "default": {}},
        "commands": {"type": "list", "elements": "str", "default": []},
        "python": {"type": "dict", "default": None},
        "no_address": {"type": "list", "elements": "str", "default": []},
    }, supports_check_mode=False)
    try:
        changed, failure = apply(module.params)
    except (OSError, ValueError, KeyError) as exc:
        module.fail_json(msg=f"{type(exc).__name__}: {exc}")
    if failure:
        module.fail_json(msg=failure, changed=bool(changed), items=changed)
    module.exit_json(changed=bool(changed), items=changed)


if __name__ == "__main__":
    main()
