"""`labctl capture LAB SEGMENT`: a pcap of one lab network plus the Wireshark key tables to decrypt it.

The pcap is normalised like the test runner's (UDP GSO super-packets split, see `labctl.checks.gso`), the
gateways' key tables are merged next to it, and the tshark / Wireshark command that shows it decrypted is
printed. Keys are lab material: the tables are written owner-readable only.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labctl.backends.base import BackendError
from labctl.checks.gso import split_gso
from labctl.checks.keytables import merge_tables, tshark_command
from labctl.lab.gateways import gateway_nodes, keys_dir
from labctl.lab.lifecycle import backend_of
from labctl.lab.naming import check_name
from labctl.lab.state import LabState


@dataclass(frozen=True)
class CaptureResult:
    pcap: Path
    keys: Path
    tables: tuple[Path, ...]
    split: int
    """UDP GSO super-packets that were split into wire-sized datagrams."""

    def command(self) -> str:
        return tshark_command(self.pcap, self.keys)


def keys_folder(pcap: Path) -> Path:
    return pcap.with_name(f"{pcap.stem}.keys")


def capture_lab(lab: str, segment: str, pcap: Path, stop: threading.Event, duration: float | None) -> CaptureResult:
    """Capture `segment` of `lab` into `pcap` until `duration` passes or `stop` is set."""
    state = LabState(check_name(lab))
    if not state.exists():
        raise BackendError(f"lab {lab} is not up")
    plan = state.plan()
    if plan is None:
        raise BackendError(f"lab {lab} has no plan in {state.path}")
    backend = backend_of(state)
    pcap.parent.mkdir(parents=True, exist_ok=True)
    capture = backend.start_capture(state, segment, pcap.resolve())
    try:
        stop.wait(duration)
    finally:
        capture.stop()
    split = split_gso(pcap)
    keys = keys_folder(pcap)
    tables = merge_tables([keys_dir(backend, state, node) for node in gateway_nodes(plan)], keys)
    return CaptureResult(pcap, keys, tuple(tables.values()), split)


def capture(
    lab: Annotated[str, typer.Argument(help="The lab's name.")],
    segment: Annotated[str, typer.Argument(help="The network to capture, e.g. internet.")],
    write: Annotated[Path | None, typer.Option("-w", "--write", help="The pcap file (default: LAB-SEGMENT.pcap).")]
    = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to capture (default: until Ctrl-C).")] = None,
) -> None:
    """Capture a lab network into a pcap, write the key tables beside it, print how to see it decrypted."""
    out = Console(soft_wrap=True)
    if os.geteuid() != 0:
        Console(stderr=True).print("[red]error:[/red] labctl capture needs root (it captures inside the lab); "
                                   "run it as root, e.g. `sudo labctl capture ...`", highlight=False)
        raise typer.Exit(2)
    pcap = write or Path(f"{lab}-{segment}.pcap")
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    out.print(f"capturing {segment} of lab {lab} into {pcap}"
              + (f" for {duration:g} s" if duration else " until Ctrl-C"), highlight=False)
    try:
        result = capture_lab(lab, segment, pcap, stop, duration)
    except BackendError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    out.print(f"wrote {result.pcap}" + (f" ({result.split} UDP GSO runs split into datagrams)" if result.split else ""),
              highlight=False)
    if not result.tables:
        out.print("no gateway has exported keys (no IPsec SA yet): the capture cannot be decrypted", highlight=False)
        return
    out.print(f"key tables (lab-only keys) in {result.keys}/: {', '.join(p.name for p in result.tables)}",
              highlight=False)
    out.print("decrypted view (tshark; the same -o options work for `wireshark -r`):", highlight=False)
    print(result.command())


def register(app: typer.Typer) -> None:
    app.command("capture")(capture)
