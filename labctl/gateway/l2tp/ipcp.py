"""IPCP option policies (RFC 1332 §3, DNS options RFC 1877 §1)."""

from __future__ import annotations

from ipaddress import IPv4Address

from labctl.gateway.l2tp.ppp_frame import CONFIGURE_ACK, CONFIGURE_NAK, CONFIGURE_REJECT, Option

OPT_IP_ADDRESS = 3  # RFC 1332 §3.3
OPT_PRIMARY_DNS = 129  # RFC 1877 §1.1
OPT_SECONDARY_DNS = 131  # RFC 1877 §1.3

_DNS_OPTIONS = (OPT_PRIMARY_DNS, OPT_SECONDARY_DNS)
_UNSPECIFIED = IPv4Address(0)


def _address(option: Option) -> IPv4Address | None:
    return IPv4Address(option.data) if len(option.data) == 4 else None


class IpcpServerPolicy:
    """The LNS: offers its own address, hands the peer ``assigned`` and the DNS servers by Nak."""

    def __init__(self, local: IPv4Address, assigned: IPv4Address, dns: tuple[IPv4Address, ...]) -> None:
        self.local = local
        self.assigned = assigned
        self.dns = dns
        self._send_address = True

    def build_request(self) -> list[Option]:
        return [Option(OPT_IP_ADDRESS, self.local.packed)] if self._send_address else []

    def check_request(self, options: list[Option]) -> tuple[int, list[Option]]:
        naks: list[Option] = []
        rejects: list[Option] = []
        for option in options:
            value = _address(option)
            if option.type == OPT_IP_ADDRESS and value is not None:
                # RFC 1332 §3.3: Nak with the address the peer should use.
                if value != self.assigned:
                    naks.append(Option(OPT_IP_ADDRESS, self.assigned.packed))
            elif option.type in _DNS_OPTIONS and value is not None:
                index = _DNS_OPTIONS.index(option.type)
                if index >= len(self.dns):
                    rejects.append(option)  # RFC 1877 §1: Reject when we have no such server
                elif value != self.dns[index]:
                    naks.append(Option(option.type, self.dns[index].packed))
            else:
                rejects.append(option)  # IP-Compression-Protocol, NBNS, anything unknown
        if rejects:
            return CONFIGURE_REJECT, rejects
        if naks:
            return CONFIGURE_NAK, naks
        return CONFIGURE_ACK, options

    def received_ack(self, options: list[Option]) -> None:
        pass

    def received_nak(self, options: list[Option]) -> None:
        pass  # our own address is fixed by configuration; keep asking for it

    def received_reject(self, options: list[Option]) -> None:
        if any(option.type == OPT_IP_ADDRESS for option in options):
            self._send_address = False


class IpcpClientPolicy:
    """The remote user: asks for 0.0.0.0 and DNS 0.0.0.0 and takes what the server Naks back."""

    def __init__(self, want_dns: bool = True) -> None:
        self.address = _UNSPECIFIED
        self.dns: dict[int, IPv4Address] = {kind: _UNSPECIFIED for kind in _DNS_OPTIONS} if want_dns else {}
        self.peer_address: IPv4Address | None = None

    def build_request(self) -> list[Option]:
        options = [Option(OPT_IP_ADDRESS, self.address.packed)]
        options += [Option(kind, value.packed) for kind, value in self.dns.items()]
        return options

    def check_request(self, options: list[Option]) -> tuple[int, list[Option]]:
        rejects = [option for option in options if option.type != OPT_IP_ADDRESS or _address(option) is None]
        if rejects:
            return CONFIGURE_REJECT, rejects
        for option in options:
            self.peer_address = _address(option)
        return CONFIGURE_ACK, options

    def received_ack(self, options: list[Option]) -> None:
        pass

    def received_nak(self, options: list[Option]) -> None:
        for option in options:
            value = _address(option)
            if value is None:
                continue
            if option.type == OPT_IP_ADDRESS:
                self.address = value
            elif option.type in self.dns:
                self.dns[option.type] = value

    def received_reject(self, options: list[Option]) -> None:
        for option in options:
            self.dns.pop(option.type, None)

    def dns_servers(self) -> tuple[IPv4Address, ...]:
        return tuple(value for value in self.dns.values() if value != _UNSPECIFIED)
