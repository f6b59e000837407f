"""The `labctl` command line: parse, call the lab and topology modules, print (rich tables or --json)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from labctl import __version__
from labctl.backends import CHOICES as BACKEND_CHOICES
from labctl.backends.base import BackendError, LabStatus
from labctl.lab import gateway_view
from labctl.lab.gateways import gateway_nodes, list_sas, query, wait_established
from labctl.lab.lifecycle import backend_of, down_lab, up_lab
from labctl.lab.model import Plan
from labctl.lab.naming import check_name
from labctl.lab.state import LabExistsError, LabState, all_labs
from labctl.topology.catalog import resolve_topology, shipped_topologies
from labctl.topology.errors import TopologyError
from labctl.topology.graph import FORMATS as GRAPH_FORMATS
from labctl.topology.graph import render_graph
from labctl.topology.load import load_topology
from labctl.topology.model import Topology
from labctl.topology.variants import parse_assignment

app = typer.Typer(
    help="A virtual IPsec lab: build topologies of hosts, routers and IPsec gateways on network namespaces "
    "or Docker, run commands in them, tear them down.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are read in CI logs as much as in terminals: give them room when there is no terminal to ask.
out = Console(soft_wrap=True, width=None if os.isatty(1) else 160)
err = Console(stderr=True, soft_wrap=True)

EXIT_ERROR = 1
EXIT_NOT_ROOT = 2


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        _fail(f"labctl {action} needs root (it manages network namespaces and /run/labctl); "
              f"run it as root, e.g. `sudo labctl {action} ...`.", EXIT_NOT_ROOT)


def _load(spec: str, variant: str | None = None, assignments: list[str] | None = None) -> Topology:
    try:
        parsed = [parse_assignment(a) for a in assignments or ()]
        return load_topology(resolve_topology(spec), variant, parsed)
    except FileNotFoundError as exc:
        _fail(str(exc))
    except TopologyError as exc:
        for issue in exc.issues:
            err.print(str(issue), highlight=False, markup=False)
        _fail(f"{len(exc.issues)} problem(s) in the topology; nothing was built")


def _state(lab: str) -> LabState:
    try:
        return LabState(check_name(lab))
    except ValueError as exc:
        _fail(str(exc))


def _status_table(status: LabStatus) -> Table:
    table = Table(title=f"lab {status.lab} ({status.topology}, {status.backend} backend, {status.phase})")
    for column in ("node", "kind", "running", "addresses", "programs"):
        table.add_column(column)
    for node in status.nodes:
        programs = ", ".join(f"{p.name} (pid {p.pid}, {'running' if p.running else 'EXITED'})"
                             for p in node.programs) or "-"
        table.add_row(node.name, node.kind, "yes" if node.present else "[red]no[/red]",
                      "\n".join(node.addresses), programs)
    return table


def _lab_rows() -> list[dict[str, str]]:
    return [{"lab": s.lab, "topology": str(s.meta().get("topology", "?")), "backend": str(s.backend),
             "phase": s.phase} for s in all_labs()]


def _print_labs() -> None:
    rows = _lab_rows()
    if not rows:
        out.print("no labs are up.")
        return
    table = Table(title="labs")
    for column in ("lab", "topology", "backend", "phase"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    out.print(table)


def _json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


@app.command()
def up(
    topology: Annotated[str, typer.Argument(help="A shipped topology name (see `labctl list`) or a YAML file path.")],
    backend: Annotated[str, typer.Option(help=f"Where to build the lab: {' | '.join(BACKEND_CHOICES)}.")] = "auto",
    name: Annotated[str | None, typer.Option("--name", help="Lab name (default: the topology's name).")] = None,
    variant: Annotated[str | None, typer.Option("--variant", "-v", help="A variant defined in the topology file "
                                                "(see `labctl list --variants`).")] = None,
    assign: Annotated[list[str] | None, typer.Option("--set", help="Override one field, PATH=VALUE "
                                                     "(e.g. tunnels.s2s.encap=true); repeatable.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the tunnels to be established (0: don't).")] = 20.0,
) -> None:
    """Build a lab from a topology, start its node programs and wait for its IPsec tunnels."""
    if backend not in BACKEND_CHOICES:
        _fail(f"unknown backend {backend!r}; expected one of: {', '.join(BACKEND_CHOICES)}", EXIT_NOT_ROOT)
    model = _load(topology, variant, assign)
    _require_root("up")
    lab = name or model.name
    try:
        with err.status(f"building lab {lab}") as spinner:
            result = up_lab(model, backend=backend, lab=lab, progress=lambda m: spinner.update(m))
    except LabExistsError:
        _fail(f"lab {lab} is already up (state in {LabState(lab).path}); use it, or `labctl down {lab}` first")
    except (BackendError, ValueError) as exc:
        _fail(f"{exc}; nothing was left behind")
    out.print(_status_table(result.status))
    for notice in result.plan.notices:
        out.print(f"[yellow]note:[/yellow] {notice}", highlight=False)
    out.print(f"lab [bold]{lab}[/bold] is up on the {result.backend} backend in {result.seconds:.1f} s. "
              f"Try `labctl exec {lab} <node> -- <command>`; `labctl down {lab}` removes it.", highlight=False)
    if gateway_nodes(result.plan) and wait > 0:
        _wait_for_tunnels(lab, result.plan, wait, result.seconds)


def _wait_for_tunnels(lab: str, plan: Plan, timeout: float, up_seconds: float) -> None:
    state = LabState(lab)
    backend = backend_of(state)
    started = time.monotonic()
    with err.status("waiting for the IPsec tunnels"):
        ok, states = wait_established(backend, state, plan, timeout)
    waited = time.monotonic() - started
    out.print(_sa_table(list_sas(backend, state, plan)))
    if ok:
        out.print(f"tunnels established {waited:.2f} s after the gateways started "
                  f"({up_seconds + waited:.1f} s after `up` began).", highlight=False)
        return
    for s in states:
        if s.state != "installed":
            why = s.detail or "no answer from the peer yet"
            out.print(f"[red]tunnel {s.name} on {s.node} is {s.state}:[/red] {why}", highlight=False)
    _fail(f"the tunnels were not established within {timeout:.0f} s; the lab is left up for inspection "
          f"(`labctl status {lab}`, `labctl logs {lab} <gateway>`, `labctl down {lab}`)")


def _sa_table(sas: dict[str, list[dict[str, Any]]]) -> Table:
    table = Table(title="IPsec SAs")
    for column in ("gateway", "dir", "SPI", "protocol", "outer src -> dst", "algorithms", "encap", "packets"):
        table.add_column(column)
    for node, rows in sas.items():
        for sa in rows:
            algs = "/".join(a for a in (sa.get("encr"), sa.get("integ")) if a)
            encap = "udp {}:{}".format(*sa["encap"]) if sa.get("encap") else "-"
            table.add_row(node, sa.get("direction", ""), sa.get("spi", ""), f"{sa.get('protocol')} {sa.get('mode')}",
                          f"{sa.get('src')} -> {sa.get('dst')}", algs, encap, str(sa.get("packets", "")))
    return table


@app.command()
def down(lab: Annotated[str, typer.Argument(help="The lab's name (see `labctl status`).")]) -> None:
    """Remove everything a lab created (also after a crash); a lab that is not up is not an error."""
    state = _state(lab)
    _require_root("down")
    try:
        removed = down_lab(state.lab)
    except BackendError as exc:
        _fail(str(exc))
    if removed is None:
        out.print(f"lab {lab} is not up; nothing to remove.", highlight=False)
        return
    for item in removed:
        out.print(f"removed {item}", highlight=False)
    out.print(f"lab [bold]{lab}[/bold] is down.", highlight=False)


@app.command()
def status(
    lab: Annotated[str | None, typer.Argument(help="A lab name; without it, all labs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a lab's nodes, addresses and programs, or list the labs that are up."""
    if lab is None:
        if as_json:
            _json(_lab_rows())
        else:
            _print_labs()
        return
    state = _state(lab)
    if not state.exists():
        _fail(f"lab {lab} is not up")
    backend = backend_of(state)
    try:
        result = backend.status(state)
    except BackendError as exc:
        _fail(str(exc))
    plan = state.plan()
    gateways: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for node in gateway_nodes(plan) if plan else []:
        reply = query(backend, state, node)
        if reply.get("ok"):
            gateways[node] = reply["gateway"]
        else:
            errors[node] = str(reply.get("error"))
    if as_json:
        _json({**dataclasses.asdict(result), "gateways": gateways, "gateway_errors": errors})
        return
    out.print(_status_table(result))
    if gateways:
        out.print(gateway_view.ike_table(gateways))
        out.print(gateway_view.ipsec_table(gateways))
        l2tp = gateway_view.l2tp_table(gateways)
        if l2tp is not None:
            out.print(l2tp)
    for line in gateway_view.problems(gateways, errors):
        out.print(f"[yellow]{line}[/yellow]", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(  # noqa: A001 - the command is called exec
    lab: Annotated[str, typer.Argument(help="The lab's name.")],
    node: Annotated[str, typer.Argument(help="The node to run the command in.")],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after `--`).")],
) -> None:
    """Run a command inside a node: `labctl exec LAB NODE -- CMD ARGS...`; exits with the command's status."""
    state = _state(lab)
    _require_root("exec")
    if not state.exists():
        _fail(f"lab {lab} is not up")
    try:
        result = backend_of(state).exec(state, node, command)
    except BackendError as exc:
        _fail(str(exc))
    raise typer.Exit(result.returncode)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The topology file to check.")],
    variant: Annotated[str | None, typer.Option("--variant", "-v", help="Check it with this variant applied.")] = None,
) -> None:
    """Check a topology file and report every problem with its file, line and field."""
    model = _load(str(file), variant)
    out.print(f"{file}: topology {model.name} is valid ({len(model.networks)} networks, {len(model.nodes)} nodes)",
              highlight=False)


@app.command()
def graph(
    topology: Annotated[str, typer.Argument(help="A shipped topology name or a YAML file path.")],
    fmt: Annotated[str, typer.Option("--format", help=f"Output format: {' | '.join(GRAPH_FORMATS)}.")] = "mermaid",
) -> None:
    """Print a topology as a Mermaid or Graphviz (dot) graph."""
    if fmt not in GRAPH_FORMATS:
        _fail(f"unknown format {fmt!r}; expected one of: {', '.join(GRAPH_FORMATS)}", EXIT_NOT_ROOT)
    print(render_graph(_load(topology), fmt), end="")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False) -> None:
    """List the shipped topologies and the labs that are up."""
    shipped = shipped_topologies()
    if as_json:
        _json({"topologies": [{"name": t.name, "path": str(t.path), "description": t.description} for t in shipped],
               "labs": _lab_rows()})
        return
    table = Table(title="shipped topologies")
    table.add_column("name")
    table.add_column("description")
    for topo in shipped:
        table.add_row(topo.name, topo.description)
    out.print(table)
    _print_labs()


def _version(value: bool) -> None:
    if value:
        print(f"labctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


# --- Docker backend commands: image, render compose, logs (issue 6; code in labctl/backends/docker_cli.py) ---
from labctl.backends.docker_cli import register as _register_docker_commands  # noqa: E402

_register_docker_commands(app)

# --- scenario tests and captures (issue 7; code in labctl/scenarios/cli.py and labctl/capture.py) ---
from labctl.capture import register as _register_capture_command  # noqa: E402
from labctl.scenarios.cli import register as _register_test_command  # noqa: E402

_register_capture_command(app)
_register_test_command(app)


def main() -> None:
    app()
