"""What an L2TP/IPsec remote-access scenario expects, derived from the topology's `l2tp` section.

A remote-access lab has no `tunnels:`: every client dials into the LNS with IKEv1 and an ESP transport SA
protecting its L2TP (RFC 3193 §5), then gets a PPP session and an address from the pool. The test traffic
runs from every client (through its PPP address) to a host on the LNS's LAN and back.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from labctl.checks.decryption import Flow
from labctl.checks.l2tp import Client, SessionExpectation
from labctl.checks.reachability import TCP_PORT
from labctl.checks.sa_state import SaExpectation
from labctl.checks.wire import WireExpectation
from labctl.lab.remote_access_config import CONNECTION
from labctl.scenarios.expect import Expectations, ExpectError, derive, overridden
from labctl.scenarios.model import Scenario
from labctl.topology.model import Topology
from labctl.topology.remote_access import RemoteAccess, lan_subnets, lns_network
from labctl.topology.tunnels import endpoint_address


@dataclass(frozen=True)
class L2tpExpectations:
    lns: str
    lns_address: str
    segment: str
    """The LNS's network, which every client's IKE/ESP crosses."""
    clients: tuple[Client, ...]
    client_networks: dict[str, str]
    """Client node -> the network it dials from (behind a NAT: its home network)."""
    pool: tuple[str, str]
    lan: tuple[str, ...]
    ike_mode: str
    ike_algorithms: str | None
    esp_algorithms: str | None
    target: str
    target_address: str
    connection: str = CONNECTION

    @property
    def segments(self) -> tuple[str, ...]:
        """Where captures are taken: the LNS's network and every client's own network."""
        return tuple(dict.fromkeys([self.segment, *self.client_networks.values()]))

    @property
    def admitted(self) -> tuple[Client, ...]:
        """The clients that must get a session (the others dial in with a wrong password)."""
        return tuple(c for c in self.clients if not c.refused)

    def crossing(self, segment: str) -> tuple[Client, ...]:
        """The clients whose IKE/ESP crosses `segment`."""
        return tuple(c for c in self.clients if segment in (self.segment, self.client_networks[c.node]))

    def wire(self, segment: str) -> WireExpectation:
        clients = self.crossing(segment)
        # On the LNS's network a client behind a NAT shows the router's address; on its own network, its own.
        seen = {c.node: c.seen if segment == self.segment else c.address for c in clients}
        return WireExpectation(
            peers=frozenset({self.lns_address, *seen.values()}), protection="esp", encap=False, ike_version=1,
            ike_mode=self.ike_mode,
            # RFC 2409 §5: Main Mode encrypts the identities (messages 5 and 6); Aggressive Mode does not.
            identity_visible=self.ike_mode == "aggressive",
            encap_peers=frozenset(seen[c.node] for c in clients if c.nat), hub=self.lns_address)

    def sa(self) -> SaExpectation:
        return SaExpectation(self.connection, "IKEv1", "transport", "esp", False, self.ike_mode, None,
                             self.ike_algorithms, {"esp": self.esp_algorithms} if self.esp_algorithms else None)

    def sessions(self) -> SessionExpectation:
        return SessionExpectation(self.lns, self.clients, self.pool)

    def flows(self, segment: str, addresses: dict[str, str]) -> list[Flow]:
        """The test traffic inside the ESP crossing `segment`: each client's PPP address with the target."""
        return [Flow(addresses.get(c.user, f"{c.user}'s address"), self.target_address, TCP_PORT)
                for c in self.crossing(segment) if not c.refused]

    def protected(self) -> tuple[str, ...]:
        """What must never cross in clear: the LAN, the pool, and the LNS's own address (it speaks only IKE and
        ESP to its clients, RFC 3193 §4)."""
        first, last = (ipaddress.IPv4Address(a) for a in self.pool)
        pool = [str(n) for n in ipaddress.summarize_address_range(first, last)]
        return (*self.lan, *pool, f"{self.lns_address}/32")


def is_remote_access(topology: Topology, scenario: Scenario) -> bool:
    """The scenario is about the topology's L2TP remote access (it names no tunnel, and there is none)."""
    return topology.l2tp is not None and scenario.tunnel is None and not topology.tunnels


def _masquerading_router(topology: Topology, inside: str, outside: str) -> str | None:
    for name, node in topology.nodes.items():
        if {inside, outside} <= {i.network for i in node.interfaces} and outside in node.masquerade:
            return name
    return None


def _client(topology: Topology, ra: RemoteAccess, node: str, segment: str) -> tuple[Client, str]:
    if node not in topology.nodes:
        raise ExpectError(f"l2tp client {node!r} is not in topology {topology.name}")
    iface = topology.nodes[node].interfaces[0]  # a client dials from its first interface (remote_access_config)
    own = str(ipaddress.IPv4Interface(iface.address).ip)
    settings = ra.clients[node]
    # A password of its own that is not its user's (a user without one gets a generated password at `up`).
    refused = settings.password is not None and settings.password != ra.users.get(settings.user)
    if iface.network == segment:
        return Client(node, settings.user, own, own, False, refused), iface.network
    router = _masquerading_router(topology, iface.network, segment)
    if router is None:
        raise ExpectError(f"{node} dials from {iface.network}, but no router masquerades it onto {segment}")
    # RFC 3947 §3: the NAT rewrites the client's address; IKE detects it and ESP moves into UDP 4500.
    return Client(node, settings.user, own, endpoint_address(topology, router, segment), True, refused), iface.network


def derive_l2tp(topology: Topology, scenario: Scenario) -> L2tpExpectations:
    ra = topology.l2tp
    if ra is None:
        raise ExpectError(f"topology {topology.name} has no l2tp section")
    segment = lns_network(topology, ra)
    if segment is None:
        raise ExpectError(f"l2tp: the LNS {ra.lns} has no network for IKE/ESP")
    clients, networks = [], {}
    for node in ra.clients:
        client, network = _client(topology, ra, node, segment)
        clients.append(client)
        networks[node] = network
    target = scenario.traffic[1]
    if target not in topology.nodes:
        raise ExpectError(f"traffic node {target!r} is not in topology {topology.name}")
    ike = ra.ike
    return overridden(L2tpExpectations(
        lns=ra.lns, lns_address=endpoint_address(topology, ra.lns, segment), segment=segment,
        clients=tuple(clients), client_networks=networks, pool=ra.pool, lan=tuple(lan_subnets(topology, ra)),
        ike_mode=ike.mode, ike_algorithms=ike.proposals[0] if ike.proposals else None,
        esp_algorithms=ike.esp_proposals[0] if ike.esp_proposals else None, target=target,
        target_address=str(ipaddress.IPv4Interface(topology.nodes[target].interfaces[0].address).ip),
    ), scenario)


def derive_scenario(topology: Topology, scenario: Scenario) -> Expectations | L2tpExpectations:
    """The expectations of a tunnel scenario, or of a remote-access one (see `is_remote_access`)."""
    return derive_l2tp(topology, scenario) if is_remote_access(topology, scenario) else derive(topology, scenario)
