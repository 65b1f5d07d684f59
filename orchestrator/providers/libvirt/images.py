"""Guest images for the libvirt provider: recipes in vm-images/NAME/image.yaml, built from distribution packages
only (never downloaded), cached under the image root by a hash of the recipe folder and the package sources.

A built image is a directory `<image root>/<name>/<key>/` holding disk.qcow2 (an ext4 root file system labelled
`wtroot`), vmlinuz and initrd.img for direct kernel boot, and manifest.json. Builders: `mmdebstrap` (Debian and
derivatives, from the machine's apt mirror) and `import` (a disk the user brings, e.g. another distribution or a
Windows guest). The image root is /var/lib/worm-testbed/images unless TESTBED_IMAGE_DIR says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.atomic import atomic_write_json, read_json
from orchestrator.errors import ImageError
from orchestrator.localrun import is_root, run
from orchestrator.providers.libvirt import DEFAULT_IMAGE
from orchestrator.providers.libvirt.initrd import minimal_initrd

BUILDER_VERSION = "1"        # bump when the build procedure changes what an image contains
REPO_RECIPES = Path(__file__).resolve().parents[3] / "vm-images"
Progress = Callable[[str, int, int], None]


class Recipe(BaseModel):
    """vm-images/NAME/image.yaml"""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")
    description: str = ""
    builder: Literal["mmdebstrap", "import"]
    # mmdebstrap
    suite: str | None = None
    variant: str = "minbase"
    components: list[str] = ["main"]
    mirror: list[str] | None = Field(None, description="apt source lines; default: the machine's Debian sources")
    packages: list[str] = []
    wheels: list[str] = []
    initrd_modules: list[str] = []
    mask: list[str] = []
    enable: list[str] = []
    mask_generators: list[str] = []
    disk_mib: int = Field(1024, ge=256, le=65536)
    # import: a disk the user brings (qcow2 or raw), optionally with a kernel for direct boot
    disk: str | None = None
    kernel: str | None = None
    # one key for both builders (two fields of one name were one field: the last, so a mmdebstrap recipe
    # without `initrd:` got the distribution's initrd, not the documented default)
    initrd: str | None = Field(
        None, description="mmdebstrap: minimal (the default: our own initrd, busybox-static + initrd_modules, "
                          "no udev: it only mounts /dev/vda) or distribution (the one the kernel package made); "
                          "import: an initrd file to boot the disk with")
    cmdline: str = ""
    seed: bool = Field(True, description="the guest reads the worm-testbed seed disk at boot")

    @model_validator(mode="after")
    def _initrd_kind_known(self) -> Recipe:
        if self.builder == "mmdebstrap" and self.initrd not in (None, "minimal", "distribution"):
            raise ValueError(f"initrd is minimal or distribution for a mmdebstrap image, not {self.initrd!r}")
        return self

    @property
    def initrd_kind(self) -> Literal["minimal", "distribution"]:
        """A mmdebstrap image's initrd: ours (minimal, the default) or the distribution's."""
        return "distribution" if self.initrd == "distribution" else "minimal"


@dataclass(frozen=True)
class BuiltImage:
    name: str
    key: str
    dir: Path
    manifest: dict[str, Any]

    @property
    def disk(self) -> Path:
        return self.dir / self.manifest["disk"]

    @property
    def kernel(self) -> Path | None:
        return self.dir / self.manifest["kernel"] if self.manifest.get("kernel") else None

    @property
    def initrd(self) -> Path | None:
        return self.dir / self.manifest["initrd"] if self.manifest.get("initrd") else None

    @property
    def cmdline(self) -> str:
        return self.manifest.get("cmdline", "")

    @property
    def disk_format(self) -> str:
        return self.manifest.get("disk_format", "qcow2")

    @property
    def seed(self) -> bool:
        return bool(self.manifest.get("seed", True))


# ---------------------------------------------------------------- where things are


def image_root() -> Path:
    return Path(os.environ.get("TESTBED_IMAGE_DIR", "/var/lib/worm-testbed/images"))


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes: $TESTBED_IMAGE_PATH (colon-separated) first, then the repo's vm-images/."""
    extra = [Path(p) for p in os.environ.get("TESTBED_IMAGE_PATH", "").split(":") if p]
    return [*extra, REPO_RECIPES]


def known_recipes() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for base in reversed(recipe_dirs()):
        if base.is_dir():
            for d in sorted(base.iterdir()):
                if (d / "image.yaml").is_file():
                    out[d.name] = d
    return out


def load_recipe(name: str) -> tuple[Recipe, Path]:
    recipes = known_recipes()
    if name not in recipes:
        known = ", ".join(sorted(recipes)) or "none"
        raise ImageError(f"no image recipe named '{name}'; known: {known}",
                         hint="add a folder vm-images/NAME/ with an image.yaml (docs/vms.md)")
    d = recipes[name]
    try:
        data = yaml.safe_load((d / "image.yaml").read_text())
        recipe = Recipe.model_validate(data)
    except (yaml.YAMLError, OSError) as exc:
        raise ImageError(f"{d / 'image.yaml'}: cannot read: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ImageError(f"{d / 'image.yaml'}: {problems}") from None
    if recipe.name != name:
        raise ImageError(f"{d / 'image.yaml'}: name '{recipe.name}' differs from its folder '{name}'")
    if recipe.builder == "mmdebstrap" and not recipe.suite:
        raise ImageError(f"{d / 'image.yaml'}: an mmdebstrap recipe needs 'suite'")
    if recipe.builder == "import" and not recipe.disk:
        raise ImageError(f"{d / 'image.yaml'}: an import recipe needs 'disk' (a path to the qcow2 or raw disk)")
    return recipe, d


# ---------------------------------------------------------------- package sources and the cache key (pure)


def parse_apt_sources(texts: list[tuple[str, str]]) -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of every `deb` source in one-line (.list) or deb822 (.sources) files."""
    out: list[tuple[str, str, list[str]]] = []
    for fname, text in texts:
        if fname.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                key = None
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0] in " \t" and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, val = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = val.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        out.append((uri, suite, fields.get("components", "").split()))
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if not line.startswith("deb "):
                    continue
                parts = re.sub(r"\[[^]]*\]", " ", line).split()
                if len(parts) >= 3:
                    out.append((parts[1], parts[2], parts[3:]))
    return out


def mirror_lines(recipe: Recipe, sources: list[tuple[str, str, list[str]]]) -> list[str]:
    """The apt lines an mmdebstrap recipe builds from: its own, or the machine's sources for its suite family
    (suite, suite-updates, suite-security), limited to the recipe's components."""
    if recipe.mirror:
        return list(recipe.mirror)
    assert recipe.suite
    family = {recipe.suite, f"{recipe.suite}-updates", f"{recipe.suite}-security"}
    lines = []
    for uri, suite, comps in sources:
        if suite in family:
            use = [c for c in recipe.components if c in comps]
            line = f"deb {uri} {suite} {' '.join(use)}"
            if use and line not in lines:
                lines.append(line)
    return lines


def machine_sources() -> list[tuple[str, str, list[str]]]:
    texts = []
    paths = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        paths += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    for p in paths:
        try:
            texts.append((p.name, p.read_text()))
        except OSError:
            continue
    return parse_apt_sources(texts)


def cache_key(recipe_dir: Path, mirrors: list[str]) -> str:
    """sha256 over every file of the recipe folder (path and content), the package sources and the builder
    version; the image is rebuilt exactly when one of these changes."""
    h = hashlib.sha256(f"builder {BUILDER_VERSION}\n".encode())
    for p in sorted(recipe_dir.rglob("*")):
        if p.is_file():
            rel = p.relative_to(recipe_dir).as_posix()
            h.update(f"file {rel} {oct(p.stat().st_mode & 0o777)}\n".encode())
            h.update(p.read_bytes())
    for line in mirrors:
        h.update(f"source {line}\n".encode())
    return h.hexdigest()[:16]


def current_key(name: str) -> tuple[Recipe, Path, str, list[str]]:
    recipe, d = load_recipe(name)
    mirrors = mirror_lines(recipe, machine_sources()) if recipe.builder == "mmdebstrap" else []
    if recipe.builder == "import":
        disk = _import_path(recipe, d, recipe.disk)
        st = disk.stat() if disk.exists() else None
        mirrors = [f"disk {disk} {st.st_size if st else 0} {st.st_mtime_ns if st else 0}"]
    return recipe, d, cache_key(d, mirrors), mirrors


# ---------------------------------------------------------------- finding built images


def built(name: str) -> BuiltImage | None:
    """The image built from the recipe as it is now, or None when it must be (re)built."""
    recipe, _d, key, _m = current_key(name)
    return _load_built(recipe.name, image_root() / recipe.name / key)


def _load_built(name: str, d: Path) -> BuiltImage | None:
    try:
        m = read_json(d / "manifest.json")
    except (OSError, ValueError):
        return None
    img = BuiltImage(name, d.name, d, m)
    if not img.disk.is_file():
        return None
    return img


def require(name: str) -> BuiltImage:
    img = built(name)
    if img is None:
        raise ImageError(f"guest image '{name}' is not built (or its recipe changed since)",
                         hint=f"run `testbed image build {name}` (about a minute from the Debian mirror)")
    return img


def list_images() -> list[dict[str, Any]]:
    """Every recipe, whether its current build exists, and every build on disk."""
    out: list[dict[str, Any]] = []
    for name in sorted(known_recipes()):
        try:
            _r, d, key, _m = current_key(name)
        except ImageError as exc:
            out.append({"name": name, "state": "invalid", "error": exc.message})
            continue
        builds = []
        for bd in sorted((image_root() / name).glob("*")) if (image_root() / name).is_dir() else []:
            img = _load_built(name, bd)
            if img:
                builds.append({"key": img.key, "current": img.key == key, "dir": str(bd),
                               "size_mib": round(img.disk.stat().st_size / 2**20),
                               "built": img.manifest.get("built"),
                               "build_seconds": img.manifest.get("build_seconds")})
        state = "built" if any(b["current"] for b in builds) else ("stale" if builds else "not built")
        out.append({"name": name, "recipe": str(d), "key": key, "state": state, "builds": builds})
    return out


# ---------------------------------------------------------------- building


def build(name: str = DEFAULT_IMAGE, *, force: bool = False, progress: Progress | None = None,
          log: Callable[[str], None] | None = None) -> tuple[BuiltImage, bool]:
    """Build image `name` unless its current build exists; returns (image, built_now)."""
    progress = progress or (lambda s, d, t: None)
    recipe, rdir, key, mirrors = current_key(name)
    final = image_root() / recipe.name / key
    if not force:
        img = _load_built(recipe.name, final)
        if img is not None:
            return img, False
    if not is_root():
        raise ImageError("building a guest image needs root (mmdebstrap --mode=root, file ownership in the disk)",
                         hint=f"run as root: sudo testbed image build {name}")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=final.parent))
    started = time.monotonic()
    try:
        if recipe.builder == "import":
            manifest = _build_import(recipe, rdir, work, progress)
        else:
            manifest = _build_mmdebstrap(recipe, rdir, work, mirrors, progress, log)
        manifest.update({"name": recipe.name, "key": key, "builder": recipe.builder, "sources": mirrors,
                         "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": recipe.seed,
                         "build_seconds": round(time.monotonic() - started, 1)})
        shutil.rmtree(work / "wheels", ignore_errors=True)
        os.chmod(work, 0o755)
        atomic_write_json(work / "manifest.json", manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    img = _load_built(recipe.name, final)
    assert img is not None
    return img, True


def _import_path(recipe: Recipe, rdir: Path, p: str | None) -> Path:
    assert p is not None
    path = Path(os.path.expanduser(p))
    return path if path.is_absolute() else rdir / path


def _build_import(recipe: Recipe, rdir: Path, work: Path, progress: Progress) -> dict[str, Any]:
    progress("copying the disk", 0, 2)
    disk = _import_path(recipe, rdir, recipe.disk)
    if not disk.is_file():
        raise ImageError(f"image '{recipe.name}': disk {disk} does not exist")
    info = run(["qemu-img", "info", "--output=json", str(disk)], timeout=60).check(f"qemu-img info {disk}")
    fmt = json.loads(info.stdout).get("format", "raw")
    run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(work / "disk.qcow2")], timeout=1800).check(
        f"converting {disk}")
    m: dict[str, Any] = {"disk": "disk.qcow2", "disk_format": "qcow2", "cmdline": recipe.cmdline,
                         "source_format": fmt}
    for what in ("kernel", "initrd"):
        src = getattr(recipe, what)
        if src:
            shutil.copyfile(_import_path(recipe, rdir, src), work / what)
            m[what] = what
    progress("done", 2, 2)
    return m


def _build_mmdebstrap(recipe: Recipe, rdir: Path, work: Path, mirrors: list[str], progress: Progress,
                      log: Callable[[str], None] | None) -> dict[str, Any]:
    total = 6
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("mkfs.ext4", "e2fsprogs"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            raise ImageError(f"'{tool}' is not installed", hint=f"apt-get install {pkg} (or make setup-vm)")
    if not mirrors:
        raise ImageError(f"image '{recipe.name}': no apt source for suite {recipe.suite} in /etc/apt/sources.list*",
                         hint="add the mirror to the recipe's 'mirror:' list")
    progress("python wheels", 0, total)
    wheels = _wheels(recipe, work / "wheels")
    rootfs = work / "rootfs"
    progress("installing packages (mmdebstrap)", 1, total)
    setup_hook = ""
    if recipe.initrd_modules:
        mods = "\\n".join(recipe.initrd_modules)
        setup_hook = ('mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
                      'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/worm-testbed.conf" && '
                      f'printf "{mods}\\n" > "$1/usr/share/initramfs-tools/modules.d/worm-testbed"')
    argv = ["mmdebstrap", f"--variant={recipe.variant}", "--mode=root", "--format=directory",
            f"--components={','.join(recipe.components)}", f"--include={','.join(recipe.packages)}",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*"]
    if setup_hook:
        argv.append(f"--setup-hook={setup_hook}")
    argv += [recipe.suite or "", str(rootfs), *mirrors]
    _stream(argv, work / "mmdebstrap.log", progress, 1, total, log, timeout=1200)

    progress("configuring offline", 3, total)
    _customize(recipe, rdir, rootfs, wheels)
    kernel = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrd = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernel or not initrd:
        raise ImageError(f"image '{recipe.name}': no kernel/initrd in /boot; add a linux-image package to 'packages'")
    shutil.copyfile(kernel[-1], work / "vmlinuz")
    if recipe.initrd_kind == "minimal":
        (work / "initrd.img").write_bytes(minimal_initrd(rootfs, kernel[-1].name.removeprefix("vmlinuz-"),
                                                         recipe.initrd_modules))
    else:
        shutil.copyfile(initrd[-1], work / "initrd.img")

    progress("packing the root file system (mkfs.ext4 -d)", 4, total)
    raw = work / "disk.raw"
    run(["mkfs.ext4", "-q", "-F", "-L", "wtroot", "-d", str(rootfs), str(raw),
         f"{recipe.disk_mib}M"], timeout=600).check("mkfs.ext4 -d")
    shutil.rmtree(rootfs)
    progress("converting to qcow2", 5, total)
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], timeout=600).check(
        "qemu-img convert")
    raw.unlink()
    progress("done", total, total)
    return {"disk": "disk.qcow2", "disk_format": "qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
            "cmdline": recipe.cmdline, "packages": recipe.packages, "wheels": [w.name for w in wheels],
            "kernel_version": kernel[-1].name.removeprefix("vmlinuz-")}


def _wheels(recipe: Recipe, dest: Path) -> list[Path]:
    if not recipe.wheels:
        return []
    dest.mkdir(parents=True)
    res = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w",
               str(dest), *recipe.wheels], timeout=600)
    if not res.ok:
        raise ImageError(f"building wheels {', '.join(recipe.wheels)} failed: "
                         f"{(res.stderr.strip().splitlines() or ['pip failed'])[-1]}",
                         hint="the NetfilterQueue binding compiles against libnetfilter-queue-dev and gcc "
                              "(make setup-vm installs them)")
    return sorted(dest.glob("*.whl"))


def _stream(argv: list[str], logfile: Path, progress: Progress, step: int, total: int,
            log: Callable[[str], None] | None, timeout: float) -> None:
    """Run a builder, its output into logfile; its `I: …` lines become progress; bounded in time."""
    deadline = time.monotonic() + timeout
    with open(logfile, "w") as fh:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, bufsize=1)
        assert p.stdout is not None
        for line in p.stdout:
            fh.write(line)
            if log:
                log(line.rstrip())
            if line.startswith("I: "):
                progress(line[3:].strip()[:60], step, total)
            if time.monotonic() > deadline:
                p.kill()
                break
        rc = p.wait(timeout=30)
    if rc != 0:
        tail = logfile.read_text().strip().splitlines()[-5:]
        raise ImageError(f"{argv[0]} failed (exit {rc}); last lines:\n  " + "\n  ".join(tail),
                         hint=f"the full log was {logfile}; is the Debian mirror reachable (apt-get update)?")


def _customize(recipe: Recipe, rdir: Path, rootfs: Path, wheels: list[Path]) -> None:
    overlay = rdir / "overlay"
    if overlay.is_dir():
        shutil.copytree(overlay, rootfs, dirs_exist_ok=True, symlinks=True)
    if recipe.mask:
        run(["systemctl", f"--root={rootfs}", "mask", *recipe.mask], timeout=60).check("masking units")
    if recipe.enable:
        run(["systemctl", f"--root={rootfs}", "enable", *recipe.enable], timeout=60).check("enabling units")
    if recipe.mask_generators:
        gdir = rootfs / "etc/systemd/system-generators"
        gdir.mkdir(parents=True, exist_ok=True)
        for g in recipe.mask_generators:
            (gdir / g).unlink(missing_ok=True)
            (gdir / g).symlink_to("/dev/null")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()              # each host gets its own from the lab's seed; none is baked into the image
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/hostname").write_text("wt-guest\n")
    resolv = rootfs / "etc/resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    if wheels:
        pys = sorted(p.name for p in (rootfs / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
        if not pys:
            raise ImageError("wheels need python3 in the image")
        ver = pys[-1].removeprefix("python")                   # 3.11
        tag = "cp" + ver.replace(".", "")
        site = rootfs / f"usr/local/lib/python{ver}/dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        for w in wheels:
            if f"-{tag}-" not in w.name and "-py3-none-" not in w.name:
                raise ImageError(f"wheel {w.name} does not fit the guest's Python {ver}",
                                 hint="build images with a Python of the same minor version as the guest's")
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
