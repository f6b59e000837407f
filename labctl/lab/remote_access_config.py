"""Render a topology's ``l2tp`` section (remote access, `labctl.topology.remote_access`) into gateway configs.

The LNS gets one IKEv1 connection with ``remote: %any`` (any client that proves the pre-shared key), transport
mode, and the ``l2tp`` LNS section; every client node gets a gateway of its own with a transport connection to
the LNS and the ``l2tp`` client section. Passwords and the PSK left out of the topology are generated here
with `secrets` (lab material, like the tunnels' keys in `labctl.lab.gateway_config`).
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from labctl.lab.gateway_config import TUN_NAME, RenderedGateway
from labctl.topology.model import Topology
from labctl.topology.remote_access import RemoteAccess, lan_subnets, lns_network
from labctl.topology.tunnels import endpoint_address

CONNECTION = "l2tp"


def render_remote_access(topology: Topology, rendered: dict[str, RenderedGateway]) -> None:
    """Add the LNS's and every client's configuration to ``rendered`` (node -> gateway config)."""
    ra = topology.l2tp
    if ra is None:
        return
    network = lns_network(topology, ra)
    if network is None:
        raise ValueError("l2tp.network: the LNS has no network for IKE/ESP")
    lns_addr = endpoint_address(topology, ra.lns, network)
    psk = ra.ike.auth.psk if ra.ike.auth.psk is not None else secrets.token_urlsafe(24)
    passwords = {user: pw if pw is not None else secrets.token_urlsafe(12) for user, pw in ra.users.items()}
    lns = _gateway(rendered, ra.lns, lns_addr, ra.tun_mtu)
    lns.config["connections"].append(_connection(ra, lns_addr, "%any", psk, start="none"))
    lns.config["l2tp"] = {
        "role": "lns",
        "tun": {"name": "l2tp0", "mtu": ra.tun_mtu},
        "local_address": ra.local_address,
        "pool": list(ra.pool),
        "dns": list(ra.dns),
        "users": passwords,
        **_ppp(ra),
    }
    routes = lan_subnets(topology, ra)
    for name, client in ra.clients.items():
        # A client dials from its first interface (behind a NAT, that is its private address).
        addr = str(ipaddress.IPv4Interface(topology.nodes[name].interfaces[0].address).ip)
        gw = _gateway(rendered, name, addr, ra.tun_mtu)
        gw.config["connections"].append(_connection(ra, addr, lns_addr, psk, start="start"))
        gw.config["l2tp"] = {
            "role": "client",
            "tun": {"name": "ppp0", "mtu": ra.tun_mtu},
            "server": lns_addr,
            "user": client.user,
            "password": client.password if client.password is not None else passwords[client.user],
            "routes": routes,
            **_ppp(ra),
        }


def _gateway(rendered: dict[str, RenderedGateway], node: str, local: str, mtu: int) -> RenderedGateway:
    if node not in rendered:
        rendered[node] = RenderedGateway(node, {
            "name": node, "state_dir": ".", "local": local, "tun": {"name": TUN_NAME, "mtu": mtu},
            "manual": [], "connections": [],
        })
    return rendered[node]


def _ppp(ra: RemoteAccess) -> dict[str, Any]:
    return {"auth": list(ra.auth), "echo_interval": ra.echo_interval, "echo_failures": ra.echo_failures}


def _connection(ra: RemoteAccess, local: str, remote: str, psk: str, start: str) -> dict[str, Any]:
    ike = ra.ike
    responder = remote == "%any"
    return {
        "name": CONNECTION,
        "version": ike.version,
        "ike_mode": ike.mode,
        "local": local,
        "remote": remote,
        "local_id": local,
        # The LNS cannot know its clients' identities in advance (behind a NAT: their private addresses);
        # the pre-shared key is what they prove.
        "remote_id": "" if responder else remote,
        "auth": {"method": "psk", "psk": psk},
        "proposals": list(ike.proposals),
        "children": [{
            "name": CONNECTION,
            # RFC 3193 §5: transport mode between the client and the LNS, for their L2TP.
            "local_ts": [f"{local}/32"],
            "remote_ts": ["0.0.0.0/0"] if responder else [f"{remote}/32"],
            "mode": "transport",
            "protection": "esp",
            "proposals": list(ike.esp_proposals),
            "rekey_time": ike.child_rekey_time,
            "life_time": ike.child_life_time,
            "start_action": start,
        }],
        "encap": False,
        "rekey_time": ike.rekey_time,
        "dpd_delay": ike.dpd_delay,
        "dpd_action": "clear" if responder else ike.dpd_action,
        "allow_legacy": ike.allow_legacy,
    }
