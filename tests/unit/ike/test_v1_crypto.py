"""Known answers for IKEv1 key derivation (RFC 2409 §5, Appendix B) and message protection."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from labctl.gateway.ike.v1.codec import (
    CertPayload,
    HashPayload,
    KePayload,
    decode_message,
)
from labctl.gateway.ike.v1.constants import EncryptionAlgorithm, ExchangeType, HashAlgorithm
from labctl.gateway.ike.v1.crypto import (
    cipher_spec,
    derive_skeyids,
    encryption_key,
    keymat,
    nat_d_hash,
    phase1_iv,
    phase2_iv,
    prf_for_hash,
    skeyid_psk,
    skeyid_sig,
)
from labctl.gateway.ike.v1.protect import MessageProtector

# NIST CAVS SP 800-135 IKEv1 KDF vectors (ikev1.zip, signature authentication, [SHA-1] COUNT = 0),
# https://csrc.nist.gov/CSRC/media/Projects/Cryptographic-Algorithm-Validation-Program/documents/components/800-135testvectors/ikev1.zip
# (as reproduced with its intermediate strings in a public test suite of a Rust "kdfs" crate).
NIST_CKY_I = bytes.fromhex("382e5c8b0a3fa307")
NIST_CKY_R = bytes.fromhex("ba4b7616700a2413")
NIST_NI = bytes.fromhex("ced5635da6796075")
NIST_NR = bytes.fromhex("6244b427712fb776")
NIST_GXY = bytes.fromhex(
    "2a2e0bbe8da3657a83f3d35826e49e2d38e557e912a1b9e6c30c63577b3eab715466202862027f2c26f3090743555579"
    "611771db0b92bef93834432a3a7762fc8a0f4889fd281d6082770d10a40d7bad61e832f041e620d6787e7f62ab2861dd"
    "fbe272e0d9d3cdec5f1bbf750e24b8b32d6d714968ad69ce5086c32ad2742ebc"
)
NIST_SKEYID = bytes.fromhex("dc37ac99de6dcfbd1ee74af7fb36f9b4b0a7829d")
NIST_SKEYID_D = bytes.fromhex("486293ed547adb562cefdaf43d3d8457b196f2b6")
NIST_SKEYID_A = bytes.fromhex("f4053b5ca07e59bb41b8f401037ca90b72b3917e")
NIST_SKEYID_E = bytes.fromhex("49a1d53a80fb77e663552964fbbcb45092021473")


def test_nist_cavs_signature_skeyid_family() -> None:
    prf = prf_for_hash(HashAlgorithm.SHA1)
    skeyid = skeyid_sig(prf, NIST_NI, NIST_NR, NIST_GXY)
    assert skeyid == NIST_SKEYID
    keys = derive_skeyids(prf, skeyid, NIST_GXY, NIST_CKY_I, NIST_CKY_R)
    assert (keys.d, keys.a, keys.e) == (NIST_SKEYID_D, NIST_SKEYID_A, NIST_SKEYID_E)
    # A swapped cookie order must give different keys (the derivation is order sensitive).
    assert derive_skeyids(prf, skeyid, NIST_GXY, NIST_CKY_R, NIST_CKY_I).d != NIST_SKEYID_D


def test_psk_skeyid_uses_the_key_as_prf_key() -> None:
    # RFC 2409 §5: SKEYID = prf(pre-shared-key, Ni_b | Nr_b); checked against the standard library HMAC.
    prf = prf_for_hash(HashAlgorithm.SHA2_256)
    expected = hmac.new(b"secret", NIST_NI + NIST_NR, hashlib.sha256).digest()
    assert skeyid_psk(prf, b"secret", NIST_NI, NIST_NR) == expected


def test_appendix_b_expansion_for_aes256_with_sha1() -> None:
    prf = prf_for_hash(HashAlgorithm.SHA1)
    key = encryption_key(prf, NIST_SKEYID_E, 32)
    k1 = hmac.new(NIST_SKEYID_E, b"\x00", hashlib.sha1).digest()
    k2 = hmac.new(NIST_SKEYID_E, k1, hashlib.sha1).digest()
    assert key == (k1 + k2)[:32]
    assert key[:20] != NIST_SKEYID_E  # expansion replaces SKEYID_e, it does not prefix it
    # Enough material: the leading bytes of SKEYID_e are the key (AES-128 with SHA-1).
    assert encryption_key(prf, NIST_SKEYID_E, 16) == NIST_SKEYID_E[:16]


def test_keymat_expansion_and_pfs_input() -> None:
    prf = prf_for_hash(HashAlgorithm.SHA1)
    spi = bytes.fromhex("c0ffee01")
    km = keymat(prf, NIST_SKEYID_D, 3, spi, NIST_NI, NIST_NR, 52)
    seed = bytes([3]) + spi + NIST_NI + NIST_NR
    k1 = hmac.new(NIST_SKEYID_D, seed, hashlib.sha1).digest()
    k2 = hmac.new(NIST_SKEYID_D, k1 + seed, hashlib.sha1).digest()
    k3 = hmac.new(NIST_SKEYID_D, k2 + seed, hashlib.sha1).digest()
    assert km == (k1 + k2 + k3)[:52]
    with_pfs = keymat(prf, NIST_SKEYID_D, 3, spi, NIST_NI, NIST_NR, 52, gxy_qm=b"\x01" * 128)
    assert with_pfs != km
    assert with_pfs[:20] == hmac.new(NIST_SKEYID_D, b"\x01" * 128 + seed, hashlib.sha1).digest()


def test_nat_d_hash_covers_cookies_address_and_port() -> None:
    h = nat_d_hash(HashAlgorithm.SHA1, b"I" * 8, b"R" * 8, bytes([192, 0, 2, 1]), 500)
    assert h == hashlib.sha1(b"I" * 8 + b"R" * 8 + bytes([192, 0, 2, 1, 0x01, 0xF4])).digest()


def test_cbc_round_trip_pads_to_block() -> None:
    for alg, bits in ((EncryptionAlgorithm.AES_CBC, 128), (EncryptionAlgorithm.AES_CBC, 256),
                      (EncryptionAlgorithm.TRIPLE_DES_CBC, None)):
        spec = cipher_spec(alg, bits)
        key, iv = os.urandom(spec.key_len), os.urandom(spec.block_size)
        ct = spec.encrypt(key, iv, b"hello")
        assert len(ct) == spec.block_size
        assert spec.decrypt(key, iv, ct)[:5] == b"hello"


def test_protector_round_trip_with_independent_exchange_chains() -> None:
    spec = cipher_spec(EncryptionAlgorithm.AES_CBC, 128)
    key = os.urandom(16)
    a = MessageProtector(spec, key, HashAlgorithm.SHA1, b"x" * 64, b"y" * 64)
    b = MessageProtector(spec, key, HashAlgorithm.SHA1, b"x" * 64, b"y" * 64)
    m5 = a.encrypt(b"I" * 8, b"R" * 8, ExchangeType.MAIN, 0, [HashPayload(data=b"5" * 20)])
    assert b.decrypt(m5).payloads == [HashPayload(data=b"5" * 20)]
    m6 = b.encrypt(b"I" * 8, b"R" * 8, ExchangeType.MAIN, 0, [HashPayload(data=b"6" * 20)])
    assert a.decrypt(m6).payloads == [HashPayload(data=b"6" * 20)]
    a.finish_phase1()
    b.finish_phase1()
    q1 = a.encrypt(b"I" * 8, b"R" * 8, ExchangeType.QUICK, 7, [HashPayload(data=b"q" * 20)])
    i1 = a.encrypt(b"I" * 8, b"R" * 8, ExchangeType.INFORMATIONAL, 9, [HashPayload(data=b"i" * 20)])
    # Received out of order: each message id has its own chain.
    assert b.decrypt(i1).payloads == [HashPayload(data=b"i" * 20)]
    assert b.decrypt(q1).payloads == [HashPayload(data=b"q" * 20)]
    assert a.iv_for(7) == q1[-16:]
    assert b.iv_for(11) == phase2_iv(HashAlgorithm.SHA1, m6[-16:], 11, 16)


# --- Wireshark test-suite captures with known phase-1 keys (see ../shared/vectors/wireshark/README.md)

VECTORS = Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors" / "wireshark"


def _udp_payloads(name: str) -> list[bytes]:
    path = VECTORS / "captures" / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing in CI")
        pytest.skip(f"{path} not present (../shared is absent)")
    from scapy.all import UDP, rdpcap

    return [bytes(p[UDP].payload) for p in rdpcap(str(path))]


def test_wireshark_aggressive_mode_informational_hash() -> None:
    # ikev1-bug-12620: Aggressive Mode, AES-256/SHA2-256; phase 1 is never encrypted, so the
    # "last phase-1 block" is the phase-1 IV itself (RFC 2409 Appendix B).
    msgs = _udp_payloads("ikev1-bug-12620.pcapng.gz")
    gxi = decode_message(msgs[0]).get(KePayload)
    gxr = decode_message(msgs[1]).get(KePayload)
    assert gxi is not None and gxr is not None
    key = bytes.fromhex("c26a81baec6070d289f0b4f13c2fb182e3d5406d11c29ebc2fc179502541325b")
    prot = MessageProtector(cipher_spec(7, 256), key, HashAlgorithm.SHA2_256, gxi.data, gxr.data)
    prot.finish_phase1()
    info = prot.decrypt(msgs[3])
    assert info.header.message_id == 0xAE247590
    h = info.get(HashPayload)
    assert h is not None
    assert h.data.hex() == "40043b640f4373250d5ac3a1fb63153cacab954cca6366021f4ab9d436265052"


def test_wireshark_main_mode_interleaved_exchanges() -> None:
    # ikev1-bug-12610: Main Mode, then an Informational (M-ID 83e1ee0b) interleaved with a
    # Transaction exchange (M-ID 248fb011): each message id must keep its own CBC chain.
    msgs = _udp_payloads("ikev1-bug-12610.pcapng.gz")
    gxi = decode_message(msgs[2]).get(KePayload)
    gxr = decode_message(msgs[3]).get(KePayload)
    assert gxi is not None and gxr is not None
    key = bytes.fromhex("928392441e00ece5e8af3bc545416e86afa1291e7c013271514738b70ef25d22")
    prot = MessageProtector(cipher_spec(7, 256), key, HashAlgorithm.SHA2_256, gxi.data, gxr.data)
    prot.decrypt(msgs[4])
    prot.decrypt(msgs[5])
    prot.finish_phase1()
    hashes = [prot.decrypt(m).get(HashPayload) for m in msgs[6:9]]
    assert hashes[2] is not None
    assert hashes[2].data.hex() == "b52521f774967402c9f6cee95fd17e5bccec230b5731fc530e1a8ab33a69f440"
    # The Quick Mode at the end (frames 14-16) decrypts too and carries Ni / IDci / IDcr.
    qm1 = prot.decrypt(msgs[13])
    assert qm1.header.exchange == ExchangeType.QUICK
    assert [type(p).__name__ for p in qm1.payloads] == [
        "HashPayload", "SaPayload", "NoncePayload", "IdPayload", "IdPayload"]


def test_wireshark_main_mode_3des_md5_certificate() -> None:
    # ikev1-certs: Main Mode, 3DES (Appendix B key from an MD5 PRF), RSA signatures; MM5 carries the cert.
    msgs = _udp_payloads("ikev1-certs.pcap")
    gxi = decode_message(msgs[2]).get(KePayload)
    gxr = decode_message(msgs[3]).get(KePayload)
    assert gxi is not None and gxr is not None
    key = bytes.fromhex("735be0cb62f82675c4f7bf8fbab9b56834ba76d6ab4fa240")
    assert phase1_iv(HashAlgorithm.MD5, gxi.data, gxr.data, 8) == hashlib.md5(gxi.data + gxr.data).digest()[:8]
    prot = MessageProtector(cipher_spec(5, None), key, HashAlgorithm.MD5, gxi.data, gxr.data)
    mm5 = prot.decrypt(msgs[4])
    cert = mm5.get(CertPayload)
    assert cert is not None and cert.encoding == 4 and b"OpenSwan" in cert.data
    mm6 = prot.decrypt(msgs[5])
    assert mm6.get(CertPayload) is not None
