"""IKEv2 (RFC 7296), sans-I/O: bytes, commands and ``now`` in; datagrams, events and a timer deadline out.

Driving it (the daemon is the only place with sockets and clocks)::

    engine = Ikev2Engine([ConnectionConfig(...)], rng=os.urandom, wall_clock=utc_now)
    engine.start(now)                                   # connections / children with start_action "start"
    engine.receive_datagram(data, src, dst, now)        # src/dst = (ip, port); data WITHOUT the non-ESP marker
    engine.initiate(name, now[, child]) / acquire(name, child, now) / terminate(name, now)
    engine.rekey(name, "ike" | "<child name>" | "child", now)
    engine.sa_limit_reached(spi, now, hard=False)       # data plane: soft limit -> rekey, hard -> delete
    for data, src, dst in engine.datagrams_to_send(now): ...   # if src port is 4500 the CALLER prepends 0x00000000
    deadline = engine.get_timer(); engine.handle_timer(now)    # call handle_timer at or after the deadline
    while (ev := engine.next_event()) is not None: ...         # see events.py
    engine.status()                                     # JSON-ready; engine.last_error per connection
    engine.ikev2_decryption_table_lines()               # Wireshark ikev2_decryption_table rows

``wall_clock`` returns the timezone-aware UTC time certificate validity is checked at (RFC 5280 §4.1.2.5);
without it certificate authentication fails. Chains are validated by `labctl.gateway.ike.certs`.

After NAT detection (or with ``encap=True``, which fakes our NAT_DETECTION_SOURCE_IP like strongSwan's
``encap=yes``) the initiator moves IKE to port 4500 and ``ChildSaUp`` carries ``encap=(sport, dport)``.
``ChildSaUp`` holds keys per direction (encryption key includes the AEAD salt / CTR nonce); a rekeyed child
arrives as a new ``ChildSaUp`` with ``replaces`` set, followed later by ``ChildSaDown`` for the old SPIs.

Modules: constants (numbers), codec (payloads), ciphers (SK payload), keymat (§2.14, §2.17, §2.18),
proposals (swanctl syntax, selection), ts (selectors, narrowing), auth (IDs, PSK, RFC 7427 signatures,
certificates), config, events, state (per-SA records), engine (exchanges, retransmission, timers).
"""

from labctl.gateway.ike.v2.config import ChildConfig, ConnectionConfig
from labctl.gateway.ike.v2.engine import Ikev2Engine

__all__ = ["ChildConfig", "ConnectionConfig", "Ikev2Engine"]
