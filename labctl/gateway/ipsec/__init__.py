"""Sans-I/O IPsec data plane: ESP (RFC 4303), AH (RFC 4302), ESP-in-UDP (RFC 3948), SPD and SAD (RFC 4301).

No sockets, clocks or hidden randomness: the caller passes packets and ``now`` and gets bytes, results and
events back. Malformed or forged input is counted and dropped, never raised.

Public API (stable; the daemon and IKE use only this)::

    from labctl.gateway.ipsec import DataPlane, Policy, SaParams, Lifetime

    dp = DataPlane(policies=[Policy("site", local="10.1.0.0/16", remote="10.2.0.0/16",
                                    action="protect", reqid=1, protocols=("esp",))],
                   rng=os.urandom)                        # rng: Callable[[int], bytes], used for CBC IVs
    dp.add_sa(SaParams(spi=0x1001, protocol="esp", mode="tunnel", src=ours, dst=peer,
                       encr="aes128gcm16", encr_key=key_and_salt, integ=None,
                       esn=False, replay_window=64, encap=None, lifetime=Lifetime(), reqid=1),
              "out", now)                                 # and the peer's SA with direction "in"
    dp.remove_sa(spi, "in" | "out", dst=None) -> bool
    dp.set_policies([...]); dp.add_policy(policy, index=None); dp.remove_policy(name) -> bool

    dp.outbound(packet, now) -> IpSend(packet) | UdpSend(payload, dst, dport, sport) | Bypass(packet)
                                | Dropped(reason)
        packet: a plain IPv4 packet read from TUN. IpSend.packet is a whole IPv4 packet (outer header included)
        for a raw IP_HDRINCL socket; UdpSend is ESP-in-UDP to send from port ``sport``.
        Fail closed: a ``protect`` policy without an SA gives Dropped("no_sa") and an Acquire event.
    dp.inbound_ip(packet, now) -> bytes | None
        packet: a whole IPv4 packet from a raw socket for protocol 50/51. Returns the plain packet for TUN
        (tunnel: the inner packet; transport: the rebuilt packet), after the RFC 4301 §5.2 policy check.
    classify_udp4500(payload) -> "esp" | "ike" | "keepalive" | "invalid"
        For datagrams on UDP 4500: "ike" -> strip_non_esp_marker(payload) goes to IKE; "esp" -> inbound_udp:
    dp.inbound_udp(payload, src, sport, dst, dport, now) -> bytes | None
    dp.poll_events() -> list[SoftExpired | HardExpired | SeqExhausted | Acquire]
    dp.next_deadline() -> float | None; dp.handle_timer(now)      # seconds lifetimes
    dp.counters() -> dict; dp.sa_status(now) -> list[dict]        # JSON-ready, no keys
    dp.esp_sa_uat_lines() -> list[str]                            # Wireshark esp_sa rows (contain keys)

Algorithms (``transforms``): ESP ``aes{128,192,256}gcm{8,12,16}``, ``aes{128,192,256}ccm{8,12,16}``,
``chacha20poly1305``, ``aes{128,192,256}`` (CBC), ``aes{128,192,256}ctr``, ``null``, ``3des`` (legacy);
integrity ``sha1``, ``sha256``, ``sha384``, ``sha512`` (HMAC-SHA1-96, HMAC-SHA2-*-truncated). For IKE:
``encr_algorithm(name).keymat_len`` (key + salt bytes to draw from KEYMAT), ``.key_bits``, ``.iana_id``;
``integ_algorithm(name).key_len``; ``encr_by_iana(id, key_bits)`` / ``integ_by_iana(id)`` map back to names.
"""

from .dataplane import Bypass, DataPlane, Dropped, IpSend, OutboundResult, UdpSend
from .events import Acquire, Event, HardExpired, SeqExhausted, SoftExpired
from .natt import KEEPALIVE, NAT_T_PORT, add_non_esp_marker, classify_udp4500, strip_non_esp_marker
from .sad import Lifetime, SaParams
from .spd import Policy
from .transforms import encr_algorithm, encr_by_iana, integ_algorithm, integ_by_iana

__all__ = [
    "KEEPALIVE",
    "NAT_T_PORT",
    "Acquire",
    "Bypass",
    "DataPlane",
    "Dropped",
    "Event",
    "HardExpired",
    "IpSend",
    "Lifetime",
    "OutboundResult",
    "Policy",
    "SaParams",
    "SeqExhausted",
    "SoftExpired",
    "UdpSend",
    "add_non_esp_marker",
    "classify_udp4500",
    "encr_algorithm",
    "encr_by_iana",
    "integ_algorithm",
    "integ_by_iana",
    "strip_non_esp_marker",
]
