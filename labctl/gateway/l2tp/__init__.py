"""Sans-I/O L2TPv2 (RFC 2661) and PPP (RFC 1661) for L2TP/IPsec remote access.

Two endpoints, both pure state machines with the aioquic-style surface; the caller owns the UDP
socket (port 1701, inside the IPsec transport SA), the TUN device and the clock:

    endpoint.receive_datagram(data, peer, now)      # a UDP payload from ``peer``
    endpoint.datagrams_to_send() -> [(bytes, peer)] # UDP payloads to send now
    endpoint.get_timer() -> float | None            # when to call handle_timer next
    endpoint.handle_timer(now)
    endpoint.next_event() -> Event | None           # TunnelUp/Down, SessionUp/Down, AuthFailed,
                                                    # EchoTimeout, IpPacket(session, packet)
    endpoint.send_ip(session, packet) -> [(bytes, peer)]   # an IPv4 packet from the TUN side
    endpoint.status() -> dict                       # JSON-ready: tunnels, sessions, PPP phase, user

``peer`` is an opaque hashable chosen by the caller (e.g. ``(sa_id, address, port)``); the LNS keys
tunnels by (peer, tunnel id), so two clients behind one NAT stay apart as long as their peer keys
differ. ``now`` is any monotonic clock in seconds. Randomness comes from the ``rng`` argument
(default ``os.urandom``).

``L2tpServer(ServerConfig(...))`` is the LNS: users table, address pool, DNS servers, any number of
tunnels and sessions; ``close_session(session, now)`` and ``close(now)`` disconnect.
``L2tpClient(ClientConfig(...), server_peer)`` is the remote user (LAC + PPP client):
``connect(now)``, ``close(now)``, and ``result`` (a ``SessionUp``: assigned address, DNS, peer address).
"""

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.client import ClientConfig, L2tpClient
from labctl.gateway.l2tp.constants import PORT
from labctl.gateway.l2tp.events import (
    AuthFailed,
    EchoTimeout,
    Event,
    IpPacket,
    SessionDown,
    SessionKey,
    SessionUp,
    TunnelDown,
    TunnelUp,
)
from labctl.gateway.l2tp.ppp import PppConfig
from labctl.gateway.l2tp.reliable import RetransmitConfig
from labctl.gateway.l2tp.server import L2tpServer, ServerConfig
from labctl.gateway.l2tp.tunnel import TunnelSettings

__all__ = [
    "PORT",
    "AuthFailed",
    "AuthMethod",
    "ClientConfig",
    "EchoTimeout",
    "Event",
    "IpPacket",
    "L2tpClient",
    "L2tpServer",
    "PppConfig",
    "RetransmitConfig",
    "ServerConfig",
    "SessionDown",
    "SessionKey",
    "SessionUp",
    "TunnelDown",
    "TunnelSettings",
    "TunnelUp",
]
