"""The lab verbs of `testbed`: up, down, status, exec, check, provision, schema. Each parses its arguments and
calls one function of orchestrator.lab."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import Bar, err, handles_errors, out

if TYPE_CHECKING:
    from orchestrator.providers.base import Resource


def register(app: typer.Typer) -> None:
    app.command()(handles_errors(up))
    app.command()(handles_errors(down))
    app.command()(handles_errors(status))
    app.command(name="exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(handles_errors(exec_))
    app.command()(handles_errors(check))
    app.command()(handles_errors(schema))
    app.command()(handles_errors(provision))


def up(file: Annotated[Path, typer.Argument(help="lab file (labs/*.yaml)")],
       provider: Annotated[str | None, typer.Option(help="override the lab file's provider")] = None,
       name: Annotated[str | None, typer.Option(help="override the lab's name (run a second copy)")] = None,
       provision: Annotated[bool, typer.Option("--provision", help="provision every host after building")] = False):
    """Validate a lab file, then build the lab (nothing is created if the file has a problem)."""
    from orchestrator.lab import lifecycle
    t0 = time.monotonic()
    with Bar("building lab") as bar:
        lab = lifecycle.up(file, provider=provider, name=name, progress=bar)
    out.print(f"lab [bold]{lab.name}[/] is up: {len(lab.hosts)} hosts on {len(lab.segments)} segments "
              f"({lab.provider}, {time.monotonic() - t0:.2f} s)")
    if provision:
        _provision(lab.name, None)


def down(name: Annotated[str | None, typer.Argument(help="lab name (no lab file needed)")] = None,
         all_: Annotated[bool, typer.Option("--all", help="remove every lab this tool made, and nothing else")] = False):
    """Remove a lab — everything it made, found from its name alone. Idempotent."""
    from orchestrator.lab import lifecycle
    if bool(name) == all_:
        raise typer.BadParameter("give a lab name or --all (not both)")
    t0 = time.monotonic()
    if all_:
        with Bar("removing labs") as bar:
            done = lifecycle.down_all(progress=bar)
        if not done:
            out.print("no labs to remove")
        for lab, removed in done.items():
            out.print(f"lab [bold]{lab}[/] removed ({_count(removed)})")
        left = lifecycle.unrecorded()
        if left:
            out.print(f"left alone (not recorded by any lab here): {', '.join(left)}")
        return
    with Bar(f"removing {name}") as bar:
        removed = lifecycle.down(name, progress=bar)
    if removed is None:
        out.print(f"no lab named '{name}'; nothing to do")
        return
    out.print(f"lab [bold]{name}[/] removed ({_count(removed)}, {time.monotonic() - t0:.2f} s)")


def _count(removed: list[Resource]) -> str:
    kinds: dict[str, int] = {}
    for r in removed:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing was left"


def status(name: Annotated[str | None, typer.Argument(help="lab name; all labs when omitted")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False):
    """Show the labs that are up, or one lab's hosts, addresses and processes."""
    from rich.table import Table

    from orchestrator.lab import lifecycle
    if name is None:
        labs = lifecycle.status_all()
        if as_json:
            print(json.dumps([lifecycle.status_dict(s) for s in labs], indent=2))
            return
        if not labs:
            out.print("no labs are up")
        t = Table("lab", "provider", "state", "hosts", "up since", "lab file")
        for s in labs:
            up_hosts = sum(h.state == "up" for h in s.hosts)
            t.add_row(s.name, s.provider, s.state, f"{up_hosts}/{len(s.hosts)}",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created)), s.source)
        if labs:
            out.print(t)
        return
    s = lifecycle.status(name)
    if as_json:
        print(json.dumps(lifecycle.status_dict(s), indent=2))
        return
    t = Table("host", "role", "state", "interfaces", "processes", title=f"lab {s.name} ({s.provider}, {s.state})")
    for h in s.hosts:
        ifs = " ".join(f"{k}={v or 'no-ip'}" + ("" if h.links.get(k) == "UP" else f"({h.links.get(k)})")
                       for k, v in h.addresses.items())
        procs = " ".join(f"{p['name']}:{p['pid']}{'' if p['alive'] else '(dead)'}" for p in h.processes)
        t.add_row(h.name, h.role, h.state, ifs, procs)
    out.print(t)
    for n in s.notes:
        out.print(f"[yellow]note:[/] {n}")


def exec_(lab: Annotated[str, typer.Argument(help="lab name")],
          host: Annotated[str, typer.Argument(help="host name")],
          cmd: Annotated[list[str], typer.Argument(help="command and arguments, after --")],
          via: Annotated[str, typer.Option(help="oob (through the provider) or ssh (from the admin server)")] = "oob",
          timeout: Annotated[float | None, typer.Option(help="seconds before the command is stopped")] = None):
    """Run a command on a lab host; its exit code is passed through."""
    from orchestrator.lab import lifecycle
    if via == "oob":
        res = lifecycle.exec_(lab, host, cmd, capture=False, timeout=timeout)
    elif via == "ssh":
        from orchestrator.lab import ssh
        res = ssh.exec_lab(lab, host, cmd, timeout=timeout)
    else:
        raise typer.BadParameter("--via is oob or ssh")
    raise typer.Exit(res.exit_code)


def check(lab: Annotated[str, typer.Argument(help="lab name")],
          as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
          verbose: Annotated[bool, typer.Option("-v", "--verbose", help="one row per host and check")] = False):
    """Audit a running lab's isolation with real probes inside every host; non-zero exit names each leak."""
    from rich.table import Table

    from orchestrator.lab import lifecycle
    rep = lifecycle.check(lab)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
        raise typer.Exit(0 if rep.ok else 1)
    t = Table("check", "result", "hosts", "details", title=f"isolation audit of {lab}")
    order: dict[str, list] = {}
    for f in rep.findings:
        order.setdefault(f.check, []).append(f)
    for chk, items in order.items():
        bad = [f for f in items if not f.ok]
        if verbose:
            for f in items:
                t.add_row(chk, "ok" if f.ok else f"[red]{f.kind.upper()}[/]", f.host, f.detail)
            continue
        result = "ok" if not bad else f"[red]{bad[0].kind.upper()}[/]"
        all_hosts, bad_hosts = {f.host for f in items}, {f.host for f in bad}
        hosts = f"{len(all_hosts - bad_hosts)}/{len(all_hosts)} ok"
        details = "; ".join(f"{f.host}: {f.detail}" for f in bad) if bad else items[0].detail
        t.add_row(chk, result, hosts, details)
    out.print(t)
    if rep.ok:
        out.print(f"[green]lab {lab} is isolated[/]")
        return
    for f in rep.problems:
        err.print(f"{f.kind.upper()}: {f.host}: {f.check}: {f.detail}", highlight=False)
    raise typer.Exit(1)


def schema():
    """Print the JSON Schema of lab files (for editors)."""
    from orchestrator.labfile.models import json_schema
    print(json.dumps(json_schema(), indent=2))


def provision(lab: Annotated[str, typer.Argument(help="lab name")],
              roles: Annotated[str | None, typer.Option(
                  help="comma-separated roles to apply: common, testworm, throttle, sniffer, gateway, injector "
                       "(default: all)")] = None,
              gateway_empty: Annotated[str, typer.Option(
                  help="what the gateway does with scans of empty addresses: reset (answer RST) or blackhole")] = "reset",
              as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False):
    """Install and configure every host for its role with Ansible over SSH on the admin LAN (idempotent)."""
    _provision(lab, roles.split(",") if roles else None, gateway_empty, as_json)


def _provision(name: str, roles: list[str] | None, gateway_empty: str = "reset", as_json: bool = False) -> None:
    from orchestrator.lab import provision
    from orchestrator.lab.ssh import Access

    with Access(name) as acc:
        with Bar("waiting for SSH") as bar:
            acc.wait_reachable(timeout=60, progress=lambda d, t: bar("hosts answering", d, t))
    rep = provision.provision_lab(name, roles=roles, gateway_empty=gateway_empty, console=err)
    if as_json:
        print(provision.report_json(rep))
    else:
        out.print(provision.describe(rep))
