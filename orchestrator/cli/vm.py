"""CLI verbs for guest images and out-of-band management: `testbed image build|list`, `testbed power`,
`testbed console` (interactive: the one verb without --json). Registered on the main app by orchestrator.cli
(`register(app)`)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from orchestrator.cli.common import Bar, emit_json, err, handles_errors, out
from orchestrator.errors import UsageError
from orchestrator.providers.libvirt import DEFAULT_IMAGE

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output (errors too, on stdout)")]
LabArg = Annotated[str, typer.Argument(help="lab name, or its lab file")]


def register(app: typer.Typer) -> None:
    image_app = typer.Typer(help="Guest images for the libvirt provider, built from distribution packages.",
                            no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(image_app, name="image")
    image_app.command("build")(handles_errors(image_build))
    image_app.command("list")(handles_errors(image_list))
    app.command()(handles_errors(power))
    app.command()(handles_errors(console))


def image_build(name: Annotated[str, typer.Argument(help="recipe name (vm-images/NAME)")] = DEFAULT_IMAGE,
                force: Annotated[bool, typer.Option("--force", help="rebuild even if cached")] = False,
                verbose: Annotated[bool, typer.Option("-v", "--verbose", help="show the builder's output")] = False,
                as_json: JsonOpt = False):
    """Build a guest image (cached by a hash of its recipe and package sources).

    Examples:  testbed image build  ·  testbed image build debian --force -v
    """
    from orchestrator.providers.libvirt import images

    t0 = time.monotonic()
    with Bar(f"building image {name}") as bar:
        img, fresh = images.build(name, force=force, progress=bar,
                                  log=(lambda line: err.print(line, highlight=False, markup=False))
                                  if verbose else None)
    size = img.disk.stat().st_size / 2**20
    if as_json:
        emit_json({"image": name, "key": img.key, "built": fresh, "size_mib": round(size), "dir": str(img.dir),
                   "seconds": round(time.monotonic() - t0, 1)})
        return
    what = f"built in {time.monotonic() - t0:.1f} s" if fresh else "cached (recipe unchanged)"
    out.print(f"image [bold]{name}[/] {img.key}: {what}; {size:.0f} MiB at {img.dir}")

def image_list(as_json: JsonOpt = False):
    """Known recipes, whether their current build exists, and the builds on disk.

    Examples:  testbed image list  ·  testbed image list --json
    """
    from rich.table import Table

    from orchestrator.providers.libvirt import images

    rows = images.list_images()
    if as_json:
        emit_json(rows)
        return
    t = Table("image", "state", "key", "size", "built", "recipe")
    for r in rows:
        cur = next((b for b in r.get("builds", []) if b["current"]), None)
        t.add_row(r["name"], r["state"], r.get("key", ""), f"{cur['size_mib']} MiB" if cur else "",
                  (cur or {}).get("built") or "", r.get("recipe", r.get("error", "")))
    out.print(t)

def power(lab: LabArg,
          host: Annotated[str, typer.Argument(help="host name")],
          action: Annotated[str, typer.Argument(help="on, off or cycle")],
          as_json: JsonOpt = False):
    """Out-of-band power control of a lab host (the paper's remote management cards).

    Examples:  testbed power stopping-speed target1 cycle  ·  testbed power labs/vm-stopping-speed.yaml blade off
    """
    from orchestrator.lab import lifecycle
    from orchestrator.labfile.naming import lab_name

    if action not in ("on", "off", "cycle"):
        raise UsageError(f"power action '{action}': use on, off or cycle")
    lab = lab_name(lab)
    prov, _ = lifecycle.provider_for(lab)
    said = prov.power(lab, host, action)
    if as_json:
        emit_json({"lab": lab, "host": host, "action": action, "result": said})
        return
    out.print(said)

def console(lab: LabArg,
            host: Annotated[str, typer.Argument(help="host name")]):
    """Attach this terminal to a lab host's console (a VM's serial console; a shell in a namespace host).

    Examples:  testbed console vm-stopping-speed blade  ·  testbed console stopping-speed target1
    """
    from orchestrator.lab import lifecycle
    from orchestrator.labfile.naming import lab_name

    lab = lab_name(lab)
    prov, _ = lifecycle.provider_for(lab)
    raise typer.Exit(prov.console(lab, host))
