"""The ESP tunnel fast paths: per-SA functions compiled once, so that a packet costs its cipher call plus as little
Python as possible.

Why this module exists: the general path (``dataplane`` -> ``esp.seal``/``open_esp``) costs about 10 µs of Python
per 1400-byte packet around a ~1.1 µs AES-GCM call (py-spy, see ``benchmarks/README.md``). Three tiers, each
falling back to the one before it, with the same wire format and the same checks:

1. **Per packet** (``compile_sealer``, ``compile_opener``): everything fixed for an SA's life — key objects, salt,
   SPI bytes, header templates, padding trailers — is bound into a closure; the caller caches the per-flow SPD
   decision. ESP tunnel mode with a salted AEAD (nonce = salt || 8-byte IV: AES-GCM-16, AES-CCM,
   ChaCha20-Poly1305) or with AES-CBC + HMAC.
2. **Batch** (``compile_batch_sealer``, ``compile_batch_opener``): a run of packets — one drain of the TUN device,
   one UDP GRO receive — with one list comprehension or C-level ``map`` per step instead of Python work per packet.
   Salted AEADs, and AES-CBC + HMAC (a whole run is one CBC pass).
3. **Uniform** (``compile_uniform_sealer``, ``compile_uniform_opener``): a run of *equal-size* packets, as bulk
   transfers produce, laid out back to back in one buffer: every step is a C-level join, ``struct`` unpack,
   ``map`` or list compare over the whole run, with no Python step per packet at all. Outbound, the result is one
   buffer ready for a UDP GSO send. What each tier gained is measured in benchmarks/README.md.

Anything else (AH, transport mode, bundles, short GCM tags, CTR, 3DES, null) returns ``None`` and stays on the
general path. A batch or uniform function also returns ``None`` — having changed nothing — for any run that is not
its common case, and the caller hands the packets to the next tier, which counts each drop under its reason.

What is never skipped, in any tier: the anti-replay pre-check before and the window update after the ICV check
(RFC 4303 §3.4.3), the ICV/tag check itself (``hmac.compare_digest`` or the AEAD's own constant-time tag check),
the padding check (§2.4), and sequence-number exhaustion and lifetimes (the caller falls back to the per-packet
path when a limit is near, so events fire exactly as there).
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable
from functools import lru_cache
from itertools import accumulate, chain, repeat
from operator import itemgetter

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import ipv4
from .errors import PacketDropped
from .esp import PADDING
from .sad import SecurityAssociation
from .transforms import CbcCipher, Integrity, SaltedAead

Sealer = Callable[[bytes, int], bytes]  # (inner packet, sequence number) -> ESP bytes from SPI to ICV
Opener = Callable[[bytes, int], tuple[bytes, int]]  # (buffer, offset of the SPI) -> (inner packet, sequence)
# (buffer, stride, count, offset of the SPI in each stride) -> (plaintexts every plaintext-size bytes, that size,
# the inner IPv4 length, first sequence number)
UniformOpener = Callable[[bytes, int, int, int], "tuple[bytes, int, int, int] | None"]
# (equal-size frames, offset of the IPv4 packet in each, first sequence number, None or a function from the ESP size
# to the bytes that go before each ESP packet) -> (the packets back to back, the size of each)
UniformSealer = Callable[[list[bytes], int, int, "Callable[[int], bytes] | None"], tuple[bytes, int]]
BatchSealer = Callable[[list[bytes], int], list[bytes]]  # (inner packets, first sequence number) -> ESP packets
# (packets, offset of the SPI in each) -> (plaintexts with their ESP trailer, inner IPv4 lengths, first sequence number)
BatchOpener = Callable[[list[bytes], int], "tuple[list[bytes], list[int], int] | None"]

_Q = struct.Struct("!Q")
_ESP_HEADER = 8  # SPI + sequence number (RFC 4303 §2)
_IV = 8  # explicit IV of the salted AEADs (RFC 4106 §3.1, RFC 4309 §3.1, RFC 7634 §2)
_CBC_BLOCK = 16


def _trailers(block: int) -> tuple[bytes, ...]:
    """Padding || pad length || next header (4, an IPv4 packet) for each payload length modulo ``block``.

    RFC 4303 §2.4: pad so that the ciphertext is a multiple of the block size (4 for the stream-like AEADs),
    with the default padding bytes 1, 2, 3, ...
    """
    out = []
    for rest in range(block):
        padlen = -(rest + 2) % block
        out.append(PADDING[padlen] + bytes((padlen, ipv4.PROTO_IPIP)))
    return tuple(out)


_TRAILERS_4 = _trailers(4)
_TRAILERS_16 = _trailers(16)
# The tunnel-mode trailer for each pad length: what a plaintext whose second-to-last byte is that length must end with.
_TUNNEL_TAILS = tuple(PADDING[n] + bytes((n, ipv4.PROTO_IPIP)) for n in range(256))
# The struct layouts of the batch and uniform tiers depend on a run's packet sizes: a few formats per flow, each
# compiled once here (for the data plane too) rather than per run.
run_layout = lru_cache(maxsize=256)(struct.Struct)


def compile_sealer(sa: SecurityAssociation, rng: Callable[[int], bytes]) -> Sealer | None:
    """The outbound ESP tunnel function for ``sa``, or None when the general path must handle it."""
    if sa.protocol != "esp" or not sa.tunnel:
        return None
    cipher = sa.cipher
    spi_b = sa.spi_b
    esn = sa.esn
    pack_q = _Q.pack
    if isinstance(cipher, SaltedAead):
        encrypt = cipher.aead_object.encrypt
        salt = cipher.salt
        trailers = _TRAILERS_4

        def seal_aead(inner: bytes, seq: int) -> bytes:
            # The 64-bit sequence number is the IV: unique for the SA's life because it never wraps (RFC 4106
            # §3.1, RFC 7634 §2); its low half is the header's sequence field.
            iv = pack_q(seq)
            header = spi_b + iv[4:]
            aad = spi_b + iv if esn else header  # RFC 4106 §5: SPI || 64-bit ESN with ESN, else SPI || seq
            return header + iv + encrypt(salt + iv, inner + trailers[len(inner) & 3], aad)

        return seal_aead
    integ = sa.integ
    if isinstance(cipher, CbcCipher) and isinstance(cipher.algorithm, algorithms.AES) and integ is not None:
        # One CBC context for the SA's life instead of one per packet (object creation cost ~2 µs). Its chaining
        # state is the last ciphertext block C; feeding a fresh random block R first outputs E_K(C xor R), which
        # is unpredictable and becomes this packet's IV — the "encrypt a nonce" way to make CBC IVs that
        # NIST SP 800-38A Appendix C describes, meeting RFC 3602 §2.1. The rest is plain CBC under that IV.
        update = Cipher(cipher.algorithm, modes.CBC(rng(_CBC_BLOCK))).encryptor().update
        key, digest, icv_len = integ.key, integ.hash_name, integ.icv_len
        hmac_digest = hmac.digest
        trailers = _TRAILERS_16

        def seal_cbc(inner: bytes, seq: int) -> bytes:
            body = update(rng(_CBC_BLOCK) + inner + trailers[len(inner) & 15])
            packet = spi_b + pack_q(seq)[4:] + body
            # RFC 4303 §2.2.1 / RFC 4304: with ESN the high 32 bits are authenticated but not sent.
            signed = packet + pack_q(seq)[:4] if esn else packet
            return packet + hmac_digest(key, signed, digest)[:icv_len]

        return seal_cbc
    return None


def _tunnel_aead(sa: SecurityAssociation) -> SaltedAead | None:
    """The salted AEAD of an ESP tunnel SA: what the batch and uniform tiers handle; None for anything else."""
    cipher = sa.cipher
    return cipher if sa.protocol == "esp" and sa.tunnel and isinstance(cipher, SaltedAead) else None


def compile_batch_sealer(sa: SecurityAssociation, rng: Callable[[int], bytes]) -> BatchSealer | None:
    """Outbound ESP tunnel for a run of packets at once (one drain of the TUN device), for the salted AEADs and
    AES-CBC + HMAC; None for anything else. The same packets as ``compile_sealer``'s, built with one list
    comprehension or one C-level ``map`` per step instead of Python work per packet (the reason is in
    ``compile_batch_opener``). The caller reserves the sequence numbers and checks the limits first, as for one
    packet."""
    cipher = _tunnel_aead(sa)
    if cipher is None:
        return _cbc_batch_sealer(sa, rng)
    encrypt = cipher.aead_object.encrypt
    salt = cipher.salt
    spi_b = sa.spi_b
    esn = sa.esn
    pack_q = _Q.pack
    trailers = _TRAILERS_4
    join = bytes.__add__

    def seal_batch(packets: list[bytes], first: int) -> list[bytes]:
        ivs = [pack_q(seq) for seq in range(first, first + len(packets))]  # the IV is the 64-bit sequence number
        if esn:
            aads = [spi_b + iv for iv in ivs]  # RFC 4106 §5: SPI || 64-bit ESN
            heads = [spi_b + iv[4:] + iv for iv in ivs]
        else:
            aads = [spi_b + iv[4:] for iv in ivs]  # SPI || sequence number: the ESP header itself
            heads = list(map(join, aads, ivs))
        bodies = map(encrypt, [salt + iv for iv in ivs], [p + trailers[len(p) & 3] for p in packets], aads)
        return list(map(join, heads, bodies))

    return seal_batch


def compile_uniform_sealer(sa: SecurityAssociation) -> UniformSealer | None:
    """``compile_batch_sealer`` for *equal-size* packets (bulk traffic read from TUN): the ESP packets come back
    joined, ready for one UDP GSO send, and no step runs Python per packet — each is one C-level join, unpack or
    ``map`` over the run (the reason is in ``compile_batch_opener``). Byte for byte what ``compile_sealer`` builds."""
    cipher = _tunnel_aead(sa)
    if cipher is None:
        return None
    encrypt = cipher.aead_object.encrypt
    add_salt = cipher.salt.__add__
    spi_b = sa.spi_b
    esn = sa.esn
    icv = cipher.icv_len
    # ESP header and IV in one pack: SPI, low 32 bits of the sequence number, then the 64-bit IV (= the sequence
    # number, RFC 4106 §3.1); the AAD is its first 8 bytes, or SPI || 64-bit ESN with ESN (RFC 4106 §5).
    head = struct.Struct("!4sIQ").pack
    esn_aad = struct.Struct("!4sQ").pack
    aad_of = itemgetter(slice(0, 8))
    iv_of = itemgetter(slice(8, 16))
    first_item = itemgetter(0)

    def seal_uniform(
        frames: list[bytes], start: int, first: int, outer: Callable[[int], bytes] | None
    ) -> tuple[bytes, int]:
        count = len(frames)
        size = len(frames[0]) - start
        tail = _TRAILERS_4[size & 3]
        layout = run_layout(f"{start}x{size + len(tail)}s")
        # frame || trailer for every frame with one join; the unpack then drops each frame's first ``start`` bytes.
        plaintexts = map(first_item, layout.iter_unpack(tail.join(frames) + tail))
        seqs = range(first, first + count)
        low = first & 0xFFFFFFFF
        if low + count - 1 > 0xFFFFFFFF:  # with ESN the low half wraps inside the run: the per-packet path handles it
            raise OverflowError("sequence number wraps inside the run")
        heads = list(map(head, repeat(spi_b, count), range(low, low + count), seqs))
        aads = map(esn_aad, repeat(spi_b, count), seqs) if esn else map(aad_of, heads)
        bodies = map(encrypt, map(add_salt, map(iv_of, heads)), plaintexts, aads)
        esp_size = 16 + size + len(tail) + icv
        prefix = outer(esp_size) if outer is not None else b""
        packets = zip(repeat(prefix, count), heads, bodies) if prefix else zip(heads, bodies)  # noqa: B905 - equal
        return b"".join(chain.from_iterable(packets)), len(prefix) + esp_size

    return seal_uniform


def compile_opener(sa: SecurityAssociation) -> Opener | None:
    """The inbound ESP tunnel function for ``sa``, or None. It raises PacketDropped like ``esp.open_esp``."""
    if sa.protocol != "esp" or not sa.tunnel:
        return None
    cipher = sa.cipher
    replay = sa.replay
    infer, check, update = replay.infer, replay.check, replay.update
    spi_b = sa.spi_b
    esn = sa.esn
    pack_q = _Q.pack
    from_bytes = int.from_bytes

    def sequence(data: bytes, start: int) -> int:
        # RFC 4303 §3.4.3: the cheap replay pre-check comes before any cryptography.
        seq = infer(from_bytes(data[start + 4 : start + 8], "big"))
        if seq is None or not check(seq):
            sa.replay_drops += 1
            raise PacketDropped("replay")
        return seq

    if isinstance(cipher, SaltedAead):
        decrypt = cipher.aead_object.decrypt
        salt = cipher.salt
        least = _ESP_HEADER + _IV + cipher.icv_len + 2

        def open_aead(data: bytes, start: int) -> tuple[bytes, int]:
            if len(data) - start < least:
                raise PacketDropped("truncated")
            seq = sequence(data, start)
            body = start + _ESP_HEADER
            aad = spi_b + pack_q(seq) if esn else data[start:body]
            try:
                plain = decrypt(salt + data[body : body + _IV], data[body + _IV :], aad)
            except InvalidTag:
                sa.integrity_failures += 1
                raise PacketDropped("integrity") from None
            update(seq)  # only after the tag verified (§3.4.3)
            return _inner(sa, plain), seq

        return open_aead
    integ = sa.integ
    if isinstance(cipher, CbcCipher) and isinstance(cipher.algorithm, algorithms.AES) and integ is not None:
        # One CBC decryption context for the SA's life: feeding IV || ciphertext yields one garbage block (the
        # IV decrypted against the previous packet's last block), then exactly CBC-decrypt(IV, ciphertext).
        dec = Cipher(cipher.algorithm, modes.CBC(bytes(_CBC_BLOCK))).decryptor().update
        key, digest, icv_len = integ.key, integ.hash_name, integ.icv_len
        hmac_digest = hmac.digest
        compare = hmac.compare_digest
        least = _ESP_HEADER + _CBC_BLOCK + _CBC_BLOCK + icv_len

        def open_cbc(data: bytes, start: int) -> tuple[bytes, int]:
            end = len(data) - icv_len
            if end - start < least - icv_len:
                raise PacketDropped("truncated")
            seq = sequence(data, start)
            signed = data[start:end]
            if esn:
                signed += pack_q(seq)[:4]
            if not compare(hmac_digest(key, signed, digest)[:icv_len], data[end:]):
                sa.integrity_failures += 1
                raise PacketDropped("integrity")
            if (end - start - _ESP_HEADER) % _CBC_BLOCK:
                sa.decrypt_failures += 1  # authentic but not whole blocks: the peer's bug, counted like open_esp
                raise PacketDropped("decrypt")
            plain = dec(data[start + _ESP_HEADER : end])[_CBC_BLOCK:]
            update(seq)
            return _inner(sa, plain), seq

        return open_cbc
    return None


def compile_batch_opener(sa: SecurityAssociation) -> BatchOpener | None:
    """Inbound ESP tunnel for a run of packets of one SA at once (a UDP GRO receive, a drained raw socket), for the
    salted AEADs; None for anything else.

    Why: per packet, Python's own work (calls, attribute lookups, temporaries) costs several times the AES-GCM call
    (py-spy, benchmarks/README.md). Here each step is one list comprehension or one C-level ``map`` over the run.

    It takes only the common case and returns None otherwise, having changed nothing, so that the caller hands
    every packet of the run to the per-packet path, which counts each drop under its reason: the sequence numbers
    must be consecutive and all above the replay window; every tag must verify; every trailer must be the default
    padding with next header 4 and no TFC padding; every inner packet must be an option-less IPv4 header whose total
    length fits. The checks are the per-packet ones (``compile_opener``, ``_inner``), done for the whole run before
    anything is accepted. The replay window is *not* updated: the caller does it (``ReplayWindow.update_run``) after
    its own policy check, still before any packet is delivered.
    """
    cipher = _tunnel_aead(sa)
    if cipher is None:
        return _cbc_batch_opener(sa)
    decrypt = cipher.aead_object.decrypt
    salt = cipher.salt
    fresh_run = sa.replay.fresh_run
    spi_b = sa.spi_b
    esn = sa.esn
    pack_q = _Q.pack
    least = _ESP_HEADER + _IV + cipher.icv_len + 22  # trailer (2) + an IPv4 header (20)

    def open_batch(packets: list[bytes], start: int) -> tuple[list[bytes], list[int], int] | None:
        count = len(packets)
        iv_at, body_at = start + _ESP_HEADER, start + _ESP_HEADER + _IV
        if min(map(len, packets)) - start < least:
            return None
        first = _fresh_run(packets, start, fresh_run)
        if first is None:
            return None
        aads = [spi_b + pack_q(s) for s in range(first, first + count)] if esn else [p[start:iv_at] for p in packets]
        try:
            plains = list(map(decrypt, [salt + p[iv_at:body_at] for p in packets], [p[body_at:] for p in packets],
                              aads))
        except InvalidTag:
            return None  # the per-packet path finds which one and counts it
        lengths = _inner_lengths(plains)
        return None if lengths is None else (plains, lengths, first)

    return open_batch


def _fresh_run(packets: list[bytes], start: int, fresh_run: Callable[[int, int], int | None]) -> int | None:
    """The replay pre-check of a run, before any cryptography (RFC 4303 §3.4.3): the full sequence number of its
    first packet when the run's sequence numbers are consecutive and all above the window (``fresh_run`` is the
    SA's ``ReplayWindow.fresh_run``), else None."""
    seqs = [int.from_bytes(p[start + 4 : start + 8], "big") for p in packets]
    low = seqs[0]
    if seqs != list(range(low, low + len(packets))):
        return None
    return fresh_run(low, len(packets))


def _inner_lengths(plains: list[bytes]) -> list[int] | None:
    """The inner packets' lengths when every decrypted plaintext of a run ends with the default padding and next
    header 4 (RFC 4303 §2.4, §2.6) right after an option-less IPv4 packet (RFC 791) of at least 24 bytes (what a
    flow key reads, ``flow_key``) and no TFC padding; None otherwise."""
    tails = _TUNNEL_TAILS
    lengths = [(p[2] << 8 | p[3]) if p[0] == 0x45 and p.endswith(tails[p[-2]]) else -1 for p in plains]
    if lengths != [len(p) - 2 - p[-2] for p in plains] or min(lengths) < 24:
        return None
    return lengths


def _cbc_hmac(sa: SecurityAssociation) -> tuple[CbcCipher, Integrity] | None:
    """The AES-CBC cipher and HMAC of an ESP tunnel SA (the CBC suites of the per-packet and batch tiers), or None."""
    cipher, integ = sa.cipher, sa.integ
    if sa.protocol == "esp" and sa.tunnel and isinstance(cipher, CbcCipher) and integ is not None and isinstance(
        cipher.algorithm, algorithms.AES
    ):
        return cipher, integ
    return None


_SEQ_HEAD = struct.Struct("!4sI")  # SPI, sequence number (its low 32 bits with ESN): the ESP header
_HIGH = struct.Struct("!I")  # the high 32 bits of an ESN, authenticated but not sent (RFC 4303 §2.2.1)


def _cbc_batch_sealer(sa: SecurityAssociation, rng: Callable[[int], bytes]) -> BatchSealer | None:
    """``compile_batch_sealer`` for AES-CBC + HMAC: the whole run is one CBC pass and one HMAC call per packet.

    Why one pass is the per-packet sealer's packets: that sealer keeps one CBC context per SA and feeds it a random
    block, the packet and its padding (whole blocks), taking the first output block as the IV (NIST SP 800-38A
    Appendix C, RFC 3602 §2.1). Feeding those pieces for every packet of the run in one call gives exactly the same
    output as one call per packet."""
    pair = _cbc_hmac(sa)
    if pair is None:
        return None
    cipher, integ = pair
    update = Cipher(cipher.algorithm, modes.CBC(rng(_CBC_BLOCK))).encryptor().update
    key, digest, icv_len = integ.key, integ.hash_name, integ.icv_len
    hmac_digest = hmac.digest
    head, high = _SEQ_HEAD.pack, _HIGH.pack
    spi_b = sa.spi_b
    esn = sa.esn
    trailers = _TRAILERS_16

    def seal_batch(packets: list[bytes], first: int) -> list[bytes]:
        count = len(packets)
        randoms = rng(_CBC_BLOCK * count)
        pieces = [randoms[i : i + _CBC_BLOCK] + p + trailers[len(p) & 15]
                  for i, p in zip(range(0, _CBC_BLOCK * count, _CBC_BLOCK), packets, strict=True)]
        stream = update(b"".join(pieces))
        ends = list(accumulate(map(len, pieces)))
        seqs = range(first, first + count)
        out = [head(spi_b, seq & 0xFFFFFFFF) + stream[end - len(piece) : end]
               for seq, piece, end in zip(seqs, pieces, ends, strict=True)]
        # RFC 4303 §2.2.1 / RFC 4304: with ESN the high 32 bits are authenticated but not sent.
        signed = [p + high(seq >> 32) for p, seq in zip(out, seqs, strict=True)] if esn else out
        return [p + hmac_digest(key, m, digest)[:icv_len] for p, m in zip(out, signed, strict=True)]

    return seal_batch


def _cbc_batch_opener(sa: SecurityAssociation) -> BatchOpener | None:
    """``compile_batch_opener`` for AES-CBC + HMAC: every ICV checked (``hmac.compare_digest``) before one CBC pass
    decrypts the whole run. The pass is fed IV || ciphertext of each packet, so each packet's first output block is
    garbage (its IV decrypted against the block before) and the rest is its plaintext, as in ``compile_opener``."""
    pair = _cbc_hmac(sa)
    if pair is None:
        return None
    cipher, integ = pair
    dec = Cipher(cipher.algorithm, modes.CBC(bytes(_CBC_BLOCK))).decryptor().update
    key, digest, icv_len = integ.key, integ.hash_name, integ.icv_len
    hmac_digest = hmac.digest
    compare = hmac.compare_digest
    high = _HIGH.pack
    fresh_run = sa.replay.fresh_run
    esn = sa.esn
    least = _ESP_HEADER + _CBC_BLOCK + _CBC_BLOCK + icv_len  # header, IV, one block, ICV

    def open_batch(packets: list[bytes], start: int) -> tuple[list[bytes], list[int], int] | None:
        count = len(packets)
        if min(map(len, packets)) - start < least:
            return None
        first = _fresh_run(packets, start, fresh_run)
        if first is None:
            return None
        signed = [p[start : len(p) - icv_len] for p in packets]
        macs = [p[len(p) - icv_len :] for p in packets]
        authed = [m + high(q >> 32) for m, q in zip(signed, range(first, first + count), strict=True)] if esn \
            else signed
        if not all(map(compare, [hmac_digest(key, m, digest)[:icv_len] for m in authed], macs)):
            return None  # the per-packet path finds which one and counts it
        if any([(len(m) - _ESP_HEADER) % _CBC_BLOCK for m in signed]):
            return None  # authentic but not whole blocks: the per-packet path counts it
        stream = dec(b"".join([m[_ESP_HEADER:] for m in signed]))
        ends = list(accumulate([len(m) - _ESP_HEADER for m in signed]))
        plains = [stream[end - len(m) + _ESP_HEADER + _CBC_BLOCK : end]
                  for m, end in zip(signed, ends, strict=True)]
        lengths = _inner_lengths(plains)
        return None if lengths is None else (plains, lengths, first)

    return open_batch


def compile_uniform_opener(sa: SecurityAssociation) -> UniformOpener | None:
    """``compile_batch_opener`` for a run of *equal-size* ESP packets laid out every ``stride`` bytes of one buffer
    (a UDP GRO receive cuts its datagrams at one size) carrying equal-size inner packets (bulk traffic): every step
    is a C-level unpack, ``map`` or compare over the whole run, with no Python work per packet at all.

    The same checks as the batch opener, in the same order, and the same "None and nothing changed" contract: the
    SPI and consecutive sequence numbers above the replay window (RFC 4303 §3.4.3) before any cryptography, every
    tag, then every trailer (default padding, next header 4: §2.4, §2.6) and inner header (version 4, no options,
    total length up to the trailer: no TFC padding)."""
    cipher = _tunnel_aead(sa)
    if cipher is None:
        return None
    decrypt = cipher.aead_object.decrypt
    add_salt = cipher.salt.__add__
    fresh_run = sa.replay.fresh_run
    spi_b = sa.spi_b
    esn_aad = struct.Struct("!4sQ").pack if sa.esn else None  # RFC 4106 §5: SPI || 64-bit ESN
    overhead = _ESP_HEADER + _IV + cipher.icv_len
    tails = _TUNNEL_TAILS

    def open_uniform(buf: bytes, stride: int, count: int, start: int) -> tuple[bytes, int, int, int] | None:
        size = stride - start
        plain_size = size - overhead
        if plain_size < 26 or len(buf) != stride * count:
            return None
        ids, parts = run_layout(f"!{start}x4sI{size - 8}x"), run_layout(f"!{start}x8s8s{size - 16}s")
        low = ids.unpack_from(buf)[1]
        first = fresh_run(low, count)
        if first is None:
            return None
        if list(ids.iter_unpack(buf)) != list(zip(repeat(spi_b, count), range(low, low + count), strict=True)):
            return None
        aads, ivs, bodies = zip(*parts.iter_unpack(buf), strict=True)
        if esn_aad is not None:
            aads = tuple(map(esn_aad, repeat(spi_b, count), range(first, first + count)))
        try:
            plains = b"".join(map(decrypt, map(add_salt, ivs), bodies, aads))
        except InvalidTag:
            return None  # the per-packet path finds which one and counts it
        padlen = plains[plain_size - 2]
        tail = tails[padlen]
        length = plain_size - len(tail)
        if length < 24:  # 24: the bytes a flow key reads (flow_key)
            return None
        if list(run_layout(f"!BxH{length - 4}x{len(tail)}s").iter_unpack(plains)) != [(0x45, length, tail)] * count:
            return None
        return plains, plain_size, length, first

    return open_uniform


def _inner(sa: SecurityAssociation, plain: bytes) -> bytes:
    """Strip and check the ESP trailer, then check and trim the inner IPv4 packet (tunnel mode)."""
    if len(plain) < 2:
        sa.decrypt_failures += 1
        raise PacketDropped("decrypt")
    padlen = plain[-2]
    end = len(plain) - 2 - padlen
    if end < 0 or plain[end:-2] != PADDING[padlen]:
        sa.pad_errors += 1  # RFC 4303 §2.4: a receiver that knows the default padding checks it
        raise PacketDropped("bad_padding")
    next_header = plain[-1]
    if next_header != ipv4.PROTO_IPIP:
        # RFC 4303 §2.6: 59 marks a dummy packet to discard; anything else is not a tunnel-mode payload.
        raise PacketDropped("dummy" if next_header == ipv4.PROTO_NONE else "not_tunnel")
    if end < 20 or plain[0] >> 4 != 4 or (plain[0] & 15) < 5:
        raise PacketDropped("bad_inner")
    tot = (plain[2] << 8) | plain[3]
    if tot > end or tot < (plain[0] & 15) * 4:
        raise PacketDropped("bad_inner")
    return plain[:tot]  # also drops TFC padding (RFC 4303 §2.7)


def outer_header_builder(src_b: bytes, dst_b: bytes) -> Callable[[int, int, int, int], bytes]:
    """A function (total length, identification, TOS, flags) -> 20-byte IPv4 header for ESP from src to dst.

    The checksum (RFC 1071) is the constant words' sum, precomputed here, plus the four that vary: no pass
    over the header per packet.
    """
    fixed = (ipv4.DEFAULT_TTL << 8) + ipv4.PROTO_ESP
    for addr in (src_b, dst_b):
        fixed += (addr[0] << 8 | addr[1]) + (addr[2] << 8 | addr[3])
    pack = ipv4.HEADER.pack

    def build(total: int, ident: int, tos: int, flags: int) -> bytes:
        s = fixed + (0x4500 | tos) + total + ident + flags
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return pack(0x45, tos, total, ident, flags, ipv4.DEFAULT_TTL, ipv4.PROTO_ESP, ~s & 0xFFFF, src_b, dst_b)

    return build


def flow_key(packet: bytes) -> bytes | None:
    """The bytes that decide an SPD lookup for an option-less, unfragmented IPv4 packet: protocol, addresses and,
    for TCP/UDP/SCTP, the ports (RFC 4301 §4.4.1.1). None for anything else (it takes the general path).
    Other protocols' bytes 20..24 are not selectors (ICMP's are type, code and a checksum that varies)."""
    if len(packet) < 24 or packet[0] != 0x45 or packet[6] & 0x3F or packet[7]:
        return None  # options, or MF / a fragment offset: ports are not where a cache key can find them
    if packet[9] in (ipv4.PROTO_TCP, ipv4.PROTO_UDP, 132):
        return packet[9:10] + packet[12:24]
    return packet[9:10] + packet[12:20]
