"""Read a pcap through tshark (a dissector nobody here wrote) into small per-frame records.

The checks judge what tshark sees, not what our own code thinks it sent. One tshark run per pcap,
`-T fields` with every occurrence of each field, so tunnel mode's outer and inner IP headers both show.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FIELDS = (
    "frame.number", "frame.protocols", "ip.src", "ip.dst", "udp.port", "tcp.port", "icmp.type",
    "isakmp.version", "isakmp.exchangetype", "isakmp.id.type", "esp.spi", "ah.spi",
)
IKE_PORTS = frozenset({500, 4500})
NATT_PORT = 4500


class TsharkError(RuntimeError):
    """tshark is missing or could not read the capture."""


@dataclass(frozen=True)
class Frame:
    number: int
    layers: tuple[str, ...]
    """frame.protocols split, e.g. ("eth", "ethertype", "ip", "udp", "udpencap", "esp")."""
    src: tuple[str, ...] = ()
    """Every IPv4 source address in the frame, outermost first (tunnel mode: outer, inner)."""
    dst: tuple[str, ...] = ()
    udp_ports: tuple[int, ...] = ()
    tcp_ports: tuple[int, ...] = ()
    icmp_types: tuple[int, ...] = ()
    ike_versions: tuple[str, ...] = ()
    ike_exchanges: tuple[int, ...] = ()
    id_types: tuple[int, ...] = ()
    """Identification payloads tshark could read in clear (IKEv1 Aggressive Mode carries them so)."""
    esp_spis: tuple[str, ...] = ()
    ah_spis: tuple[str, ...] = ()

    @property
    def is_ipv4(self) -> bool:
        return "ip" in self.layers

    def after(self, layer: str) -> str | None:
        """The layer that follows the first `layer` (None when absent or last)."""
        if layer not in self.layers:
            return None
        index = self.layers.index(layer)
        return self.layers[index + 1] if index + 1 < len(self.layers) else None

    def describe(self) -> str:
        outer = f"{self.src[0]} -> {self.dst[0]}" if self.src and self.dst else "non-IP"
        inner = f" (inner {self.src[-1]} -> {self.dst[-1]})" if len(self.src) > 1 else ""
        return f"frame {self.number}: {outer}{inner} {':'.join(self.layers[2:] or self.layers)}"


def _ints(text: str) -> tuple[int, ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                out.append(int(item, 0))
            except ValueError:
                continue
    return tuple(out)


def _strs(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_fields(output: str) -> list[Frame]:
    """Frames from `tshark -T fields` output with FIELDS, tab-separated, occurrences joined by commas."""
    frames = []
    for line in output.splitlines():
        cols = line.split("\t")
        if len(cols) < len(FIELDS) or not cols[0].strip().isdigit():
            continue
        number, protocols, src, dst, udp, tcp, icmp, ikev, exch, idt, esp, ah = cols[: len(FIELDS)]
        frames.append(Frame(
            number=int(number), layers=tuple(protocols.split(":")), src=_strs(src), dst=_strs(dst),
            udp_ports=_ints(udp), tcp_ports=_ints(tcp), icmp_types=_ints(icmp), ike_versions=_strs(ikev),
            ike_exchanges=_ints(exch), id_types=_ints(idt), esp_spis=_strs(esp), ah_spis=_strs(ah),
        ))
    return frames


def tshark_path() -> str:
    path = shutil.which("tshark")
    if path is None:
        raise TsharkError("tshark is missing; install it (Debian/Ubuntu: apt-get install -y tshark)")
    return path


def _tshark_fields(pcap: Path, options: Sequence[str]) -> list[Frame]:
    argv = [tshark_path(), "-n", "-r", str(pcap), *options]
    argv += ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t"]
    for name in FIELDS:
        argv += ["-e", name]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TsharkError(f"tshark could not read {pcap}: {exc}") from exc
    if done.returncode != 0:
        message = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("Running as user"))
        raise TsharkError(f"tshark could not read {pcap}: {message.strip()}")
    return parse_fields(done.stdout)


def ike_port_partners(frames: Sequence[Frame]) -> dict[int, str]:
    """Ports that talk to UDP 500 / 4500 but made tshark pick another dissector -> the one they need.

    tshark decodes a UDP packet by its lower port first, so when a NAT maps IKE's source port 500 to, say, 496
    (Linux keeps privileged ports privileged), the exchange shows as Auto-RP. The IKE port decides instead:
    500 carries ISAKMP (RFC 2408 §2.5.2), 4500 the non-ESP marker or ESP (RFC 3948 §2.2, dissector udpencap)."""
    partners: dict[int, str] = {}
    for frame in frames:
        ports = frame.udp_ports[:2]
        if frame.after("ip") != "udp" or len(ports) != 2 or frame.after("udp") in ("isakmp", "udpencap"):
            continue
        low, high = sorted(ports)
        for ike, dissector in ((NATT_PORT, "udpencap"), (500, "isakmp")):
            if high == ike and low not in IKE_PORTS:
                partners[low] = dissector
    return partners


def read_frames(pcap: Path, preferences: Sequence[str] = ()) -> list[Frame]:
    """Dissect `pcap` with tshark; `preferences` are `-o` values (e.g. from `labctl.checks.keytables`)."""
    options = [arg for pref in preferences for arg in ("-o", pref)]
    frames = _tshark_fields(pcap, options)
    partners = ike_port_partners(frames)
    if not partners:
        return frames
    decode_as = [arg for port, dissector in sorted(partners.items()) for arg in ("-d", f"udp.port=={port},{dissector}")]
    return _tshark_fields(pcap, [*options, *decode_as])
