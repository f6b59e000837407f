"""`labctl test`: the scenario matrix from the command line (registered on the main typer app)."""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from labctl.backends import CHOICES as BACKEND_CHOICES
from labctl.backends import choose_backend
from labctl.backends.base import BackendError
from labctl.scenarios.load import Catalog, ScenarioError, load_catalog
from labctl.scenarios.model import BACKENDS, Excluded, Scenario
from labctl.scenarios.report import github_matrix, json_report, junit_xml
from labctl.scenarios.runner import RunOptions, ScenarioResult, effective_jobs, run_scenarios
from labctl.scenarios.select import SelectError, matches

out = Console(soft_wrap=True, width=None if os.isatty(1) else 160)
err = Console(stderr=True, soft_wrap=True)
STYLE = {"pass": "green", "fail": "red", "error": "red", "n/a": "dim"}


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def select(catalog: Catalog, names: list[str], keyword: str | None) -> Catalog:
    """Scenarios named (exact names or shell patterns like 'ipsec-ikev1-*') and matching `-k`."""
    def wanted(name: str, keywords: set[str]) -> bool:
        if names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in names):
            return False
        return keyword is None or matches(keyword, name, keywords)

    scenarios = tuple(s for s in catalog.scenarios if wanted(s.name, s.keywords()))
    excluded = tuple(e for e in catalog.excluded if wanted(e.name, {e.name, *e.tags, *e.axes.values()}))
    return Catalog(scenarios, excluded)


def _split_args(args: list[str]) -> tuple[list[Path], list[str]]:
    paths = [Path(a) for a in args if a.endswith(".yaml") or Path(a).is_dir()]
    names = [a for a in args if not (a.endswith(".yaml") or Path(a).is_dir())]
    return paths, names


def _list(catalog: Catalog, as_json: bool, backend: str) -> None:
    if as_json:
        backends = list(BACKENDS) if backend == "all" else [backend]
        print(json.dumps(github_matrix(catalog.scenarios, backends), indent=2))
        return
    table = Table(title=f"{len(catalog.scenarios)} scenarios")
    for column in ("scenario", "topology", "backends", "description"):
        table.add_column(column)
    for s in catalog.scenarios:
        table.add_row(s.name, s.topology + (f" --variant {s.variant}" if s.variant else ""), ",".join(s.backends),
                      s.description)
    out.print(table)
    _excluded_table(catalog.excluded)


def _excluded_table(excluded: tuple[Excluded, ...]) -> None:
    if not excluded:
        return
    table = Table(title=f"{len(excluded)} combinations excluded")
    table.add_column("combination")
    table.add_column("why")
    for e in excluded:
        table.add_row(e.name, e.reason)
    out.print(table)


def _summary(results: list[ScenarioResult], wall: float, jobs: int) -> None:
    table = Table(title=f"labctl test: {sum(r.outcome == 'pass' for r in results)}/{len(results)} passed "
                        f"in {wall:.1f} s (-j {jobs})")
    for column in ("scenario", "result", "s", "checks", "artifacts / lab"):
        table.add_column(column)
    for r in results:
        checks = " ".join(f"[{STYLE[c.status]}]{c.name}[/]" for c in r.checks)
        where = (r.artifacts or "") + (f" (lab {r.lab} left up)" if r.kept_up else "")
        table.add_row(r.scenario, f"[{STYLE[r.outcome]}]{r.outcome.upper()}[/]", f"{r.seconds:.1f}",
                      checks or r.error, where)
    out.print(table)
    for r in results:
        for c in r.checks:
            if c.status == "fail":
                out.print(f"[red]{r.scenario} / {c.name}[/red]: expected {c.expected}\n    observed {c.observed}",
                          highlight=False)
                for line in c.details[:10]:
                    out.print(f"    {line}", highlight=False, markup=False)
        if r.error:
            out.print(f"[red]{r.scenario}[/red]: {r.error}", highlight=False)


def test(
    scenarios: Annotated[list[str] | None, typer.Argument(
        help="Scenario names or patterns (ipsec-ikev1-*), or scenario files/folders; default: every shipped one.",
        show_default=False)] = None,
    keyword: Annotated[str | None, typer.Option("-k", help="Select by keyword expression, e.g. "
                                                "\"ikev1 and not transport\" (names, tags, axis values).")] = None,
    backend: Annotated[str, typer.Option(help=f"Where to build the labs: {' | '.join(BACKEND_CHOICES)}. "
                                         "Docker scenarios run one at a time (shared host address space).")] = "auto",
    jobs: Annotated[int, typer.Option("-j", "--jobs", help="Scenarios to run at once (netns).")] = 1,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here.")] = None,
    json_file: Annotated[str | None, typer.Option(
        "--json", metavar="[FILE]",
        help="Write a JSON report to FILE (no FILE or '-': standard output); with --list, print the GitHub "
        "Actions matrix.")] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the scenarios and the excluded combinations "
                                            "(with --json: a GitHub Actions strategy.matrix) and exit.")] = False,
    keep_failed: Annotated[bool, typer.Option("--keep-failed", help="Leave failed scenarios' labs up.")] = False,
    artifacts: Annotated[Path, typer.Option(help="Folder for per-scenario artifacts (kept for failures: pcaps, "
                                            "key tables, SA dumps, gateway logs).")] = Path("labctl-test-artifacts"),
    lab_prefix: Annotated[str | None, typer.Option(help="Prefix of the labs' names (default: test-<random>-).")] = None,
) -> None:
    """Run the scenario matrix: build each lab, check it end to end and on the wire, tear it down.

    Exit status 0 when every selected scenario passes, 1 otherwise. `labctl test --list` shows the matrix and
    the excluded combinations with their reasons; `labctl test --list --json` prints a GitHub Actions matrix.
    """
    paths, names = _split_args(scenarios or [])
    try:
        catalog = select(load_catalog(paths), names, keyword)
    except (ScenarioError, SelectError) as exc:
        raise _fail(str(exc)) from None
    if backend not in (*BACKEND_CHOICES, "all"):
        raise _fail(f"unknown backend {backend!r}; expected one of: {', '.join(BACKEND_CHOICES)}")
    if list_only:
        _list(catalog, as_json=json_file is not None, backend="netns" if backend == "auto" else backend)
        return
    if not catalog.scenarios:
        raise _fail("no scenario selected" + (f" ({len(catalog.excluded)} excluded)" if catalog.excluded else ""))
    if os.geteuid() != 0:
        raise _fail("labctl test needs root (it builds labs); run it as root, e.g. `sudo labctl test`")
    try:
        chosen = choose_backend(backend).name
    except BackendError as exc:
        raise _fail(str(exc)) from None
    run_jobs = effective_jobs(chosen, jobs)
    if run_jobs != jobs:
        out.print(f"note: {chosen} scenarios run one at a time (labs with the same subnets cannot coexist there)")
    prefix = lab_prefix if lab_prefix is not None else f"test-{secrets.token_hex(2)}-"
    options = RunOptions(backend=chosen, artifacts=artifacts, keep_failed=keep_failed, lab_prefix=prefix)
    out.print(f"running {len(catalog.scenarios)} scenario(s) on {chosen} with -j {run_jobs}; "
              f"{len(catalog.excluded)} excluded", highlight=False)
    started = time.monotonic()
    results = run_scenarios(list(catalog.scenarios), options, run_jobs,
                            lambda name, message: out.print(f"[dim]{name}[/dim] {message}", highlight=False))
    wall = time.monotonic() - started
    _summary(results, wall, run_jobs)
    _excluded_table(catalog.excluded)
    if junit is not None:
        junit.write_text(junit_xml(results, catalog.excluded))
    if json_file is not None:
        report = json.dumps(json_report(results, catalog.excluded, wall, run_jobs), indent=1, default=str)
        if json_file == "-":
            print(report)
        else:
            Path(json_file).write_text(report + "\n")
    raise typer.Exit(0 if all(r.outcome == "pass" for r in results) else 1)


class _TestCommand(TyperCommand):
    """`--json` with no FILE (last, or followed by another option) means standard output: `--list --json`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors its own click Context
        fixed: list[str] = []
        for index, arg in enumerate(args):
            fixed.append(arg)
            following = args[index + 1] if index + 1 < len(args) else None
            if arg == "--json" and (following is None or (following.startswith("-") and following != "-")):
                fixed.append("-")
        return super().parse_args(ctx, fixed)


def register(app: typer.Typer) -> None:
    app.command("test", cls=_TestCommand)(test)


__all__ = ["Scenario", "register", "select"]
