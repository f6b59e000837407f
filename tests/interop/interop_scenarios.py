"""Interop scenarios: one description renders both our gateway's JSON config and a strongSwan swanctl.conf.

Side "a" is gw-a (198.51.100.1, LAN 10.1.0.0/24), side "b" is gw-b (198.51.100.2, LAN 10.2.0.0/24). Either side
can be ours or strongSwan, so the same scenario also gives strongSwan<->strongSwan and ours<->ours baselines.
Proposal strings use swanctl's syntax, which our gateway's config shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from strongswan import Addresses, Charon, HarnessError, Lab, OurGateway, wait_for

from labctl.lab.pki import Issued, LabCa

Side = Literal["a", "b"]
CONN = "s2s"
CHILD = "net"
PSK = "interop-lab-secret-0123456789"


@dataclass
class Certs:
    """A lab CA and one RSA certificate per gateway (IKEv1 signs with RSA; the subject carries the IP as SAN).
    With ``intermediates`` each gateway's certificate comes from its own intermediate CA under the root, and only
    the root is configured as trusted: each side must send its intermediate for the other to build the chain."""

    ca: LabCa
    a: Issued
    b: Issued

    @classmethod
    def make(cls, addr: Addresses, key_type: Literal["rsa", "ecdsa"] = "rsa", intermediates: bool = False) -> Certs:
        ca = LabCa("interop", key_type="rsa", path_length=1 if intermediates else 0)
        issuer_a = ca.sub_ca("interop int-a") if intermediates else ca
        issuer_b = ca.sub_ca("interop int-b") if intermediates else ca
        return cls(ca, issuer_a.issue("gw-a", addr.gw_a, key_type), issuer_b.issue("gw-b", addr.gw_b, key_type))

    def of(self, side: Side) -> Issued:
        return self.a if side == "a" else self.b


@dataclass
class Scenario:
    version: Literal[1, 2] = 2
    ike_mode: Literal["main", "aggressive"] = "main"
    auth: Literal["psk", "pubkey"] = "psk"
    ike_proposal: str = "aes128-sha256-modp2048"
    ike_proposal_b: str = ""  # gw-b's own IKE proposal when the two sides should differ ("" = the same)
    esp_proposal: str = "aes128-sha256"  # a DH group here means PFS
    initiator: Side = "a"
    psk_a: str = PSK
    psk_b: str = PSK
    ike_rekey: float = 14400.0
    child_rekey: float = 3600.0
    child_life: float = 0.0  # 0: rekey * 1.1
    rekey_side: Side | None = None  # only this side has the short lifetimes (so it starts the rekeys)
    dpd_delay: float = 0.0
    dpd_timeout: float = 30.0
    id_by_dn: bool = False  # pubkey: identities are the certificates' DNs instead of the addresses
    certs: Certs | None = None
    addr: Addresses = field(default_factory=Addresses)

    # --- per-side facts ---------------------------------------------------------------------------------
    def wan(self, side: Side) -> str:
        return self.addr.gw_a if side == "a" else self.addr.gw_b

    def lan(self, side: Side) -> str:
        return self.addr.lan_a if side == "a" else self.addr.lan_b

    def ike_proposal_of(self, side: Side) -> str:
        return self.ike_proposal_b if side == "b" and self.ike_proposal_b else self.ike_proposal

    def psk(self, side: Side) -> str:
        return self.psk_a if side == "a" else self.psk_b

    def ident(self, side: Side) -> str:
        if self.auth == "pubkey" and self.id_by_dn:
            assert self.certs is not None
            return _strongswan_dn(self.certs.of(side).subject)
        return self.wan(side)

    def ike_rekey_time(self, side: Side) -> float:
        return 14400.0 if self.rekey_side is not None and side != self.rekey_side else self.ike_rekey

    def child_times(self, side: Side) -> tuple[float, float]:
        """(rekey_time, life_time) of the child SA on `side`."""
        if self.rekey_side is not None and side != self.rekey_side:
            return 3600.0, 3960.0
        return self.child_rekey, self.child_life or self.child_rekey * 1.1


def _strongswan_dn(rfc4514: str) -> str:
    """RFC 4514 lists the most specific RDN first; strongSwan (and our config) write the DN the other way."""
    return ", ".join(reversed([p.strip() for p in rfc4514.split(",")]))


def peer(side: Side) -> Side:
    return "b" if side == "a" else "a"


# --- our gateway --------------------------------------------------------------------------------------------
def our_config(s: Scenario, side: Side, workdir: Path) -> dict[str, Any]:
    other = peer(side)
    auth: dict[str, Any]
    if s.auth == "psk":
        auth = {"method": "psk", "psk": s.psk(side)}
    else:
        assert s.certs is not None
        certdir = workdir / f"ours-certs-{side}"
        certdir.mkdir(parents=True, exist_ok=True)
        mine = s.certs.of(side)
        (certdir / "key.pem").write_text(mine.key_pem)
        (certdir / "key.pem").chmod(0o600)
        (certdir / "cert.pem").write_text(mine.cert_pem + mine.chain_pem)  # ours first, then intermediates
        (certdir / "ca.pem").write_text(s.certs.ca.cert_pem)
        auth = {"method": "pubkey", "key": str(certdir / "key.pem"), "cert": str(certdir / "cert.pem"),
                "ca": [str(certdir / "ca.pem")]}
    conn: dict[str, Any] = {
        "name": CONN,
        "version": s.version,
        "local": s.wan(side),
        "remote": s.wan(other),
        "local_id": s.ident(side),
        "remote_id": s.ident(other),
        "auth": auth,
        "proposals": [s.ike_proposal_of(side)],
        "encap": True,  # strongSwan's libipsec speaks ESP in UDP only
        "rekey_time": s.ike_rekey_time(side),
        "children": [{
            "name": CHILD,
            "local_ts": [s.lan(side)],
            "remote_ts": [s.lan(other)],
            "proposals": [s.esp_proposal],
            "rekey_time": s.child_times(side)[0],
            "life_time": s.child_times(side)[1],
            "start_action": "start" if s.initiator == side else "none",
        }],
    }
    if s.version == 1:
        conn["ike_mode"] = s.ike_mode
    if s.dpd_delay:
        conn.update(dpd_delay=s.dpd_delay, dpd_timeout=s.dpd_timeout, dpd_action="clear")
    return {"name": f"gw-{side}", "state_dir": "state", "local": s.wan(side), "connections": [conn]}


# --- strongSwan ---------------------------------------------------------------------------------------------
def swanctl_conf(s: Scenario, side: Side) -> tuple[str, dict[str, str]]:
    """swanctl.conf text and the credential files (relative to the swanctl directory) for `side`."""
    other = peer(side)
    files: dict[str, str] = {}
    if s.auth == "psk":
        local_auth = remote_auth = "auth = psk"
        secrets = (f'    ike-peer {{\n        id-1 = {s.ident(side)}\n        id-2 = {s.ident(other)}\n'
                   f'        secret = "{s.psk(side)}"\n    }}\n')
    else:
        assert s.certs is not None
        files = {"x509/gw.pem": s.certs.of(side).cert_pem, "private/gw.pem": s.certs.of(side).key_pem,
                 "x509ca/ca.pem": s.certs.ca.cert_pem}
        if s.certs.of(side).chain_pem:
            # charon finds its own intermediate here and sends it after its certificate; trust stays with the
            # root (remote cacerts), so the peer's intermediate must come from the peer.
            files["x509ca/int.pem"] = s.certs.of(side).chain_pem
        local_auth = "auth = pubkey\n            certs = gw.pem"
        remote_auth = "auth = pubkey\n            cacerts = ca.pem"
        secrets = ""
    ike_rekey = s.ike_rekey_time(side)
    # IKEv1 ISAKMP SAs are re-authenticated by strongSwan (no IKEv1 rekey exists); IKEv2 rekeys in place.
    ike_timers = (f"reauth_time = {ike_rekey:g}s\n        rekey_time = 0s" if s.version == 1
                  else f"rekey_time = {ike_rekey:g}s\n        reauth_time = 0s")
    dpd = f"dpd_delay = {s.dpd_delay:g}s\n        dpd_timeout = {s.dpd_timeout:g}s" if s.dpd_delay else ""
    conf = f"""connections {{
    {CONN} {{
        version = {s.version}
        aggressive = {"yes" if s.ike_mode == "aggressive" else "no"}
        local_addrs = {s.wan(side)}
        remote_addrs = {s.wan(other)}
        proposals = {s.ike_proposal_of(side)}
        encap = yes
        {ike_timers}
        over_time = {max(ike_rekey * 0.1, 1):g}s
        rand_time = 0s
        {dpd}
        local {{
            {local_auth}
            id = "{s.ident(side)}"
        }}
        remote {{
            {remote_auth}
            id = "{s.ident(other)}"
        }}
        children {{
            {CHILD} {{
                local_ts = {s.lan(side)}
                remote_ts = {s.lan(other)}
                esp_proposals = {s.esp_proposal}
                mode = tunnel
                rekey_time = {s.child_times(side)[0]:g}s
                life_time = {s.child_times(side)[1]:g}s
                rand_time = 0s
                start_action = none
                dpd_action = clear
            }}
        }}
    }}
}}
secrets {{
{secrets}}}
"""
    return conf, files


# --- bringing a scenario up in a lab ------------------------------------------------------------------------
AGGRESSIVE_PSK_OPTION = "i_dont_care_about_security_and_use_aggressive_mode_psk = yes"


@dataclass
class Pair:
    """Our gateway on gw-a, strongSwan on gw-b, configured from one scenario."""

    lab: Lab
    scenario: Scenario
    ours: OurGateway
    charon: Charon

    def ours_up(self) -> bool:
        return any(b["state"] == "installed" for b in self.ours.status()["bindings"])

    def wait_up(self, timeout: float = 15) -> None:
        wait_for("the tunnel to be installed on both sides", lambda: self.ours_up() and self.charon.child_spis(CHILD),
                 timeout, self.lab.logs)

    def ping_both_ways(self, count: int = 3) -> None:
        a = self.lab.topo.addr
        for src, dst in (("ha", a.host_b), ("hb", a.host_a)):
            res = self.lab.topo.ping(src, dst, count=count)
            if res.received != count:
                raise HarnessError(f"ping {src} -> {dst} through the tunnel: {res.received}/{count} answered\n"
                                   f"{res.text}\n{self.lab.logs()}")

    def check_certificate_tunnel(self, intermediates: bool = False) -> None:
        """Traffic flows both ways and strongSwan names both ends by their certificates' DNs; with
        ``intermediates``, strongSwan also sent its intermediate CA (int-b) as an extra CERT payload."""
        self.ping_both_ways()
        sas = self.charon.list_sas()
        assert "CN=gw-a" in sas and "CN=gw-b" in sas, sas
        if intermediates:
            log = self.charon.log_text()
            assert "sending issuer cert" in log and "interop int-b" in log, self.charon.logs(80)


def start_pair(lab: Lab, s: Scenario) -> Pair:
    """Start strongSwan on gw-b and ours on gw-a, let the scenario's initiator connect, wait until both are up."""
    conf, files = swanctl_conf(s, "b")
    options = AGGRESSIVE_PSK_OPTION if s.ike_mode == "aggressive" else ""
    charon = lab.charon("gb", conf, files, charon_options=options)
    ours = lab.ours("ga", our_config(s, "a", lab.workdir))
    pair = Pair(lab, s, ours, charon)
    if s.initiator == "b":
        charon.initiate(CHILD)
    pair.wait_up()
    return pair
