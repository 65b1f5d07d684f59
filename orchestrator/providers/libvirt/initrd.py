"""A minimal initrd for a guest image: the virtio modules the kernel needs to find its root disk (in
dependency order, from modules.dep), busybox, and an init that mounts /dev/vda and hands over — packed as a
newc cpio archive, with no tool but Python."""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import ImageError

_INIT = """#!/bin/busybox sh
# worm-testbed minimal initrd: load the virtio modules, mount the root disk, hand over to /sbin/init.
B=/bin/busybox
$B mount -t devtmpfs devtmpfs /dev
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
for m in $($B cat /modules); do $B insmod "/lib/modules/$m" || echo "wt-initrd: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do $B sleep 0.05; i=$((i + 1)); done
$B mount -t ext4 -o rw,noatime /dev/vda /root || { echo "wt-initrd: cannot mount /dev/vda"; exec $B sh; }
$B umount /proc /sys
$B mount --move /dev /root/dev
exec $B switch_root /root /sbin/init
"""


def module_order(modules_dep: str, wanted: list[str]) -> list[str]:
    """Module files (relative paths) for `wanted` names, dependencies first, each once (pure)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[Path(mod).name.split(".ko")[0].replace("-", "_")] = mod
    out: list[str] = []

    def visit(mod: str) -> None:
        for d in deps.get(mod, []):
            visit(d)
        if mod not in out:
            out.append(mod)

    for name in wanted:
        key = name.replace("-", "_")
        if key not in by_name:
            raise ImageError(f"initrd module '{name}' is not a module of this kernel (built in, or misspelt?)")
        visit(by_name[key])
    return out


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed cpio archive (newc) of (path, mode, data); directories have mode 0o040755 (pure)."""
    out = bytearray()

    def pad(n: int) -> None:
        out.extend(b"\0" * ((4 - n % 4) % 4))

    for ino, (path, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        name = path.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1 if mode & 0o040000 == 0 else 2, 0, len(data), 0, 0, 0, 0, len(name), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        pad(110 + len(name))
        out.extend(data)
        pad(len(data))
    return bytes(out)


def minimal_initrd(rootfs: Path, kver: str, modules: list[str]) -> bytes:
    busybox = rootfs / "bin/busybox"
    if not busybox.is_file():
        raise ImageError("a minimal initrd needs busybox-static in the image's packages")
    moddir = rootfs / "lib/modules" / kver
    files = module_order((moddir / "modules.dep").read_text(), modules)
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "root",
                                                                            "lib", "lib/modules")]
    entries += [("bin/busybox", 0o100755, busybox.read_bytes()), ("init", 0o100755, _INIT.encode()),
                ("modules", 0o100644, "\n".join(Path(f).name for f in files).encode() + b"\n")]
    entries += [(f"lib/modules/{Path(f).name}", 0o100644, (moddir / f).read_bytes()) for f in files]
    return cpio_newc(entries)
