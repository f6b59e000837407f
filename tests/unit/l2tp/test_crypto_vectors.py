"""Known-answer tests for MD4, DES, CHAP-MD5 and MS-CHAPv2."""

from __future__ import annotations

import pytest

from labctl.gateway.l2tp.chap import chap_md5_response
from labctl.gateway.l2tp.des import des_encrypt_block, expand_des_key
from labctl.gateway.l2tp.md4 import md4
from labctl.gateway.l2tp.mschapv2 import (
    challenge_hash,
    challenge_response,
    check_authenticator_response,
    generate_authenticator_response,
    generate_nt_response,
    hash_nt_password_hash,
    nt_password_hash,
)

# RFC 1320, Appendix A.5 "Test suite".
MD4_SUITE = [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "043f8582f241db351ce627e153e7f0e4"),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
]


@pytest.mark.parametrize(("message", "digest"), MD4_SUITE)
def test_md4_rfc1320_suite(message: bytes, digest: str) -> None:
    assert md4(message).hex() == digest


def test_md4_block_boundaries_differ() -> None:
    # 55/56/64 octets straddle the padding boundary; each must give a distinct 16-octet digest.
    digests = {md4(b"x" * n) for n in (55, 56, 63, 64, 65, 119, 120)}
    assert len(digests) == 7 and all(len(d) == 16 for d in digests)


# FIPS PUB 81 (DES modes of operation), Appendix B, ECB example: key 0123456789ABCDEF, "Now is t".
# Second vector: the NBS/Schneier DES validation set (key 7CA110454A1A6E57).
DES_VECTORS = [
    ("0123456789abcdef", b"Now is t".hex(), "3fa40e8a984d4815"),
    ("7ca110454a1a6e57", "01a1d6d039776742", "690f5b0d9a26939b"),
    ("0131d9619dc1376e", "5cd54ca83def57da", "7a389d10354bd271"),
]


@pytest.mark.parametrize(("key", "plain", "cipher"), DES_VECTORS)
def test_des_known_answers(key: str, plain: str, cipher: str) -> None:
    assert des_encrypt_block(bytes.fromhex(key), bytes.fromhex(plain)).hex() == cipher


def test_des_key_expansion_rfc2759_9_3() -> None:
    # RFC 2759 §9.3: password "MyPw", its hash split into two raw 7-octet keys and parity-corrected.
    password_hash = nt_password_hash("MyPw")
    assert password_hash.hex().upper() == "FC156AF7EDCD6C0EDDE3337D427F4EAC"
    assert expand_des_key(password_hash[:7]).hex().upper() == "FD0B5B5E7F6E34D9"
    assert expand_des_key(password_hash[7:14]).hex().upper() == "0E6E796737EA08FE"


def test_des_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        des_encrypt_block(bytes(6), bytes(8))
    with pytest.raises(ValueError):
        des_encrypt_block(bytes(8), bytes(7))


# RFC 2759 §9.2 "Hash Example": user "User", password "clientPass", every intermediate value.
USER = "User"
PASSWORD = "clientPass"
AUTHENTICATOR_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
CHALLENGE = bytes.fromhex("D02E4386BCE91226")
PASSWORD_HASH = bytes.fromhex("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
PASSWORD_HASH_HASH = bytes.fromhex("41C00C584BD2D91C4017A2A12FA59F3F")
AUTHENTICATOR_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"


def test_mschapv2_rfc2759_intermediate_values() -> None:
    assert PASSWORD.encode("utf-16-le").hex().upper() == "63006C00690065006E0074005000610073007300"
    assert challenge_hash(PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER) == CHALLENGE
    assert nt_password_hash(PASSWORD) == PASSWORD_HASH
    assert challenge_response(CHALLENGE, PASSWORD_HASH) == NT_RESPONSE
    assert hash_nt_password_hash(PASSWORD_HASH) == PASSWORD_HASH_HASH


def test_mschapv2_rfc2759_nt_response_and_authenticator_response() -> None:
    assert generate_nt_response(AUTHENTICATOR_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD) == NT_RESPONSE
    response = generate_authenticator_response(PASSWORD, NT_RESPONSE, PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER)
    assert response == AUTHENTICATOR_RESPONSE
    args = (NT_RESPONSE, PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER)
    assert check_authenticator_response(PASSWORD, *args, AUTHENTICATOR_RESPONSE + " M=Welcome")
    assert not check_authenticator_response("wrongPass", *args, AUTHENTICATOR_RESPONSE)
    assert not check_authenticator_response(PASSWORD, *args, "S=" + "0" * 40)


# CHAP-MD5 (RFC 1994 §4.1): Identifier 1, secret "MyPw", challenge 102DB5DF085D3041; the expected value is
# the one in PEAR Crypt_CHAP's tests/chaptest.php ("CHAP-MD5 TEST"), computed by an independent implementation.
def test_chap_md5_known_answer() -> None:
    response = chap_md5_response(1, b"MyPw", bytes.fromhex("102DB5DF085D3041"))
    assert response.hex() == "8f028814450d66d94c72331ef455a172"
    # A different identifier must change the response (it is hashed in first).
    assert chap_md5_response(2, b"MyPw", bytes.fromhex("102DB5DF085D3041")) != response
