"""The TUN device the data plane reads plain packets from and writes them back to.

Only the opening and configuration live here; reading and writing happen in the daemon's poll loop.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000  # every read and write starts with a struct virtio_net_hdr (offload.VNET_HDR)
IFNAMSIZ = 16


class TunError(OSError):
    """The TUN device could not be created (no /dev/net/tun, no CAP_NET_ADMIN, name in use)."""


@dataclass
class Tun:
    name: str
    fd: int
    vnet_hdr: bool = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_tun(name: str, vnet_hdr: bool = False) -> Tun:
    """Create (or attach to) TUN device `name` in the current network namespace, non-blocking.

    With ``vnet_hdr`` each frame carries a virtio header, so that we can write one coalesced TCP super-packet
    and let the kernel segment it (offload.TcpCoalescer). No TUNSETOFFLOAD: what we read stays ordinary packets
    with complete checksums (segmenting 64 KB reads and checksumming in Python did not pay, notes/dataplane).

    The device is not persistent: it disappears with our file descriptor, so a crashed gateway leaves
    no live route into a dead device (the blackhole routes set up beside it then take over: fail closed).
    """
    if len(name.encode()) >= IFNAMSIZ:
        raise TunError(f"TUN name {name!r} is longer than {IFNAMSIZ - 1} bytes")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(f"cannot open /dev/net/tun: {exc.strerror} (a container needs --device /dev/net/tun)") from exc
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    ifr = struct.pack("16sH22x", name.encode(), flags)
    try:
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        raise TunError(f"cannot create TUN device {name!r}: {exc.strerror} (needs CAP_NET_ADMIN)") from exc
    actual = res[:16].rstrip(b"\0").decode()
    return Tun(name=actual, fd=fd, vnet_hdr=vnet_hdr)
