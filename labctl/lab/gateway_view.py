"""What `labctl status LAB` shows of the gateways: IKE / ISAKMP SAs, IPsec SA pairs, errors — like swanctl --list-sas.

IKEv1 and IKEv2 are shown the way the protocols think about them: one bidirectional IKE (ISAKMP) SA per peer, and
IPsec SAs that come in pairs of one-way SAs (one inbound, one outbound, each with its own SPI).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _rekey_in(at: float | None, clock: float | None) -> str:
    if at is None or clock is None:
        return "-"
    left = at - clock
    return f"{left:.0f} s" if left >= 0 else "due"


def ike_table(gateways: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="IKE SAs (phase 1: one bidirectional SA per peer)")
    for column in ("gateway", "connection", "version", "state", "SPIs / cookies (i/r)", "algorithms", "peer", "NAT",
                   "expires in"):
        table.add_column(column)
    for node, gw in gateways.items():
        ike = gw.get("ike", {})
        clock = gw.get("clock")
        for sa in ike.get("v2", {}).get("ike_sas", []):
            nat = "forced" if sa.get("encap_forced") else "no"
            if sa.get("nat_local") or sa.get("nat_remote"):
                nat = "yes"
            table.add_row(node, sa["conn"], "IKEv2", sa["state"], f"{sa['spi_i']}/{sa['spi_r']}", sa["algorithms"],
                          f"{sa.get('remote_id', '')} {sa['remote']}", nat, _rekey_in(sa.get("expire_at"), clock))
        for sa in ike.get("v1", {}).get("isakmp_sas", []):
            nat_info = sa.get("nat", {})
            nat = "yes" if nat_info.get("local") or nat_info.get("remote") else "no"
            expires = sa["established_at"] + sa["lifetime"] if "established_at" in sa and "lifetime" in sa else None
            table.add_row(node, sa["connection"], f"IKEv1 {sa['mode']} mode", sa["state"].lower(),
                          f"{sa['initiator_cookie']}/{sa['responder_cookie']}", sa["algorithms"], sa["remote"], nat,
                          _rekey_in(expires, clock))
    return table


def ipsec_table(gateways: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="IPsec SA pairs (phase 2: two one-way SAs each)")
    for column in ("gateway", "name", "keying", "protocol", "SPI in", "SPI out", "algorithms", "selectors", "rekey in"):
        table.add_column(column)
    for node, gw in gateways.items():
        clock = gw.get("clock")
        ike = gw.get("ike", {})
        for sa in ike.get("v2", {}).get("ike_sas", []):
            for ch in sa.get("children", []):
                table.add_row(node, ch["name"], "IKEv2", f"{ch['protocol']} {ch['mode']}", ch["spi_in"], ch["spi_out"],
                              ch["algorithms"], f"{','.join(ch['local_ts'])} <-> {','.join(ch['remote_ts'])}",
                              _rekey_in(ch.get("rekey_at"), clock))
        for ch in ike.get("v1", {}).get("ipsec_sas", []):
            table.add_row(node, ch["child"], "IKEv1 quick mode", f"{ch['protocol']} {ch['mode']}", ch["inbound_spi"],
                          ch["outbound_spi"], ch["algorithms"], f"{ch['local_ts']} <-> {ch['remote_ts']}",
                          _rekey_in(ch.get("rekey_at"), clock))
        for b in gw.get("bindings", []):
            if b["keying"] == "manual":
                table.add_row(node, b["name"], "manual (static keys)", f"{b['protection']} {b['mode']}", "(config)",
                              "(config)", "-", f"{','.join(b['local_ts'])} <-> {','.join(b['remote_ts'])}", "never")
    return table


def problems(gateways: dict[str, dict[str, Any]], errors: dict[str, str]) -> list[str]:
    lines = [f"{node}: {error}" for node, error in errors.items()]
    for node, gw in gateways.items():
        for b in gw.get("bindings", []):
            if b.get("last_error"):
                lines.append(f"{node} {b['name']}: {b['last_error']}")
            elif b.get("state") != "installed":
                lines.append(f"{node} {b['name']}: not established yet")
        l2tp_error = (gw.get("l2tp") or {}).get("last_error")
        if l2tp_error:
            lines.append(f"{node} L2TP: {l2tp_error}")
    return lines


def l2tp_table(gateways: dict[str, dict[str, Any]]) -> Table | None:
    """L2TP tunnels and their PPP sessions (LNS and clients), or None when no gateway runs L2TP."""
    table = Table(title="L2TP/PPP sessions (inside IPsec transport mode)")
    for column in ("gateway", "role", "L2TP peer", "tunnel", "session", "PPP phase", "LCP", "IPCP", "auth", "user",
                   "address"):
        table.add_column(column)
    rows = 0
    for node, gw in gateways.items():
        l2tp = gw.get("l2tp")
        if not l2tp:
            continue
        for tunnel in l2tp.get("tunnels", []):
            sessions = tunnel.get("sessions") or [{}]
            for s in sessions:
                rows += 1
                table.add_row(node, l2tp.get("role", "?"), str(tunnel.get("peer", "")),
                              f"{tunnel.get('tunnel_id')} ({tunnel.get('state')})",
                              f"{s.get('session_id', '-')} ({s.get('state', '-')})", str(s.get("phase", "-")),
                              str(s.get("lcp", "-")), str(s.get("ipcp", "-")), str(s.get("auth", "-")),
                              str(s.get("user") or l2tp.get("user") or "-"), str(s.get("address") or "-"))
        if not l2tp.get("tunnels"):
            rows += 1
            table.add_row(node, l2tp.get("role", "?"), "-", "no tunnel", "-", "-", "-", "-", "-",
                          str(l2tp.get("user") or "-"), str(l2tp.get("last_error") or "-"))
    return table if rows else None
