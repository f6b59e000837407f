"""Single DES block encryption for MS-CHAPv2 (RFC 2759 §8.5-8.6).

``cryptography`` no longer offers single DES, but TripleDES with three equal keys (EDE: encrypt,
decrypt, encrypt with the same key) is exactly single DES, so we use it.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

BLOCK_SIZE = 8


def expand_des_key(key7: bytes) -> bytes:
    """Spread 56 key bits over 8 octets and set odd parity in each low bit (RFC 2759 §8.6, §9.3)."""
    if len(key7) != 7:
        raise ValueError("a raw DES key is 7 octets")
    bits = int.from_bytes(key7, "big")
    out = bytearray()
    for i in range(8):
        seven = (bits >> (49 - 7 * i)) & 0x7F
        octet = seven << 1
        # Odd parity: DES engines ignore this bit, but RFC 2759 §9.3 shows keys with it set.
        if bin(octet).count("1") % 2 == 0:
            octet |= 1
        out.append(octet)
    return bytes(out)


def des_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt one 8-octet block with single DES; ``key`` is 7 raw octets or 8 with parity."""
    if len(key) == 7:
        key = expand_des_key(key)
    if len(key) != 8 or len(block) != BLOCK_SIZE:
        raise ValueError("DES needs an 8-octet key (or 7 raw octets) and an 8-octet block")
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - one block, by design
    return encryptor.update(block) + encryptor.finalize()
