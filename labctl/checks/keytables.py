"""Wireshark key tables written by the gateways, merged and turned into tshark/Wireshark preferences.

Each gateway writes its SAs' records (`esp_sa`, `ikev2_decryption_table`, `ikev1_decryption_table`) into
its keys directory; the two ends of a tunnel write mirrored rows, and behind a NAT only the row with the
addresses seen on the capture's segment matches, so the rows of every gateway are merged.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

TABLES = ("esp_sa", "ikev2_decryption_table", "ikev1_decryption_table")
ESP_DECODE = ("esp.enable_encryption_decode:TRUE", "esp.enable_authentication_check:TRUE")


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


def preferences(tables_dir: Path) -> list[str]:
    """tshark `-o` values that decrypt ESP (and IKE where a table exists) with the tables in `tables_dir`."""
    prefs = list(ESP_DECODE)
    for table in TABLES:
        prefs += [f"uat:{table}:{row}" for row in read_table(tables_dir / table)]
    return prefs


def tshark_command(pcap: Path, tables_dir: Path, extra: Sequence[str] = ()) -> str:
    """A shell command line that shows `pcap` decrypted (tshark; the same -o options work for wireshark)."""
    argv = ["tshark", "-r", str(pcap)]
    for pref in preferences(tables_dir):
        argv += ["-o", pref]
    return shlex.join([*argv, *extra])
