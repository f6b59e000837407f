"""Encryption of ISAKMP messages under an ISAKMP SA, with the IV chaining of RFC 2409 Appendix B.

One `MessageProtector` belongs to one ISAKMP SA. Phase 1 chains one IV through its encrypted
messages (the first is hash(g^xi | g^xr)); once phase 1 is done, its last CBC block seeds an
independent chain for every later exchange, keyed by message id.
"""

from __future__ import annotations

from labctl.gateway.ike.v1.codec import (
    DecodeError,
    Header,
    Message,
    Payload,
    decode_payloads,
    encode_payloads,
    first_payload_type,
)
from labctl.gateway.ike.v1.constants import HEADER_LENGTH, ExchangeType, Flags
from labctl.gateway.ike.v1.crypto import CipherSpec, CryptoError, phase1_iv, phase2_iv


class MessageProtector:
    def __init__(self, spec: CipherSpec, key: bytes, hash_alg: int, gxi: bytes, gxr: bytes) -> None:
        self.spec = spec
        self._key = key
        self.hash_alg = hash_alg
        self._phase1_iv = phase1_iv(hash_alg, gxi, gxr, spec.block_size)
        self._phase1_last_block: bytes | None = None
        self._ivs: dict[int, bytes] = {}

    def finish_phase1(self) -> None:
        """Appendix B: later exchanges derive their IV from the last CBC block of phase 1."""
        if self._phase1_last_block is None:
            self._phase1_last_block = self._phase1_iv

    @property
    def phase1_done(self) -> bool:
        return self._phase1_last_block is not None

    def iv_for(self, message_id: int) -> bytes:
        if message_id == 0 or self._phase1_last_block is None:
            return self._phase1_iv
        iv = self._ivs.get(message_id)
        if iv is None:
            iv = phase2_iv(self.hash_alg, self._phase1_last_block, message_id, self.spec.block_size)
        return iv

    def _commit(self, message_id: int, last_block: bytes) -> None:
        if message_id == 0 or self._phase1_last_block is None:
            self._phase1_iv = last_block
        else:
            self._ivs[message_id] = last_block

    def forget(self, message_id: int) -> None:
        self._ivs.pop(message_id, None)

    def encrypt(
        self, icookie: bytes, rcookie: bytes, exchange: ExchangeType, message_id: int, payloads: list[Payload],
        extra_flags: int = 0,
    ) -> bytes:
        plaintext = encode_payloads(payloads)
        ciphertext = self.spec.encrypt(self._key, self.iv_for(message_id), plaintext)
        self._commit(message_id, ciphertext[-self.spec.block_size :])
        header = Header(icookie, rcookie, first_payload_type(payloads), exchange,
                        Flags.ENCRYPTION | extra_flags, message_id)
        return header.encode(HEADER_LENGTH + len(ciphertext)) + ciphertext

    def decrypt(self, data: bytes) -> Message:
        """Decrypt and parse; the IV chain only advances when the plaintext parses."""
        header = Header.decode(data)
        if not header.encrypted:
            raise DecodeError("message is not encrypted")
        ciphertext = data[HEADER_LENGTH : header.length]
        try:
            plaintext = self.spec.decrypt(self._key, self.iv_for(header.message_id), ciphertext)
        except CryptoError as exc:
            raise DecodeError(str(exc)) from exc
        payloads = decode_payloads(header.next_payload, plaintext)
        self._commit(header.message_id, ciphertext[-self.spec.block_size :])
        return Message(header, payloads)

    def wireshark_key(self) -> bytes:
        """The encryption key, for a Wireshark `ikev1_decryption_table` line only."""
        return self._key
