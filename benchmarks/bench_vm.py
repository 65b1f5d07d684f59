"""VM figures: guest image build (cold and cached), the 4-VM stopping-speed lab up to SSH-ready, and down.

Needs root, libvirt and QEMU (make setup). Prints its figures; `--cold` rebuilds the image first
(otherwise the cold figure is the one recorded in the cached image's manifest).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.lab import lifecycle  # noqa: E402
from orchestrator.providers.libvirt import images  # noqa: E402
from orchestrator.providers.state import StateStore  # noqa: E402

LAB = Path(__file__).resolve().parents[1] / "labs" / "vm-stopping-speed.yaml"


def main() -> int:
    if os.geteuid() != 0:
        print("bench_vm: skipped (needs root, libvirt and QEMU)")
        return 0
    try:
        from orchestrator.providers.libvirt.hypervisor import connect
        connect("qemu:///system", timeout=10).close()
    except Exception as exc:  # noqa: BLE001
        print(f"bench_vm: skipped ({exc})")
        return 0
    if "--cold" in sys.argv:
        t = time.monotonic()
        img, _ = images.build("debian", force=True)
        print(f"image build, cold:   {time.monotonic() - t:6.1f} s  ({img.disk.stat().st_size / 2**20:.0f} MiB)")
    else:
        img, fresh = images.build("debian")
        print(f"image build, cold:   {img.manifest.get('build_seconds', float('nan')):6.1f} s  "
              f"({'built now' if fresh else 'from the cached manifest; --cold rebuilds'})")
    t = time.monotonic()
    images.build("debian")
    print(f"image build, cached: {time.monotonic() - t:6.2f} s")

    store = StateStore(tempfile.mkdtemp(prefix="bench-vm-"))
    name = f"bench{secrets.token_hex(2)}"
    ready: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def progress(step: str, done: int, total: int) -> None:
        if step.startswith("SSH ready"):
            ready.append((time.monotonic() - t0, step))

    try:
        lab = lifecycle.up(LAB, name=name, store=store, progress=progress)
        up_s = time.monotonic() - t0
        rec = store.require(name)
        print(f"lab up to SSH-ready: {up_s:6.1f} s  ({len(lab.hosts) - 1} VMs, "
              f"{rec.extra.get('domain_type')}: {rec.extra.get('domain_type_reason', '')}; target <= 60 s)")
        if ready:
            print(f"  first VM answered SSH after {ready[0][0]:.1f} s, last after {ready[-1][0]:.1f} s")
        rss = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and f"guest=wt-{name}-".encode() in (p / "cmdline").read_bytes():
                    rss.append(int((p / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
            except OSError:
                continue
        if rss:
            print(f"  QEMU resident memory per VM: {min(rss):.0f}-{max(rss):.0f} MiB")
    finally:
        t1 = time.monotonic()
        lifecycle.down(name, store=store)
        print(f"lab down:            {time.monotonic() - t1:6.1f} s  (target <= 10 s)")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (2 cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
