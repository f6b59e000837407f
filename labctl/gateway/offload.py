"""Fewer kernel crossings per packet: TCP coalescing for TUN writes, and UDP GSO/GRO batching for ESP-in-UDP.

Sans-I/O like the cores: these functions build and split buffers; the daemon does the syscalls. The reasons,
measured on the project's 2-vCPU machines (shared/notes/dataplane-performance.md and benchmarks/README.md):

- **TUN writes.** With ``IFF_VNET_HDR`` every TUN read and write starts with a ``virtio_net_hdr``. In-order TCP
  segments of one flow, decrypted from one receive batch, are written as one TCP "super-packet" with
  ``GSO_TCPV4`` + ``NEEDS_CSUM``: the kernel segments it (or passes it whole to the LAN veth, which may hand it
  to the host unsegmented) and fills in each segment's TCP checksum from the pseudo-header sum we leave in the
  checksum field. One write instead of ~45; the bytes on the LAN stay ordinary TCP segments.
- **UDP GSO** (``UDP_SEGMENT``, 103): one ``sendmsg`` for a run of equal-size ESP-in-UDP datagrams to one peer;
  the kernel cuts it at ``gso_size`` (the last datagram may be shorter). Still standard ESP-in-UDP on the wire.
- **UDP GRO** (``UDP_GRO``, 104): one ``recvmsg`` may return several datagrams of one sender glued together, with
  their size in a control message; :func:`split_gro` cuts them apart again.

Only whole, option-less IPv4 TCP segments whose flags are ACK (optionally PSH on the last) are coalesced, and only
when sequence numbers are contiguous and every header field the receiver compares matches (like Linux GRO);
everything else is written as it came, with an all-zero virtio header.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from itertools import accumulate

from labctl.gateway.ipsec.fastpath import run_layout
from labctl.gateway.ipsec.ipv4 import internet_checksum

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: setsockopt/cmsg, the gso_size of a send
UDP_GRO = 104  # linux/udp.h: setsockopt to receive coalesced; cmsg carries the gso_size
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
GSO_MAX_BYTES = 65000  # payload bytes of one GSO send (below the 64 KB UDP/IP limit with headers)

# struct virtio_net_hdr (linux/virtio_net.h) in host byte order (TUN's default on little-endian machines):
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10
VNET_F_NEEDS_CSUM = 1
VNET_GSO_TCPV4 = 1
PLAIN_VNET_HDR = bytes(VNET_HDR_LEN)  # no offload: a complete packet with a complete checksum

_INT = struct.Struct("=i")
_TCP = 6
_ACK, _PSH = 0x10, 0x08
_MAX_SUPER = 65535  # IPv4 total length limit of the super-packet
_MAX_FLOWS = 32  # flows with a pending batch before everything is flushed


class _Batch:
    __slots__ = ("first", "hlen", "mss", "next_seq", "payloads", "size", "closed", "tos", "ttl", "head", "options")

    def __init__(self, first: bytes, hlen: int, seq: int) -> None:
        self.first = first  # the first segment: its headers become the super-packet's headers
        self.hlen = hlen
        self.mss = len(first) - hlen
        self.next_seq = (seq + self.mss) & 0xFFFFFFFF
        self.payloads = [first[hlen:]]
        self.size = len(first)
        self.closed = bool(first[33] & _PSH)  # a shorter segment or PSH ends a batch: nothing may follow it
        # What every later segment must repeat (Linux GRO compares the same): TOS, TTL, and ACK number, data
        # offset, flags and window in one slice, and the TCP options (timestamps) byte for byte.
        self.tos = first[1]
        self.ttl = first[8]
        self.head = first[28:36]
        self.options = first[40:hlen]


class TcpCoalescer:
    """Collects decrypted inner packets; :meth:`flush` returns TUN frames (virtio header included).

    Per flow (addresses and ports) one batch of contiguous equal-size segments; the last one may be shorter.
    Order within a flow is kept: a packet that cannot extend its flow's batch flushes that batch first.
    """

    def __init__(self) -> None:
        self._batches: dict[bytes, _Batch] = {}
        self._out: list[bytes] = []

    def add(self, pkt: bytes) -> None:
        n = len(pkt)
        if n < 40 or pkt[0] != 0x45 or pkt[9] != _TCP or pkt[6] & 0x3F or pkt[7]:
            self._out.append(PLAIN_VNET_HDR + pkt)  # not an option-less, unfragmented IPv4 TCP segment
            return
        key = pkt[12:24]
        hlen = 20 + (pkt[32] >> 4) * 4
        flags = pkt[33]
        batch = self._batches.get(key)
        if flags & ~_PSH != _ACK or hlen > n or hlen < 40 or n == hlen:
            # SYN/FIN/RST/URG/ECE/CWR, a bad data offset or a bare ACK: never merged (GRO flushes on these too).
            if batch is not None:
                self._emit(self._batches.pop(key))
            self._out.append(PLAIN_VNET_HDR + pkt)
            return
        seq = int.from_bytes(pkt[24:28], "big")
        if batch is not None:
            size = n - hlen
            head = batch.head
            if (
                not batch.closed
                and seq == batch.next_seq
                and hlen == batch.hlen
                and size <= batch.mss
                and batch.size + size <= _MAX_SUPER
                and pkt[1] == batch.tos
                and pkt[8] == batch.ttl
                and (pkt[28:36] == head or (pkt[28:33] == head[:5] and pkt[34:36] == head[6:]))  # PSH may differ
                and pkt[40:hlen] == batch.options
            ):
                batch.payloads.append(pkt[hlen:])
                batch.size += size
                batch.next_seq = (seq + size) & 0xFFFFFFFF
                if size < batch.mss or flags & _PSH:
                    batch.closed = True
                    if flags & _PSH:
                        first = batch.first
                        batch.first = first[:33] + bytes((first[33] | _PSH,)) + first[34:]
                return
            self._emit(self._batches.pop(key))
        elif len(self._batches) >= _MAX_FLOWS:
            self.flush_pending()
        self._batches[key] = _Batch(pkt, hlen, seq)

    def add_run(self, packets: list[bytes], lengths: list[int]) -> None:
        """Packets decrypted from one receive batch, in order; ``packets[i][:lengths[i]]`` is the IPv4 packet (the
        rest is the ESP trailer, never written).

        The common case — one TCP flow, consecutive segments, headers equal where Linux GRO wants them equal —
        becomes super-packets here with one C-level unpack per segment (:func:`_run_frames`). Anything else goes
        through :meth:`add` packet by packet, with the same result as if the batch path did not exist."""
        try:
            frames = _run_frames(packets, lengths) if len(packets) > 1 else None
        except (IndexError, struct.error):  # a header shorter than it says: add() decides packet by packet
            frames = None
        if frames is None:
            add = self.add
            for pkt, n in zip(packets, lengths, strict=True):
                add(pkt if len(pkt) == n else pkt[:n])
            return
        self._append_flow(packets[0][12:24], frames)

    def add_uniform(self, plains: bytes, stride: int, count: int, length: int) -> None:
        """``count`` packets of ``length`` bytes each, every ``stride`` bytes of ``plains`` (the rest of each stride is
        its ESP trailer): the layout of one UDP GRO receive decrypted by the data plane's uniform path. As
        :meth:`add_run`, without a Python step per packet when they are one TCP flow."""
        try:
            frames = _uniform_frames(plains, stride, count, length) if count > 1 else None
        except (IndexError, struct.error):  # as in add_run
            frames = None
        if frames is None:
            add = self.add
            for start in range(0, stride * count, stride):
                add(plains[start : start + length])
            return
        self._append_flow(plains[12:24], frames)

    def _append_flow(self, key: bytes, frames: list[bytes]) -> None:
        pending = self._batches.pop(key, None)
        if pending is not None:
            self._emit(pending)  # what came earlier in this flow leaves first
        self._out.extend(frames)

    def flush_pending(self) -> None:
        for batch in self._batches.values():
            self._emit(batch)
        self._batches.clear()

    def flush(self) -> list[bytes]:
        """Every frame to write, in order per flow; the coalescer is empty afterwards."""
        self.flush_pending()
        out, self._out = self._out, []
        return out

    def _emit(self, batch: _Batch) -> None:
        first = batch.first
        if len(batch.payloads) == 1:
            self._out.append(PLAIN_VNET_HDR + first)
            return
        self._out.append(_super_frame(first[: batch.hlen], batch.mss, batch.size, batch.payloads))


def _segment_layout(hlen: int, payload: int = 0, trailer: int = 0) -> struct.Struct:
    """The fields of an option-less IPv4 + TCP segment with ``hlen`` header bytes that coalescing compares, as one
    C-level unpack: version/IHL + TOS; flags/fragment + TTL + protocol; addresses + ports; sequence number; ack
    number + data offset; TCP flags; window; urgent pointer + options; then, when ``payload`` is given, the payload
    (and ``trailer`` bytes skipped). Not unpacked: total length, IP ID and both checksums, which differ per segment."""
    tail = f"{payload}s{trailer}x" if payload else ""
    return run_layout(f"!2s4x4s2x12sI5sB2s2x{hlen - 38}s{tail}")


def _tcp_header_length(first: bytes, shortest: int) -> int | None:
    """The IPv4 + TCP header length of a run's first packet when it is an option-less, unfragmented IPv4 TCP segment
    and every packet of the run (``shortest`` bytes at least) carries data after such a header; else None."""
    if shortest <= 40 or first[0] != 0x45 or first[9] != _TCP or first[6] & 0x3F or first[7]:
        return None  # 40: an IPv4 and a TCP header with data after them, before any header byte is read
    hlen = 20 + (first[32] >> 4) * 4
    return hlen if 40 <= hlen < shortest else None


def _run_frames(packets: list[bytes], lengths: list[int]) -> list[bytes] | None:
    """TUN frames for a run of separate packets (``packets[i][:lengths[i]]``): see :func:`_coalesce`."""
    hlen = _tcp_header_length(packets[0], min(lengths))
    if hlen is None:
        return None
    cols = list(zip(*map(_segment_layout(hlen).unpack_from, packets), strict=True))
    payloads = [p[hlen:n] for p, n in zip(packets, lengths, strict=True)]
    return _coalesce(cols, payloads, lambda i: packets[i][:hlen])


def _uniform_frames(plains: bytes, stride: int, count: int, length: int) -> list[bytes] | None:
    """TUN frames for ``count`` packets of ``length`` bytes laid out every ``stride`` bytes: see :func:`_coalesce`."""
    hlen = _tcp_header_length(plains, length)
    if hlen is None:
        return None
    cols = list(zip(*_segment_layout(hlen, length - hlen, stride - length).iter_unpack(plains), strict=True))
    return _coalesce(cols, list(cols.pop()), lambda i: plains[i * stride : i * stride + hlen])


def _coalesce(
    cols: list[tuple[object, ...]], payloads: list[bytes], head_of: Callable[[int], bytes]
) -> list[bytes] | None:
    """Super-packets (GSO_TCPV4) for consecutive segments of one TCP flow, or None when the run is anything else:
    headers equal wherever :meth:`TcpCoalescer.add` (and Linux GRO) compares them, contiguous sequence numbers,
    flags ACK or ACK+PSH. A segment with PSH or shorter than the first ends a super-packet (nothing may follow it
    in one, as in :meth:`TcpCoalescer.add`); the next one starts another. ``cols`` are :func:`_segment_layout`'s
    columns, ``head_of(i)`` the IPv4+TCP header of segment ``i``."""
    count = len(payloads)
    flags = cols[5]
    if flags.count(_ACK) + flags.count(_ACK | _PSH) != count or any(
        col.count(col[0]) != count for col in (cols[0], cols[1], cols[2], cols[4], cols[6], cols[7])
    ):
        return None
    sizes = list(map(len, payloads))
    seq = cols[3][0]
    if not isinstance(seq, int) or seq + sum(sizes) > 0xFFFFFFFF:
        return None  # a wrap inside the run: the contiguity compare below would not be exact
    if list(cols[3]) != list(accumulate(sizes[:-1], initial=seq)):
        return None
    acks, full = flags.count(_ACK), sizes.count(sizes[0])
    # The common case, one super-packet: all ACK and full-size but the last, which may carry PSH or be shorter.
    simple = (acks == count or (acks == count - 1 and flags[-1] != _ACK)) and (
        full == count or (full == count - 1 and sizes[-1] < sizes[0])
    )
    ends = [count - 1] if simple else _stretch_ends(flags, sizes)
    frames = []
    start = 0
    for end in ends:
        head = head_of(start)
        if end == start:
            frames.append(PLAIN_VNET_HDR + head + payloads[start])
        else:
            if flags[end] != _ACK:  # the PSH of the stretch's last segment goes on the super-packet
                head = head[:33] + bytes((_ACK | _PSH,)) + head[34:]
            total = len(head) + sum(sizes[start : end + 1])
            if total > _MAX_SUPER:
                return None
            frames.append(_super_frame(head, sizes[start], total, payloads[start : end + 1]))
        start = end + 1
    return frames


def _stretch_ends(flags: tuple[object, ...], sizes: list[int]) -> list[int]:
    """Where super-packets end: after a PSH or a segment shorter than its stretch's first, and before a longer one
    (a super-packet is cut at its first segment's size)."""
    ends = []
    mss = 0
    for i, size in enumerate(sizes):
        if mss and size > mss:
            ends.append(i - 1)
            mss = 0
        if not mss:
            mss = size
        if flags[i] != _ACK or size < mss:
            ends.append(i)
            mss = 0
    if mss:
        ends.append(len(sizes) - 1)
    return ends


def _super_frame(head: bytes, mss: int, total: int, payloads: list[bytes]) -> bytes:
    """A TUN frame: virtio header (GSO_TCPV4 at ``mss``, NEEDS_CSUM) + the IPv4/TCP headers ``head`` adjusted to
    ``total`` bytes + the payloads."""
    hlen = len(head)
    ip = bytearray(head[:20])
    ip[2:4] = total.to_bytes(2, "big")
    ip[10] = ip[11] = 0
    ip[10:12] = internet_checksum(ip).to_bytes(2, "big")  # the stack checks the super-packet's IP header
    tcp = bytearray(head[20:hlen])
    # NEEDS_CSUM contract (virtio 1.x §5.1.6.2): the checksum field holds the pseudo-header sum, uncomplemented;
    # the kernel adds the segment bytes and complements (RFC 793 §3.1 / RFC 1071) for each segment it cuts.
    pseudo = (head[12] << 8 | head[13]) + (head[14] << 8 | head[15]) + (head[16] << 8 | head[17])
    pseudo += (head[18] << 8 | head[19]) + _TCP + (total - 20)
    while pseudo > 0xFFFF:
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
    tcp[16:18] = pseudo.to_bytes(2, "big")
    vnet = VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, hlen, mss, 20, 16)
    return b"".join((vnet, ip, tcp, *payloads))


def split_gro(data: bytes, gso_size: int) -> list[bytes]:
    """The datagrams of one UDP GRO receive: ``gso_size`` bytes each, the last one possibly shorter."""
    if gso_size <= 0 or gso_size >= len(data):
        return [data]
    return [data[i : i + gso_size] for i in range(0, len(data), gso_size)]


def gro_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The gso_size a UDP_GRO control message reports (0 when the datagram came alone)."""
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            return int(_INT.unpack_from(value)[0])  # the kernel puts an int (udp_cmsg_recv)
    return 0


class GsoRuns:
    """Groups outgoing ESP-in-UDP datagrams into runs one ``sendmsg`` with ``UDP_SEGMENT`` can carry:
    same destination, equal size, except that the last datagram of a run may be shorter (it then ends the run)."""

    __slots__ = ("dest", "size", "parts", "total")

    def __init__(self) -> None:
        self.dest: tuple[str, int] | None = None
        self.size = 0
        self.parts: list[bytes] = []
        self.total = 0

    def fits(self, payload: bytes, dest: tuple[str, int]) -> bool:
        """Whether ``payload`` may join the current run (otherwise flush the run first)."""
        n = len(payload)
        return (
            dest == self.dest
            and n <= self.size
            and self.total + n <= GSO_MAX_BYTES
            and len(self.parts) < GSO_MAX_SEGMENTS
            and self.total % self.size == 0  # no shorter datagram so far
        )

    def add(self, payload: bytes, dest: tuple[str, int]) -> None:
        if not self.parts:
            self.dest = dest
            self.size = len(payload)
        self.parts.append(payload)
        self.total += len(payload)

    def load(self, payloads: list[bytes], dest: tuple[str, int]) -> bool:
        """Make ``payloads`` the (empty) run at once when one sendmsg can carry them all — equal size, the last
        possibly shorter, within the GSO limits; False (nothing changed) otherwise."""
        sizes = list(map(len, payloads))
        size, count, total = sizes[0], len(sizes), sum(sizes)
        if self.parts or count > GSO_MAX_SEGMENTS or total > GSO_MAX_BYTES or sizes[-1] > size:
            return False
        full = sizes.count(size)
        if full != count and (full != count - 1 or sizes[-1] == size):
            return False  # only the last datagram may differ, and only by being shorter: the kernel cuts at ``size``
        self.dest, self.size, self.parts, self.total = dest, size, payloads, total
        return True

    def take(self) -> tuple[bytes, int, tuple[str, int]] | None:
        """(the joined datagrams, gso_size, destination) and an empty run; None when the run is empty."""
        if not self.parts or self.dest is None:
            return None
        run = (self.parts[0] if len(self.parts) == 1 else b"".join(self.parts), self.size, self.dest)
        self.parts = []
        self.total = 0
        self.dest = None
        return run
