"""The `testbed` command: thin typer verbs, each parsing its arguments and calling one core function.

A user's mistake is a message and an exit code (2 for bad input), never a traceback; an unexpected exception
is one line too, and `--debug` shows its traceback (common.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.cli import common
from orchestrator.cli.common import err, handles_errors
from orchestrator.lab import lifecycle

app = typer.Typer(
    help="worm-testbed: build isolated labs, provision them, let a benign test worm loose, and measure how "
         "fast a containment mechanism (the Williamson virus throttle, or yours) stops it.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)      # plain lines stay whole (grep-able); tables still fit the terminal; errors
                                   # go to common.err (stderr)


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", help="show the traceback of an error (also accepted after the verb; or TESTBED_DEBUG=1)")] = False):
    if debug:
        common.set_debug(True)


class _Bar:
    """Progress for long work on stderr (silent when stderr is not a terminal)."""

    def __init__(self, what: str):
        self.what = what
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"),
                                 TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task(self.what, total=1, step="")
        return self

    def __call__(self, step: str, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total, step=step)

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)


# ------------------------------------------------------------------------------------------ lab verbs


@app.command()
@handles_errors
def up(file: Annotated[Path, typer.Argument(help="lab file (labs/*.yaml)")],
       provider: Annotated[str | None, typer.Option(help="override the lab file's provider")] = None,
       name: Annotated[str | None, typer.Option(help="override the lab's name (run a second copy)")] = None,
       provision: Annotated[bool, typer.Option("--provision", help="provision every host after building")] = False):
    """Validate a lab file, then build the lab (nothing is created if the file has a problem)."""
    t0 = time.monotonic()
    with _Bar("building lab") as bar:
        lab = lifecycle.up(file, provider=provider, name=name, progress=bar)
    out.print(f"lab [bold]{lab.name}[/] is up: {len(lab.hosts)} hosts on {len(lab.segments)} segments "
              f"({lab.provider}, {time.monotonic() - t0:.2f} s)")
    if provision:
        _provision(lab.name, None)


@app.command()
@handles_errors
def down(name: Annotated[str | None, typer.Argument(help="lab name (no lab file needed)")] = None,
         all_: Annotated[bool, typer.Option("--all", help="remove every lab this tool made, and nothing else")] = False):
    """Remove a lab — everything it made, found from its name alone. Idempotent."""
    if bool(name) == all_:
        raise typer.BadParameter("give a lab name or --all (not both)")
    t0 = time.monotonic()
    if all_:
        with _Bar("removing labs") as bar:
            done = lifecycle.down_all(progress=bar)
        if not done:
            out.print("no labs to remove")
        for lab, removed in done.items():
            out.print(f"lab [bold]{lab}[/] removed ({_count(removed)})")
        left = lifecycle.unrecorded_namespaces()
        if left:
            out.print(f"left alone (not recorded by any lab here): {', '.join(left)}")
        return
    with _Bar(f"removing {name}") as bar:
        removed = lifecycle.down(name, progress=bar)
    if removed is None:
        out.print(f"no lab named '{name}'; nothing to do")
        return
    out.print(f"lab [bold]{name}[/] removed ({_count(removed)}, {time.monotonic() - t0:.2f} s)")


def _count(removed) -> str:
    kinds: dict[str, int] = {}
    for r in removed:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing was left"


@app.command()
@handles_errors
def status(name: Annotated[str | None, typer.Argument(help="lab name; all labs when omitted")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False):
    """Show the labs that are up, or one lab's hosts, addresses and processes."""
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


@app.command(name="exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handles_errors
def exec_(lab: Annotated[str, typer.Argument(help="lab name")],
          host: Annotated[str, typer.Argument(help="host name")],
          cmd: Annotated[list[str], typer.Argument(help="command and arguments, after --")],
          via: Annotated[str, typer.Option(help="oob (through the provider) or ssh (from the admin server)")] = "oob",
          timeout: Annotated[float | None, typer.Option(help="seconds before the command is stopped")] = None):
    """Run a command on a lab host; its exit code is passed through."""
    if via == "oob":
        res = lifecycle.exec_(lab, host, cmd, capture=False, timeout=timeout)
    elif via == "ssh":
        from orchestrator.lab import ssh
        res = ssh.exec_lab(lab, host, cmd, timeout=timeout)
    else:
        raise typer.BadParameter("--via is oob or ssh")
    raise typer.Exit(res.exit_code)


@app.command()
@handles_errors
def check(lab: Annotated[str, typer.Argument(help="lab name")],
          as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
          verbose: Annotated[bool, typer.Option("-v", "--verbose", help="one row per host and check")] = False):
    """Audit a running lab's isolation with real probes inside every host; non-zero exit names each leak."""
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


@app.command()
@handles_errors
def analyse(pcap: Annotated[Path, typer.Argument(help="a pcap or pcapng capture, taken anywhere")],
            throttle_log: Annotated[Path | None, typer.Option(help="the throttle's JSON-lines event log")] = None,
            worm_log: Annotated[Path | None, typer.Option(help="the test worm's JSON-lines attempt log")] = None,
            sniffer: Annotated[str | None, typer.Option(
                help="where the capture stands relative to the throttle: after (host placement) or before "
                     "(gateway, wire); default from the throttle log's mode")] = None,
            tolerance: Annotated[float, typer.Option(help="seconds allowed between witnesses when matching")] = 0.25,
            udp: Annotated[str, typer.Option(help="which UDP datagrams count as attempts: first_per_destination, "
                                                  "first_per_flow, every or none")] = "first_per_destination",
            as_json: Annotated[bool, typer.Option("--json", help="one JSON object (packets, syn_attempts, "
                                                                 "udp_attempts, sources, metrics, findings, …)")] = False):
    """Per-source attempt timelines and stopping-speed metrics from a capture (and the logs, when given)."""
    from orchestrator.analysis.attempts import UDP_MODES
    from orchestrator.cli.analyse import analyse as run_analysis

    if sniffer not in (None, "before", "after"):
        raise typer.BadParameter("--sniffer is before or after")
    if udp not in UDP_MODES:
        raise typer.BadParameter(f"--udp is one of {', '.join(UDP_MODES)}")
    raise typer.Exit(run_analysis(pcap, throttle_log, worm_log, as_json, out, sniffer=sniffer,
                                  tolerance_s=tolerance, udp=udp))


@app.command()
@handles_errors
def schema():
    """Print the JSON Schema of lab files (for editors)."""
    from orchestrator.labfile.load import json_schema
    print(json.dumps(json_schema(), indent=2))


@app.command()
@handles_errors
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
        with _Bar("waiting for SSH") as bar:
            acc.wait_reachable(timeout=60, progress=lambda d, t: bar("hosts answering", d, t))
    rep = provision.provision_lab(name, roles=roles, gateway_empty=gateway_empty, console=err)
    if as_json:
        print(provision.report_json(rep))
    else:
        out.print(provision.describe(rep))


def main() -> int:
    return common.main(app)


from orchestrator.cli.results import register as _register_results  # noqa: E402, I001
from orchestrator.cli.vm import register as _register_vm  # noqa: E402, I001
_register_results(app, console=out, errors=err, handles_errors=handles_errors)
_register_vm(app)
