"""IKEv1 (RFC 2407, 2408, 2409; NAT-T RFC 3947; DPD RFC 3706) as a sans-I/O core.

The daemon drives it exactly like the IKEv2 engine::

    engine = Ikev1Engine(connections: list[Ikev1ConnectionConfig], rng=os.urandom, wall_clock=utc_now)
    engine.receive_datagram(data, src=(addr, port), dst=(addr, port), now)
    engine.start(now)                     # initiate connections with a child whose start_action is start
    engine.initiate(name, now, child=None) # phase 1, then Quick Mode for the child(ren) not yet up
    engine.acquire(name, child, now)      # trap hit: negotiate the child if it is not up
    engine.terminate(name, now)           # delete IPsec SAs and the ISAKMP SA, telling the peer
    engine.rekey(name, what, now)         # what: "ike" | "child" (all) | a child name
    engine.sa_limit_reached(spi, now, hard=False)
    engine.datagrams_to_send(now) -> list[(bytes, src, dst)]
    engine.get_timer() -> float | None;   engine.handle_timer(now)
    engine.next_event() -> Event | None   # see events.py
    engine.status() -> {"isakmp_sas": [...], "ipsec_sas": [...], "counters": {...}}
    engine.ikev1_decryption_table_lines() -> ["<icookie hex>,<encryption key hex>", ...]

``wall_clock`` returns the timezone-aware UTC time certificate validity is checked at (RFC 5280 §4.1.2.5);
without it certificate authentication fails. Chains are validated by `labctl.gateway.ike.certs`.

Port 4500, as for IKEv2: the daemon strips the 4-byte non-ESP marker (RFC 3948 §2.2) before
`receive_datagram` and prepends it to every datagram whose source port is 4500.

Modules: constants (numbers), codec (payloads, raw bytes kept), crypto (SKEYID family, Appendix B,
KEYMAT, IVs), protect (CBC with IV chaining per message id), proposals, identity (IDs and traffic
selectors), auth (RSA signatures, certificates), phase1 (Main/Aggressive Mode), quick (Quick Mode,
informational hashes), engine, events, config.
"""

from labctl.gateway.ike.v1.config import Ikev1ChildConfig, Ikev1ConnectionConfig
from labctl.gateway.ike.v1.engine import Ikev1Engine
from labctl.gateway.ike.v1.events import (
    Event,
    ExchangeFailed,
    IpsecSaDeleted,
    IpsecSaEstablished,
    IsakmpSaDeleted,
    IsakmpSaEstablished,
    PeerDead,
    SaKeys,
    SecurityWarning,
)

__all__ = [
    "Event",
    "ExchangeFailed",
    "Ikev1ChildConfig",
    "Ikev1ConnectionConfig",
    "Ikev1Engine",
    "IpsecSaDeleted",
    "IpsecSaEstablished",
    "IsakmpSaDeleted",
    "IsakmpSaEstablished",
    "PeerDead",
    "SaKeys",
    "SecurityWarning",
]
