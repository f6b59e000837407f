"""Two gateways' data planes wired back to back, with deterministic keys: the fixture most tests share."""

from __future__ import annotations

import hashlib

from labctl.gateway.ipsec.dataplane import DataPlane
from labctl.gateway.ipsec.sad import Lifetime, SaParams
from labctl.gateway.ipsec.spd import Policy
from labctl.gateway.ipsec.transforms import encr_algorithm, integ_algorithm

GW_A = "198.51.100.1"
GW_B = "203.0.113.2"
NET_A = "10.1.0.0/16"
NET_B = "10.2.0.0/16"
HOST_A = "10.1.0.5"
HOST_B = "10.2.0.7"
SPI_AB = {"esp": 0x0000A001, "ah": 0x0000A051}
SPI_BA = {"esp": 0x0000B001, "ah": 0x0000B051}
ENCAP = (4500, 4500)


def key(label: str, length: int) -> bytes:
    """Deterministic test key material (lab only)."""
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:length]


def sa_params(
    protocol: str,
    mode: str,
    spi: int,
    src: str,
    dst: str,
    encr: str | None,
    integ: str | None,
    esn: bool = False,
    encap: tuple[int, int] | None = None,
    window: int = 64,
    lifetime: Lifetime | None = None,
) -> SaParams:
    encr_key = key(f"e{spi}", encr_algorithm(encr).keymat_len) if encr else b""
    integ_key = key(f"i{spi}", integ_algorithm(integ).key_len) if integ else b""
    return SaParams(
        spi, protocol, mode, src, dst, encr, encr_key, integ, integ_key,  # type: ignore[arg-type]
        esn=esn, replay_window=window, encap=encap, lifetime=lifetime or Lifetime(),
    )  # fmt: skip


def policies(side: str, mode: str, protocols: tuple[str, ...]) -> list[Policy]:
    if mode == "tunnel":
        local, remote = (NET_A, NET_B) if side == "a" else (NET_B, NET_A)
    else:
        local, remote = (GW_A + "/32", GW_B + "/32") if side == "a" else (GW_B + "/32", GW_A + "/32")
    return [Policy(f"{side}-protect", local, remote, "protect", reqid=1, protocols=protocols)]


def gateway_pair(
    protocols: tuple[str, ...] = ("esp",),
    mode: str = "tunnel",
    encr: str | None = "aes128gcm16",
    integ: str | None = None,
    ah_integ: str = "sha256",
    esn: bool = False,
    encap: bool = False,
    window: int = 64,
    lifetime: Lifetime | None = None,
    now: float = 0.0,
) -> tuple[DataPlane, DataPlane]:
    """Gateways A and B with SAs in both directions for each protocol of the bundle."""
    a = DataPlane(policies("a", mode, protocols))
    b = DataPlane(policies("b", mode, protocols))
    for proto in protocols:
        e, i = (encr, integ) if proto == "esp" else (None, ah_integ)
        udp = ENCAP if encap and proto == "esp" else None
        ab = sa_params(proto, mode, SPI_AB[proto], GW_A, GW_B, e, i, esn, udp, window, lifetime)
        ba = sa_params(proto, mode, SPI_BA[proto], GW_B, GW_A, e, i, esn, udp, window, lifetime)
        a.add_sa(ab, "out", now)
        b.add_sa(ab, "in", now)
        b.add_sa(ba, "out", now)
        a.add_sa(ba, "in", now)
    return a, b
