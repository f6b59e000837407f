"""Commands that come with the Docker backend: `labctl image ...`, `labctl render compose`, `labctl logs`.

`register(app)` adds them to the main typer app (one call at the end of `labctl/cli.py`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labctl.backends.docker_engine import EngineUnavailable, connect
from labctl.images import DETAIL, IMAGES, ImageError, describe, ensure_images, remove_images, stale_images

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

image_app = typer.Typer(help="Container images for Docker labs (built locally; no registry needed).",
                        no_args_is_help=True)
render_app = typer.Typer(help="Render files derived from a topology.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@image_app.command("build")
def image_build(
    names: Annotated[list[str] | None, typer.Argument(help=f"Images to build (default: all: {', '.join(IMAGES)}).")]
    = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild even when up to date (also the base).")]
    = False,
    prune: Annotated[bool, typer.Option("--prune", help="Remove images built from older inputs.")] = False,
) -> None:
    """Build the images a Docker lab needs; an image whose inputs did not change is not rebuilt."""
    wanted = names or list(IMAGES)
    unknown = [n for n in wanted if n not in IMAGES]
    if unknown:
        raise _fail(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(IMAGES)}", 2)
    try:
        client = connect()
        with err.status("building images") as spinner:
            def progress(line: str) -> None:
                if line.startswith(DETAIL):
                    spinner.update(line.strip()[:100])
                else:
                    out.print(line)

            tags = ensure_images(client, wanted, progress, rebuild=rebuild)
        if prune:
            remove_images(client, stale_images(client, tags), out.print)
    except EngineUnavailable as exc:
        raise _fail(str(exc)) from None
    except ImageError as exc:
        raise _fail(str(exc)) from None
    for name, tag in tags.items():
        out.print(f"{name}: {tag}")


@image_app.command("list")
def image_list() -> None:
    """The labctl images in the Docker engine."""
    try:
        rows = describe(connect())
    except EngineUnavailable as exc:
        raise _fail(str(exc)) from None
    if not rows:
        out.print("no labctl images; `labctl image build` makes them.")
    for tag, size in rows:
        out.print(f"{tag}\t{size}")


@render_app.command("compose")
def render_compose_command(
    topology: Annotated[str, typer.Argument(help="A shipped topology name or a YAML file path.")],
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Directory to write (default: compose/<topology>).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Lab name (default: the topology's name).")] = None,
    variant: Annotated[str | None, typer.Option("--variant", "-v", help="A variant defined in the topology file.")]
    = None,
    assign: Annotated[list[str] | None, typer.Option("--set", help="Override one field, PATH=VALUE; repeatable.")]
    = None,
) -> None:
    """Write a compose file (and the nodes' config files, e.g. the gateways' rendered configs) equivalent to
    `labctl up TOPOLOGY --backend docker` with the same options."""
    from labctl.backends.docker_compose import COMPOSE_FILE, write_compose
    from labctl.backends.docker_spec import SpecError
    from labctl.lab.plan import make_plan
    from labctl.topology.catalog import resolve_topology
    from labctl.topology.errors import TopologyError
    from labctl.topology.load import load_topology
    from labctl.topology.variants import parse_assignment

    try:
        parsed = [parse_assignment(a) for a in assign or ()]
        model = load_topology(resolve_topology(topology), variant, parsed)
        plan = make_plan(model, name)
        # A variant or override gets its own directory: compose/<topology> holds the shipped (plain) lab.
        default = plan.topology + (f"-{variant}" if variant else "") + ("-custom" if parsed else "")
        directory = output or Path("compose") / default
        written = write_compose(plan, directory)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    except TopologyError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        raise _fail(f"{len(exc.issues)} problem(s) in the topology; nothing was written") from None
    except (SpecError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for path in written:
        out.print(f"wrote {path}")
    out.print(f"up: docker-compose -p {plan.lab} -f {directory / COMPOSE_FILE} up -d   "
              "(images: `labctl image build`)")


def logs(
    lab: Annotated[str, typer.Argument(help="The lab's name.")],
    node: Annotated[str, typer.Argument(help="A node of the lab.")],
    program: Annotated[str | None, typer.Option("--program", "-p", help="Only this program's log.")] = None,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="Only the last N lines of each log.")] = None,
) -> None:
    """Show a node's logs: its set-up (Docker) and the output of its programs (both backends)."""
    from labctl.lab.naming import check_name
    from labctl.lab.state import LabState

    try:
        state = LabState(check_name(lab))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not state.exists():
        raise _fail(f"lab {lab} is not up")
    plan = state.plan()
    if plan is not None and node not in {n.name for n in plan.nodes}:
        raise _fail(f"lab {lab} has no node {node!r}; its nodes: {', '.join(n.name for n in plan.nodes)}")
    sections: list[tuple[str, str]] = []
    if state.backend == "docker" and program is None:
        from labctl.backends.docker_spec import container_name

        try:
            container = connect().containers.get(container_name(lab, node))
            sections.append((f"container {container.name}", container.logs().decode(errors="replace")))
        except Exception as exc:  # noqa: BLE001 - any engine trouble: still show the program logs
            sections.append(("container", f"(no container output: {exc})\n"))
    logs_dir = state.path / "logs"
    pattern = re.compile(rf"^{re.escape(node)}-(?P<program>.+)\.log$")
    for path in sorted(logs_dir.glob(f"{node}-*.log")) if logs_dir.is_dir() else []:
        match = pattern.match(path.name)
        if match is None or (program is not None and match["program"] != program):
            continue
        sections.append((f"program {match['program']} ({path})", path.read_text(errors="replace")))
    if program is not None and not sections:
        raise _fail(f"node {node} of lab {lab} has no log for program {program!r}")
    if not sections:
        out.print(f"node {node} of lab {lab} has no programs and no logs.")
    for title, text in sections:
        lines = text.splitlines()
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        out.print(f"[bold]== {title}[/bold]")
        out.print("\n".join(lines), markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
    app.add_typer(render_app, name="render")
    app.command("logs")(logs)
