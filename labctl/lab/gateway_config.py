"""Render each tunnel end's gateway configuration (JSON, see `labctl.gateway.config`) from a topology.

A tunnel is written once in the topology; both ends are rendered here, mirrored, so that what one side sends
with is exactly what the other receives with. Keys and pre-shared keys the topology leaves out are generated
with `secrets` at `up` — they are lab material, exported for Wireshark beside the gateway's logs.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from labctl.gateway.ipsec.transforms import encr_algorithm, integ_algorithm
from labctl.lab.model import FilePlan
from labctl.lab.pki import LabCa
from labctl.topology.model import Topology
from labctl.topology.tunnels import (
    ManualDirection,
    Tunnel,
    default_tun_mtu,
    endpoint_address,
    endpoint_network,
    peer_sees,
    protected_subnets,
)

Side = Literal["left", "right"]
SIDES: tuple[tuple[Side, Side], ...] = (("left", "right"), ("right", "left"))
CONFIG_FILE = "gateway.json"
TUN_NAME = "ipsec0"


@dataclass
class RenderedGateway:
    node: str
    config: dict[str, Any]
    files: list[FilePlan] = field(default_factory=list)

    def config_file(self) -> FilePlan:
        return FilePlan(CONFIG_FILE, json.dumps(self.config, indent=2) + "\n", 0o600)


def _key(given: str | None, length: int, what: str) -> str:
    if given is None:
        return secrets.token_bytes(length).hex()
    key = given.lower().removeprefix("0x").replace(":", "")
    if len(key) != 2 * length:
        raise ValueError(f"{what}: expected {length} bytes ({2 * length} hex digits), got {len(key) // 2}; "
                         "leave it out to have labctl generate one")
    return key


def _manual(
    topology: Topology, name: str, t: Tunnel, addrs: dict[Side, str], seen: dict[Side, str]
) -> dict[Side, dict[str, Any]]:
    m = t.manual
    protocols = t.protection.split("+")
    # One generated key per direction, shared by both renderings (the two ends must agree).
    keys: dict[str, dict[str, str]] = {}
    for direction, d in (("left_to_right", m.left_to_right), ("right_to_left", m.right_to_left)):
        keys[direction] = _direction_keys(m.encr, m.integ, m.ah_integ, d, protocols,
                                          f"tunnels.{name}.manual.{direction}")
    out: dict[Side, dict[str, Any]] = {}
    for side, other in SIDES:
        send, recv = ("left_to_right", "right_to_left") if side == "left" else ("right_to_left", "left_to_right")
        send_d = m.left_to_right if side == "left" else m.right_to_left
        recv_d = m.right_to_left if side == "left" else m.left_to_right
        entry: dict[str, Any] = {
            "name": name,
            "local": addrs[side],
            "remote": seen[other],
            "mode": t.mode,
            "protection": t.protection,
            "encap": t.encap,
            "local_ts": protected_subnets(topology, t, side) if t.mode == "tunnel" else [f"{addrs[side]}/32"],
            "remote_ts": protected_subnets(topology, t, other) if t.mode == "tunnel" else [f"{seen[other]}/32"],
            "replay_window": m.replay_window,
            "esn": m.esn,
        }
        if "esp" in protocols:
            entry["esp"] = {
                "spi_out": f"0x{int(send_d.spi):08x}", "spi_in": f"0x{int(recv_d.spi):08x}",
                "encr": m.encr, "integ": m.integ,
                "encr_key_out": keys[send]["encr"], "encr_key_in": keys[recv]["encr"],
                "integ_key_out": keys[send]["integ"], "integ_key_in": keys[recv]["integ"],
            }
        if "ah" in protocols:
            entry["ah"] = {
                "spi_out": f"0x{int(send_d.ah_spi or 0):08x}", "spi_in": f"0x{int(recv_d.ah_spi or 0):08x}",
                "encr": None, "integ": m.ah_integ,
                "integ_key_out": keys[send]["ah"], "integ_key_in": keys[recv]["ah"],
            }
        out[side] = entry
    return out


def _direction_keys(
    encr: str, integ: str | None, ah_integ: str, d: ManualDirection, protocols: list[str], where: str
) -> dict[str, str]:
    keys = {"encr": "", "integ": "", "ah": ""}
    if "esp" in protocols:
        keys["encr"] = _key(d.encr_key, encr_algorithm(encr).keymat_len, f"{where}.encr_key ({encr}, salt included)")
        if integ:
            keys["integ"] = _key(d.integ_key, integ_algorithm(integ).key_len, f"{where}.integ_key ({integ})")
    if "ah" in protocols:
        keys["ah"] = _key(d.ah_key, integ_algorithm(ah_integ).key_len, f"{where}.ah_key ({ah_integ})")
    return keys


def _ike(
    lab: str, topology: Topology, name: str, t: Tunnel, addrs: dict[Side, str], seen: dict[Side, str],
    ca: LabCa | None,
) -> dict[Side, tuple[dict[str, Any], list[FilePlan]]]:
    ike = t.ike
    psk = ike.auth.psk if ike.auth.psk is not None else secrets.token_urlsafe(24)
    out: dict[Side, tuple[dict[str, Any], list[FilePlan]]] = {}
    for side, other in SIDES:
        node = getattr(t, side)
        files: list[FilePlan] = []
        local_id = (ike.left_id if side == "left" else ike.right_id) or addrs[side]
        remote_id = (ike.right_id if side == "left" else ike.left_id) or addrs[other]
        if ike.auth.method == "psk":
            auth: dict[str, Any] = {"method": "psk", "psk": psk}
        else:
            if ca is None:
                raise ValueError("certificate authentication needs the lab CA")
            issued = ca.issue(node, addrs[side], ike.auth.key_type)
            files += [
                FilePlan(f"pki/{name}.key.pem", issued.key_pem, 0o600),
                FilePlan(f"pki/{name}.cert.pem", issued.cert_pem, 0o644),
                FilePlan("pki/ca.pem", ca.cert_pem, 0o644),
            ]
            auth = {"method": "pubkey", "key": f"pki/{name}.key.pem", "cert": f"pki/{name}.cert.pem",
                    "ca": ["pki/ca.pem"]}
        child = {
            "name": name,
            "local_ts": protected_subnets(topology, t, side) if t.mode == "tunnel" else [f"{addrs[side]}/32"],
            "remote_ts": protected_subnets(topology, t, other) if t.mode == "tunnel" else [f"{seen[other]}/32"],
            "mode": t.mode,
            "protection": t.protection,
            "proposals": list(ike.esp_proposals),
            "rekey_time": ike.child_rekey_time,
            "life_time": ike.child_life_time,
            "rekey_bytes": ike.child_rekey_bytes,
            "rekey_packets": ike.child_rekey_packets,
            # The right side answers; only the left side initiates (a start on both ends would race).
            "start_action": ike.start_action if side == "left" else "none",
        }
        conn = {
            "name": name,
            "version": ike.version,
            "ike_mode": ike.mode,
            "local": addrs[side],
            "remote": seen[other],
            "local_id": local_id,
            "remote_id": remote_id,
            "auth": auth,
            "proposals": list(ike.proposals),
            "children": [child],
            "encap": t.encap,
            "rekey_time": ike.rekey_time,
            "dpd_delay": ike.dpd_delay,
            "dpd_action": ike.dpd_action,
            "allow_legacy": ike.allow_legacy,
        }
        out[side] = (conn, files)
    return out


def render_gateways(lab: str, topology: Topology) -> dict[str, RenderedGateway]:
    """Every node that ends a tunnel, with its gateway configuration and extra files (certificates)."""
    rendered: dict[str, RenderedGateway] = {}
    ca: LabCa | None = None
    if any(t.keying == "ike" and t.ike.auth.method == "pubkey" for t in topology.tunnels.values()):
        ca = LabCa(lab)
    for name, t in topology.tunnels.items():
        network = endpoint_network(topology, t)
        if network is None:
            raise ValueError(f"tunnel {name}: the two ends share no network")
        # Each end's own address, and where the other end reaches it (different behind a NAT router).
        addrs: dict[Side, str] = {
            "left": endpoint_address(topology, t.left, t.left_network or network),
            "right": endpoint_address(topology, t.right, network),
        }
        seen: dict[Side, str] = {"left": peer_sees(topology, t, "left"), "right": addrs["right"]}
        for side, _ in SIDES:
            node = getattr(t, side)
            if node not in rendered:
                rendered[node] = RenderedGateway(node, {
                    "name": node,
                    "state_dir": ".",
                    "local": addrs[side],
                    "tun": {"name": TUN_NAME, "mtu": default_tun_mtu(t)},
                    "manual": [],
                    "connections": [],
                })
        if t.keying == "manual":
            for side, entry in _manual(topology, name, t, addrs, seen).items():
                rendered[getattr(t, side)].config["manual"].append(entry)
        else:
            for side, (conn, files) in _ike(lab, topology, name, t, addrs, seen, ca).items():
                rg = rendered[getattr(t, side)]
                rg.config["connections"].append(conn)
                rg.files += [f for f in files if f.path not in {g.path for g in rg.files}]
    return rendered
