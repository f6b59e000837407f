"""The gateway's sockets: raw ESP/AH in, raw IP out, UDP 500/4500 for IKE and ESP-in-UDP.

Every socket we send from carries the gateway's fwmark so that policy routing (transport mode) sends our own
packets to the main table instead of back into the TUN device.
"""

from __future__ import annotations

import socket

IPPROTO_ESP = 50
IPPROTO_AH = 51
SO_MARK = 36
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
BUFFER_BYTES = 4 * 1024 * 1024
SOL_UDP = 17
UDP_GRO = 104  # linux/udp.h


def _big_buffers(s: socket.socket) -> None:
    # net.core.rmem_max cannot be raised inside a namespace; the FORCE variants work for root (notes/dataplane).
    for opt, fallback in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, fallback, BUFFER_BYTES)


def raw_receiver(proto: int) -> socket.socket:
    """All inbound IPv4 packets of `proto` (50 ESP, 51 AH), delivered with their IP header.

    With a raw socket bound to the protocol the kernel does not answer "protocol unreachable" for it,
    which matters because this kernel has no ESP/AH of its own.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
    s.setblocking(False)
    _big_buffers(s)
    return s


def raw_sender(mark: int) -> socket.socket:
    """Sends complete IPv4 packets we built ourselves (IPPROTO_RAW implies IP_HDRINCL).

    The kernel fills in the IP checksum, and the identification when it is zero.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    s.setblocking(False)
    _big_buffers(s)
    return s


def udp_socket(local: str, port: int, mark: int, gro: bool = False) -> socket.socket:
    """A UDP socket for IKE or ESP-in-UDP. ``gro``: receive runs of datagrams coalesced (see offload.split_gro);
    quietly left off on kernels without UDP_GRO, where every datagram then arrives alone."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    s.bind((local, port))
    s.setblocking(False)
    _big_buffers(s)
    if gro:
        try:
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError:
            pass
    return s
