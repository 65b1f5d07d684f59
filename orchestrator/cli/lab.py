"""The lab verbs of `testbed`: up, down, status, exec, check, provision, schema, validate. Each parses its
arguments and calls one function of orchestrator.lab. Wherever a lab is named, its lab file (or an experiment
file using it) may stand instead (orchestrator.labfile.naming)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import Bar, emit_json, err, handles_errors, out

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output (errors too, on stdout)")]
LabArg = Annotated[str, typer.Argument(help="lab name, or its lab file (or an experiment file using it)")]


def lab_name(ref: str) -> str:
    from orchestrator.labfile.naming import lab_name as name_of
    return name_of(ref)

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
    app.command()(handles_errors(validate))


def up(file: Annotated[Path, typer.Argument(help="lab file (labs/*.yaml with 'name:' and 'hosts:')")],
       provider: Annotated[str | None, typer.Option(help="override the lab file's provider")] = None,
       name: Annotated[str | None, typer.Option(help="override the lab's name (run a second copy)")] = None,
       provision: Annotated[bool, typer.Option("--provision", help="provision every host after building")] = False,
       hypervisor: Annotated[str | None, typer.Option(
           help="libvirt: build on this one of the lab file's libvirt.uris (default: the first)")] = None,
       as_json: JsonOpt = False):
    """Validate a lab file, then build the lab (nothing is created if the file has a problem).

    An experiment file is refused with a pointer to `testbed run`.

    Examples:  testbed up labs/stopping-speed.yaml  ·  testbed up labs/stopping-speed.yaml --name x1 --provision
    """
    from orchestrator.lab import lifecycle

    t0 = time.monotonic()
    with Bar("building lab") as bar:
        lab = lifecycle.up(file, provider=provider, name=name, progress=bar, hypervisor=hypervisor)
    took = time.monotonic() - t0
    on = lab.options.get("uri") if lab.provider == "libvirt" else None
    if as_json:
        done = {"lab": lab.name, "provider": lab.provider, "hosts": [h.name for h in lab.hosts],
                "segments": len(lab.segments), "seconds": round(took, 3)} | ({"hypervisor": on} if on else {})
        if provision:
            done["provision"] = json.loads(_provision(lab.name, None, as_json=True, quiet=True) or "null")
        emit_json(done)
        return
    out.print(f"lab [bold]{lab.name}[/] is up: {len(lab.hosts)} hosts on {len(lab.segments)} segments "
              f"({lab.provider}{', on ' + on.split('?', 1)[0] if on else ''}, {took:.2f} s)")
    if provision:
        _provision(lab.name, None)


def down(name: Annotated[str | None, typer.Argument(
             help="lab name, or its lab file (or an experiment file using it)")] = None,
         all_: Annotated[bool, typer.Option("--all", help="remove every lab this tool made, and nothing else")] = False,
         as_json: JsonOpt = False):
    """Remove a lab — everything it made, found from its name (or its file's `name:`) alone.

    A lab that is not (or no longer) here is exit 3 "not found", as for status, exec and check.

    Examples:  testbed down stopping-speed  ·  testbed down labs/stopping-speed.yaml  ·  testbed down --all
    """
    from orchestrator.errors import LabNotFoundError
    from orchestrator.lab import lifecycle

    if bool(name) == all_:
        raise typer.BadParameter("give a lab name or --all (not both)")
    t0 = time.monotonic()
    if all_:
        with Bar("removing labs") as bar:
            done = lifecycle.down_all(progress=bar)
        left = lifecycle.unrecorded()
        if as_json:
            emit_json({"removed": {lab: _kinds(r) for lab, r in done.items()}, "left_alone": left})
            return
        if not done:
            out.print("no labs to remove")
        for lab, removed in done.items():
            out.print(f"lab [bold]{lab}[/] removed ({_count(removed)})")
        if left:
            out.print(f"left alone (not recorded by any lab here): {', '.join(left)}")
        return
    assert name is not None
    lab_ = lab_name(name)
    with Bar(f"removing {lab_}") as bar:
        gone = lifecycle.down(lab_, progress=bar)
    if gone is None:
        raise LabNotFoundError(f"no lab named '{lab_}' is here; nothing to remove")
    if as_json:
        emit_json({"lab": lab_, "removed": _kinds(gone), "seconds": round(time.monotonic() - t0, 3)})
        return
    out.print(f"lab [bold]{lab_}[/] removed ({_count(gone)}, {time.monotonic() - t0:.2f} s)")


def _kinds(removed: list[Resource]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for r in removed:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    return dict(sorted(kinds.items()))


def _count(removed: list[Resource]) -> str:
    return ", ".join(f"{n} {k}" for k, n in _kinds(removed).items()) or "nothing was left"


def status(name: Annotated[str | None, typer.Argument(
               help="lab name or its file; all labs when omitted")] = None,
           as_json: JsonOpt = False):
    """Show the labs that are up, or one lab's hosts, addresses and processes.

    Examples:  testbed status  ·  testbed status stopping-speed --json  ·  testbed status labs/stopping-speed.yaml
    """
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
    s = lifecycle.status(lab_name(name))
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


def exec_(lab: LabArg,
          host: Annotated[str, typer.Argument(help="host name")],
          cmd: Annotated[list[str], typer.Argument(help="command and arguments, after --")],
          via: Annotated[str, typer.Option(help="oob (through the provider) or ssh (from the admin server)")] = "oob",
          timeout: Annotated[float | None, typer.Option(help="seconds before the command is stopped")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="capture the output and print {exit_code, stdout, "
                                                               "stderr} as JSON")] = False):
    """Run a command on a lab host; its exit code is passed through (a lab or host not found is 3).

    Examples:  testbed exec stopping-speed blade -- ip -br addr  ·  testbed exec labs/stopping-speed.yaml target1 --via ssh -- hostname
    """
    from orchestrator.lab import lifecycle

    lab = lab_name(lab)
    if via == "oob":
        res = lifecycle.exec_(lab, host, cmd, capture=as_json, timeout=timeout)
    elif via == "ssh":
        from orchestrator.lab import ssh
        res = ssh.exec_lab(lab, host, cmd, timeout=timeout, capture=as_json)
    else:
        raise typer.BadParameter("--via is oob or ssh")
    if as_json:
        emit_json({"lab": lab, "host": host, "exit_code": res.exit_code, "stdout": res.stdout or "",
                   "stderr": res.stderr or ""})
    raise typer.Exit(res.exit_code)


def check(lab: LabArg,
          as_json: JsonOpt = False,
          verbose: Annotated[bool, typer.Option("-v", "--verbose", help="one row per host and check")] = False):
    """Audit a running lab's isolation with real probes inside every host; exit 1 names each leak.

    Examples:  testbed check stopping-speed  ·  testbed check labs/stopping-speed.yaml -v  ·  testbed check x1 --json
    """
    from rich.table import Table

    from orchestrator.lab import lifecycle

    lab = lab_name(lab)
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


def schema(experiment: Annotated[bool, typer.Option(
               "--experiment", help="the schema of experiment files instead of lab files")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="accepted for symmetry: the schema is JSON")] = False):
    """Print the JSON Schema of lab files, or of experiment files (for editors).

    Examples:  testbed schema > lab.schema.json  ·  testbed schema --experiment > experiment.schema.json
    """
    if experiment:
        from orchestrator.experiment.spec import experiment_schema
        emit_json(experiment_schema())
        return
    from orchestrator.labfile.models import json_schema
    emit_json(json_schema())


def validate(files: Annotated[list[Path], typer.Argument(help="lab or experiment files (told apart by "
                                                                "'experiment:'); an experiment's lab is checked too")],
             as_json: JsonOpt = False):
    """Check lab and experiment files without building anything: every problem of every file at once.

    Exit 0 when every file is good, 2 when any has a problem (all listed, the parse and the semantic checks
    together). Nothing is created.

    Examples:  testbed validate labs/*.yaml  ·  testbed validate labs/demo-sweep.yaml --json
    """
    from orchestrator.experiment.validate import validate_file

    results = [validate_file(f) for f in files]
    bad = sum(1 for r in results if not r.ok)
    if as_json:
        emit_json({"ok": bad == 0, "files": [r.to_dict() for r in results]})
    else:
        for r in results:
            if r.ok:
                out.print(f"{r.path}: ok ({r.describe()})", highlight=False)
            for e in r.errors:
                err.print(e.message, highlight=False, markup=False)
        out.print(f"{len(results) - bad} of {len(results)} file(s) good", highlight=False)
    raise typer.Exit(2 if bad else 0)


def provision(lab: LabArg,
              roles: Annotated[str | None, typer.Option(
                  help="comma-separated roles to apply: common, testworm, throttle, sniffer, gateway, injector "
                       "(default: all)")] = None,
              gateway_empty: Annotated[str, typer.Option(
                  help="what the gateway does with scans of empty addresses: reset (answer RST) or blackhole")] = "reset",
              as_json: JsonOpt = False):
    """Install and configure every host for its role with Ansible over SSH on the admin LAN (idempotent).

    Examples:  testbed provision stopping-speed  ·  testbed provision labs/stopping-speed.yaml --roles throttle
    """
    _provision(lab_name(lab), roles.split(",") if roles else None, gateway_empty, as_json)


def _provision(name: str, roles: list[str] | None, gateway_empty: str = "reset", as_json: bool = False,
               quiet: bool = False) -> str | None:
    from orchestrator.lab import provision
    from orchestrator.lab.ssh import Access

    with Access(name) as acc:
        with Bar("waiting for SSH") as bar:
            acc.wait_reachable(timeout=60, progress=lambda d, t: bar("hosts answering", d, t))
    rep = provision.provision_lab(name, roles=roles, gateway_empty=gateway_empty, console=err)
    if as_json:
        text = provision.report_json(rep)
        if quiet:
            return text
        print(text)
    else:
        out.print(provision.describe(rep))
    return None
