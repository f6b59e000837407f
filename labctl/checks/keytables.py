"""Wireshark key tables written by the gateways, merged and turned into tshark/Wireshark preferences.

Each gateway writes its SAs' records (`esp_sa`, `ikev2_decryption_table`, `ikev1_decryption_table`) into
its keys directory; the two ends of a tunnel write mirrored rows, and behind a NAT only the row with the
addresses seen on the capture's segment matches, so the rows of every gateway are merged.
"""

from __future__ import annotations

import csv
import functools
import shlex
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

TABLES = ("esp_sa", "ikev2_decryption_table", "ikev1_decryption_table")
ESP_DECODE = ("esp.enable_encryption_decode:TRUE", "esp.enable_authentication_check:TRUE")
# The columns naming algorithms in each table: a row tshark refuses is refused for its algorithm, so one probe
# per algorithm combination tells which rows this tshark can use (e.g. 4.0 has no ChaCha20-Poly1305 for ESP).
ALGORITHM_COLUMNS = {"esp_sa": (4, 6), "ikev2_decryption_table": (4, 7), "ikev1_decryption_table": ()}
_EMPTY_PCAP = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # libpcap header, Ethernet, no packets


def merge_tables(key_dirs: Iterable[Path], into: Path) -> dict[str, Path]:
    """Merge every gateway's tables into `into` (one file per table, rows deduplicated in order)."""
    rows: dict[str, list[str]] = {table: [] for table in TABLES}
    for directory in key_dirs:
        for table in TABLES:
            try:
                lines = (directory / table).read_text().splitlines()
            except OSError:
                continue
            rows[table] += [line for line in lines if line.strip() and line not in rows[table]]
    into.mkdir(parents=True, exist_ok=True)
    written = {}
    for table, lines in rows.items():
        if lines:
            path = into / table
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o600)  # session keys: lab material, but still keys
            written[table] = path
    return written


def read_table(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


@functools.cache
def _refusal(table: str, signature: tuple[str, ...], row: str) -> str | None:
    """Why tshark refuses `row` of `table` (None when it accepts it); cached per algorithm combination."""
    tshark = shutil.which("tshark")
    if tshark is None:
        return "tshark is missing"
    with tempfile.NamedTemporaryFile(suffix=".pcap") as empty:
        empty.write(_EMPTY_PCAP)
        empty.flush()
        done = subprocess.run([tshark, "-o", f"uat:{table}:{row}", "-r", empty.name], capture_output=True,
                              text=True, timeout=60, check=False)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if "invalid value" in line or "Invalid" in line]
    return (lines[-1].rsplit(": ", 1)[-1] if lines else done.stderr.strip()) or f"exit {done.returncode}"


def refusal(table: str, row: str) -> str | None:
    try:
        fields = next(csv.reader([row]))
    except (csv.Error, StopIteration):
        return "not a CSV record"
    signature = tuple(fields[i] for i in ALGORITHM_COLUMNS.get(table, ()) if i < len(fields))
    return _refusal(table, signature, row) if signature else None


def refused_rows(tables_dir: Path, table: str = "esp_sa") -> list[tuple[str, str]]:
    """(row, tshark's reason) for each row of `table` that this tshark cannot use."""
    refused = []
    for row in read_table(tables_dir / table):
        reason = refusal(table, row)
        if reason is not None:
            refused.append((row, reason))
    return refused


def preferences(tables_dir: Path) -> list[str]:
    """tshark `-o` values that decrypt ESP (and IKE where a table exists) with the tables in `tables_dir`;
    rows this tshark refuses (an algorithm it does not know) are left out, or it would refuse to run at all."""
    prefs = list(ESP_DECODE)
    for table in TABLES:
        prefs += [f"uat:{table}:{row}" for row in read_table(tables_dir / table) if refusal(table, row) is None]
    return prefs


def tshark_command(pcap: Path, tables_dir: Path, extra: Sequence[str] = ()) -> str:
    """A shell command line that shows `pcap` decrypted (tshark; the same -o options work for wireshark)."""
    argv = ["tshark", "-r", str(pcap)]
    for pref in preferences(tables_dir):
        argv += ["-o", pref]
    return shlex.join([*argv, *extra])
