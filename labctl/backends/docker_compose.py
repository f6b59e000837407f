"""A lab as a compose file: the same networks and containers as `labctl up --backend docker` builds.

The containers, networks, capabilities and set-up come from `docker_spec`, the mapping the Docker backend
uses, so the two cannot drift apart. Differences, by design: compose runs the node's programs as the
container's command (the backend starts them with `docker exec`), and reads their files from the
directory next to the compose file.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2

from labctl.backends.docker_spec import (
    BRIDGE_OPTION,
    IDLE_COMMAND,
    NODE_DIR,
    container_spec,
    network_specs,
    program_argv,
)
from labctl.images import current_ref
from labctl.lab.model import NodePlan, Plan

COMPOSE_FILE = "compose.yaml"
TEMPLATE = "compose.yaml.j2"


def _command(node: NodePlan) -> list[str]:
    if not node.programs:
        return list(IDLE_COMMAND)
    if len(node.programs) == 1:
        return program_argv(node.programs[0])
    # Several programs: run them side by side and keep the container up while any of them runs.
    return ["sh", "-c", " & ".join(shlex.join(program_argv(p)) for p in node.programs) + " & wait"]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("labctl", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML; every value goes through tojson
    )
    env.filters["device"] = lambda path: f"{path}:{path}"
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


def render_compose(plan: Plan) -> dict[str, str]:
    """The files of the lab's compose directory: relative path -> content (compose.yaml and node files)."""
    networks = network_specs(plan)
    containers = [container_spec(plan, node) for node in plan.nodes]
    files: dict[str, str] = {}
    node_dirs: dict[str, str] = {}
    for node in plan.nodes:
        for program in node.programs:
            for file in program.files:
                files[f"{node.name}/{file.path}"] = file.content
                node_dirs[node.name] = f"./{node.name}"
    images = sorted({c.image for c in containers})
    files[COMPOSE_FILE] = _environment().get_template(TEMPLATE).render(
        plan=plan,
        compose_file=COMPOSE_FILE,
        containers=containers,
        networks=networks,
        network_keys={n.name: n.network for n in networks},
        image_refs={name: current_ref(name) for name in images},
        images=[current_ref(name) for name in images],
        commands={node.name: _command(node) for node in plan.nodes},
        node_dirs=node_dirs,
        node_dir=NODE_DIR,
        bridge_option=BRIDGE_OPTION,
    )
    return files


def write_compose(plan: Plan, directory: Path) -> list[Path]:
    """Write the compose directory; files of an earlier render that are no longer part of it are removed."""
    files = render_compose(plan)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, content in sorted(files.items()):
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    for old in sorted(directory.rglob("*"), reverse=True):
        rel = old.relative_to(directory).as_posix()
        if old.is_file() and rel not in files:
            old.unlink()
        elif old.is_dir() and not any(old.iterdir()):
            old.rmdir()
    return written
