"""ESP packet protection (RFC 4303), per SA: the bytes from the SPI to the ICV.

``seal`` builds an ESP packet from a payload and its next-header value; ``open_esp`` checks and removes it.
Tunnel/transport framing (which payload, which outer header) is the caller's business (``dataplane``), so
the same two functions serve raw IP, UDP encapsulation and bundles.

Layout (RFC 4303 §2): SPI(4) | Sequence(4) | IV | ciphertext of [payload | padding | pad length | next header]
| ICV. With ESN only the low 32 bits of the sequence number travel; the high 32 bits enter the ICV (appended
after the packet, §2.2.1) or the AEAD AAD (RFC 4106 §5, RFC 7634 §2.1).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from .errors import PacketDropped, SequenceExhausted
from .sad import SecurityAssociation
from .transforms import EspCipher

Rng = Callable[[int], bytes]

# Default padding content is 1, 2, 3, ... (RFC 4303 §2.4); precomputed for every pad length.
PADDING = tuple(bytes(range(1, n + 1)) for n in range(256))
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
HEADER_LEN = 8


def next_seq(sa: SecurityAssociation) -> int:
    """Take the next outbound sequence number. The counter never wraps (RFC 4303 §3.3.3, RFC 4304)."""
    seq = sa.seq + 1
    if seq > sa.seq_max:
        raise SequenceExhausted
    sa.seq = seq
    return seq


def seal(
    sa: SecurityAssociation,
    payload: bytes,
    next_header: int,
    seq: int,
    rng: Rng = os.urandom,
    iv: bytes | None = None,
) -> bytes:
    """The ESP packet carrying ``payload``. ``iv`` is only given by known-answer tests."""
    cipher: EspCipher = sa.cipher  # type: ignore[assignment]  # set for every ESP SA
    padlen = -(len(payload) + 2) % cipher.block
    plain = payload + PADDING[padlen] + bytes((padlen, next_header))
    header = sa.spi_b + _U32.pack(seq & 0xFFFFFFFF)
    if iv is None:
        # Counter modes need a never-repeating IV (RFC 4106 §3.1, RFC 3686 §3.1, RFC 7634 §2): the 64-bit
        # sequence number is one, since it never wraps. CBC needs an unpredictable one (RFC 3602 §2.1).
        iv = _U64.pack(seq) if cipher.counter_iv else rng(cipher.iv_len)
    if cipher.aead:
        aad = sa.spi_b + _U64.pack(seq) if sa.esn else header
        return header + iv + cipher.encrypt(iv, aad, plain)
    body = header + iv + cipher.encrypt(iv, b"", plain)
    integ = sa.integ
    if integ is None:
        return body
    if sa.esn:
        return body + integ.compute(body + _U32.pack(seq >> 32))
    return body + integ.compute(body)


def open_esp(sa: SecurityAssociation, data: bytes) -> tuple[bytes, int, int]:
    """Verify and decrypt; returns (payload, next header, full sequence number) or raises PacketDropped.

    Order per RFC 4303 §3.4: replay pre-check, ICV check, decrypt, then the window moves (§3.4.3).
    """
    cipher: EspCipher = sa.cipher  # type: ignore[assignment]
    integ = sa.integ
    iv_len = cipher.iv_len
    icv_len = cipher.icv_len if cipher.aead else (integ.icv_len if integ is not None else 0)
    start = HEADER_LEN + iv_len
    if len(data) < start + icv_len + 2:
        raise PacketDropped("truncated")
    replay = sa.replay
    seq = replay.infer(_U32.unpack_from(data, 4)[0])
    if seq is None or not replay.check(seq):
        sa.replay_drops += 1
        raise PacketDropped("replay")
    iv = data[HEADER_LEN:start]
    plain: bytes | None
    if cipher.aead:
        aad = sa.spi_b + _U64.pack(seq) if sa.esn else data[:HEADER_LEN]
        plain = cipher.decrypt(iv, aad, data[start:])
        if plain is None:
            sa.integrity_failures += 1
            raise PacketDropped("integrity")
    else:
        body = data
        if integ is not None:
            body = data[:-icv_len]
            signed = body + _U32.pack(seq >> 32) if sa.esn else body
            if not integ.verify(signed, data[-icv_len:]):
                sa.integrity_failures += 1
                raise PacketDropped("integrity")
        plain = cipher.decrypt(iv, b"", body[start:])
        if plain is None or len(plain) < 2:
            sa.decrypt_failures += 1
            raise PacketDropped("decrypt")
    replay.update(seq)
    padlen = plain[-2]
    end = len(plain) - 2 - padlen
    if end < 0 or plain[end:-2] != PADDING[padlen]:
        # RFC 4303 §2.4: a receiver that knows the default padding should check it.
        sa.pad_errors += 1
        raise PacketDropped("bad_padding")
    return plain[:end], plain[-1], seq
