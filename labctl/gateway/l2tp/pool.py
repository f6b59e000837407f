"""The LNS's pool of client addresses (handed out through IPCP, RFC 1332 §3.3)."""

from __future__ import annotations

from ipaddress import IPv4Address


class AddressPool:
    """Addresses ``first``..``last`` inclusive, minus ``exclude`` (e.g. the LNS's own PPP address)."""

    def __init__(self, first: IPv4Address, last: IPv4Address, exclude: tuple[IPv4Address, ...] = ()) -> None:
        if int(last) < int(first):
            raise ValueError(f"address pool {first}-{last} is empty")
        self.first = first
        self.last = last
        self._free = [IPv4Address(n) for n in range(int(first), int(last) + 1) if IPv4Address(n) not in exclude]
        self._used: dict[IPv4Address, str] = {}

    def allocate(self, user: str) -> IPv4Address | None:
        if not self._free:
            return None
        address = self._free.pop(0)
        self._used[address] = user
        return address

    def release(self, address: IPv4Address) -> None:
        if self._used.pop(address, None) is not None:
            self._free.append(address)
            self._free.sort()

    def status(self) -> dict[str, object]:
        return {
            "range": f"{self.first}-{self.last}",
            "free": len(self._free),
            "in_use": {str(address): user for address, user in sorted(self._used.items())},
        }
