"""The batch tier for AES-CBC + HMAC (fastpath._cbc_batch_sealer / _cbc_batch_opener).

CBC packets carry a random IV, so a batch-sealed run cannot be compared byte for byte with per-packet sealing;
instead every run must open with the per-packet path (and in scapy), the batch opener must accept exactly what
the per-packet path accepts with the same resulting state, and refuse — changing nothing — what it must not take.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from scapy.layers.inet import IP

from labctl.gateway.ipsec.dataplane import DataPlane, UdpSend
from labctl.gateway.ipsec.sad import SecurityAssociation

from .lab import GW_A, GW_B, gateway_pair
from .test_fastpath import segment
from .test_scapy_interop import params_ab, scapy_sa

CBC_SUITES = [("aes128", "sha256"), ("aes256", "sha1"), ("aes192", "sha512")]


def out_sa(dp: DataPlane) -> SecurityAssociation:
    return next(s for s in dp._sad.all() if s.direction == "out")


def in_sa(dp: DataPlane) -> SecurityAssociation:
    return next(s for s in dp._sad.all() if s.direction == "in")


def state(dp: DataPlane) -> tuple[object, ...]:
    sas = sorted(((sa.spi, sa.direction, sa.seq, sa.packets, sa.bytes, sa.replay.top, sa.replay.bitmap)
                  for sa in dp._sad.all()), key=repr)
    return (repr(dp.counters()), tuple(sas))


def deliver(b: DataPlane, wire: bytes, encap: bool) -> bytes | None:
    return b.inbound_udp(wire, GW_A, 4500, GW_B, 4500, 1.0) if encap else b.inbound_ip(wire, 1.0)


def batch_in(b: DataPlane, wire: list[bytes], encap: bool) -> list[bytes] | None:
    opened = b.inbound_udp_batch(wire, 1.0) if encap else b.inbound_ip_batch(wire, 1.0)
    if opened is None:
        return None
    plains, lengths = opened
    return [p[:n] for p, n in zip(plains, lengths, strict=True)]


def primed(encr: str, integ: str, encap: bool, esn: bool = False) -> tuple[DataPlane, DataPlane, DataPlane]:
    """A, and two identical B's (one for the per-packet reference, one for the batch tier), each having seen the
    flow's first packet through the per-packet path."""
    a, b = gateway_pair(encr=encr, integ=integ, encap=encap, esn=esn)
    _, twin = gateway_pair(encr=encr, integ=integ, encap=encap, esn=esn)
    first = a.outbound(segment(0), 1.0)
    wire = first.payload if isinstance(first, UdpSend) else first.packet  # type: ignore[union-attr]
    assert deliver(b, wire, encap) == segment(0) and deliver(twin, wire, encap) == segment(0)
    return a, b, twin


def sealed(a: DataPlane, packets: list[bytes]) -> list[bytes]:
    got = a.outbound_batch(packets, 1.0)
    assert got is not None, "the batch tier refused a run of a cached flow"
    return got[0]


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize(("encr", "integ"), CBC_SUITES)
def test_cbc_batch_round_trip_matches_the_per_packet_path(encr: str, integ: str, encap: bool, esn: bool) -> None:
    a, b, twin = primed(encr, integ, encap, esn)
    packets = [segment(i, 900 + 37 * i) for i in range(1, 20)]  # every length mod 16
    wire = sealed(a, packets)
    assert out_sa(a).seq == 20 and a.counters()["out_packets"] == 20
    assert [deliver(b, w, encap) for w in wire] == packets, b.counters()
    assert batch_in(twin, wire, encap) == packets
    assert state(twin) == state(b)
    ivs = {w[(0 if encap else 20) + 8 : (0 if encap else 20) + 24] for w in wire}
    assert len(ivs) == len(wire)  # a fresh IV per packet
    # and the per-packet tier goes on where the batch left off, both ways
    nxt = a.outbound(segment(30), 1.0)
    nxt_wire = nxt.payload if isinstance(nxt, UdpSend) else nxt.packet  # type: ignore[union-attr]
    assert deliver(twin, nxt_wire, encap) == segment(30)


def test_cbc_batch_packets_decrypt_in_scapy() -> None:
    a, _, _ = primed("aes128", "sha256", encap=False)
    packets = [segment(i, 1000 + i) for i in range(1, 9)]
    scapy = scapy_sa(params_ab(a, "esp"), False)
    for i, w in enumerate(sealed(a, packets)):
        assert bytes(IP(bytes(scapy.decrypt(IP(w))))) == packets[i]


def test_cbc_batch_opener_takes_per_packet_sealed_runs() -> None:
    a, b, twin = primed("aes256", "sha1", encap=True)
    packets = [segment(i, 1200) for i in range(1, 12)]
    wire = [r.payload for r in (a.outbound(p, 1.0) for p in packets) if isinstance(r, UdpSend)]
    assert batch_in(twin, wire, True) == packets
    assert [deliver(b, w, True) for w in wire] == packets
    assert state(twin) == state(b)


def refused(b: DataPlane, wire: list[bytes], encap: bool) -> None:
    before = state(b)
    assert batch_in(b, wire, encap) is None
    assert state(b) == before


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize("where", [5, 30, 500, -1])  # sequence number, IV, ciphertext, ICV
def test_cbc_batch_refuses_a_forged_packet_and_the_per_packet_path_counts_it(encap: bool, where: int) -> None:
    a, b, _ = primed("aes128", "sha256", encap)
    wire = sealed(a, [segment(i, 1100) for i in range(1, 8)])
    forged = bytearray(wire[3])
    forged[(0 if encap else 20) + where if where >= 0 else where] ^= 1
    run = wire[:3] + [bytes(forged)] + wire[4:]
    refused(b, run, encap)
    assert [deliver(b, w, encap) for w in run].count(None) == 1
    assert b.counters()["drops"] == {"integrity": 1}


def test_cbc_batch_refuses_replays_gaps_and_an_esn_wrap() -> None:
    a, b, _ = primed("aes128", "sha256", encap=True)
    wire = sealed(a, [segment(i, 1100) for i in range(1, 9)])
    refused(b, wire[:2] + wire[3:], True)  # a gap
    refused(b, [wire[1], wire[0], *wire[2:]], True)  # reordered
    assert batch_in(b, wire, True) is not None
    refused(b, wire, True)  # now every one is a replay
    a2, b2, _ = primed("aes128", "sha256", encap=True, esn=True)
    out_sa(a2).seq = (1 << 32) - 3
    in_sa(b2).replay.top = (1 << 32) - 4
    run = sealed(a2, [segment(i, 1000) for i in range(1, 7)])  # the low half wraps inside the run
    refused(b2, run, True)
    assert [deliver(b2, w, True) for w in run] == [segment(i, 1000) for i in range(1, 7)]


def _craft(sa: SecurityAssociation, seq: int, plaintext: bytes) -> bytes:
    """An ESP-in-UDP packet of ``sa`` with a chosen CBC plaintext (whole blocks), properly authenticated."""
    iv = os.urandom(16)
    enc = Cipher(sa.cipher.algorithm, modes.CBC(iv)).encryptor()  # type: ignore[union-attr]
    packet = sa.spi_b + seq.to_bytes(4, "big") + iv + enc.update(plaintext) + enc.finalize()
    assert sa.integ is not None and sa.integ.hash_name == "sha256"
    return packet + hmac.new(sa.integ.key, packet, hashlib.sha256).digest()[: sa.integ.icv_len]


@pytest.mark.parametrize(("trailer", "drop"), [(b"\x01\x03\x02\x04", "bad_padding"), (b"\x01\x02\x02\x3b", "dummy")])
def test_cbc_batch_refuses_bad_trailers(trailer: bytes, drop: str) -> None:
    a, b, _ = primed("aes128", "sha256", encap=True)
    sa = out_sa(a)
    inner = segment(1, 1384)  # 1372 bytes + 4 of trailer = 86 blocks
    assert (len(inner) + len(trailer)) % 16 == 0
    run = [_craft(sa, seq, inner + trailer) for seq in range(2, 6)]
    refused(b, run, True)
    assert [deliver(b, w, True) for w in run] == [None] * 4 and b.counters()["drops"] == {drop: 4}


def test_cbc_batch_refuses_authentic_packets_that_are_not_whole_blocks() -> None:
    a, b, _ = primed("aes128", "sha256", encap=True)
    sa = out_sa(a)
    inner = segment(1, 1384)
    good = [_craft(sa, seq, inner + b"\x01\x02\x02\x04") for seq in range(2, 5)]
    body_cut = bytearray(good[1])
    del body_cut[30]  # one ciphertext byte fewer, then a fresh ICV: authentic, but not whole blocks
    assert sa.integ is not None
    signed = bytes(body_cut[: -sa.integ.icv_len])
    broken = signed + hmac.new(sa.integ.key, signed, hashlib.sha256).digest()[: sa.integ.icv_len]
    refused(b, [good[0], broken, good[2]], True)
    assert deliver(b, broken, True) is None and b.counters()["drops"] == {"decrypt": 1}
    # The refusal left the batch tier's CBC context aligned: the next runs still open.
    assert batch_in(b, good, True) == [inner] * 3
    assert batch_in(b, [_craft(sa, seq, inner + b"\x01\x02\x02\x04") for seq in range(5, 8)], True) == [inner] * 3
