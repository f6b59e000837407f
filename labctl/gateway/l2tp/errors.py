"""Errors raised by the codecs; the protocol cores catch them, count the packet and drop it."""

from __future__ import annotations


class MalformedPacket(ValueError):
    """The peer sent bytes that do not parse; never escapes a core's receive path."""
