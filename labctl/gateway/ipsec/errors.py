"""Internal signals of the packet path. Neither leaves the package: ``DataPlane`` turns them into counters,
``Dropped`` results and events."""

from __future__ import annotations


class PacketDropped(Exception):
    """The packet is dropped; ``reason`` names the counter that records it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SequenceExhausted(Exception):
    """The SA has sent its last sequence number and must not send again (RFC 4303 §3.3.3)."""
