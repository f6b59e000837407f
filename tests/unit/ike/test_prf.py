"""Known-answer tests for the IKE PRFs and prf+ (labctl.gateway.ike.prf)."""

import pytest

from labctl.gateway.ike import prf as prfmod
from labctl.gateway.ike.prf import prf, prf_by_name, prf_plus

h = bytes.fromhex

# RFC 2202 §3 test case 2 (HMAC-SHA-1) and RFC 4231 §4.3 test case 2 (HMAC-SHA-2): key "Jefe".
JEFE_KEY = b"Jefe"
JEFE_DATA = b"what do ya want for nothing?"
JEFE_EXPECTED = {
    2: "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
    5: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    6: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
    "8e2240ca5e69e2c78b3239ecfab21649",
    7: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
    "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
}


@pytest.mark.parametrize("prf_id", sorted(JEFE_EXPECTED))
def test_hmac_prfs_rfc2202_rfc4231(prf_id: int) -> None:
    p = prf(prf_id)
    out = p(JEFE_KEY, JEFE_DATA)
    assert out.hex() == JEFE_EXPECTED[prf_id]
    assert len(out) == p.output_len


# RFC 3566 §4: AES-XCBC-MAC-96 test cases 1-3 (full 128-bit MAC shown there before truncation).
XCBC_KEY = h("000102030405060708090a0b0c0d0e0f")


@pytest.mark.parametrize(
    ("msg", "mac"),
    [
        ("", "75f0251d528ac01c4573dfd584d79f29"),
        ("000102", "5b376580ae2f19afe7219ceef172756f"),
        ("000102030405060708090a0b0c0d0e0f", "d2a246fa349b68a79998a4394ff7a263"),
    ],
)
def test_aes_xcbc_mac_rfc3566(msg: str, mac: str) -> None:
    assert prfmod.aes_xcbc_mac(XCBC_KEY, h(msg)).hex() == mac


# RFC 4434 §4: AES-XCBC-PRF-128 with 16-, 10- and 18-byte keys over a 20-byte message.
@pytest.mark.parametrize(
    ("key", "out"),
    [
        ("000102030405060708090a0b0c0d0e0f", "47f51b4564966215b8985c63055ed308"),
        ("00010203040506070809", "0fa087af7d866e7653434e602fdde835"),
        ("000102030405060708090a0b0c0d0e0fedcb", "8cd3c93ae598a9803006ffb67c40e9e4"),
    ],
)
def test_aes_xcbc_prf_rfc4434(key: str, out: str) -> None:
    assert prf(4)(h(key), h("000102030405060708090a0b0c0d0e0f10111213")).hex() == out


# NIST CAVS IKEv2 KDF (SP 800-135) sample, SHA-1, as quoted in libreswan's
# programs/cavp test driver comment (-l 132 bytes of DKM). Inputs:
CAVS_GIR = h("4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52")
CAVS_GIR_NEW = h("863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330")
CAVS_NI = h("32b50d5f4a3763f3")
CAVS_NR = h("9206a04b26564cb1")
CAVS_SPII = h("34c9e7c188868785")
CAVS_SPIR = h("3ff77d760d2b2199")
CAVS_SKEYSEED = "a9a7b222b59f8f48645f28a1db5b5f5d7479cba7"
CAVS_DKM = (
    "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002a2a63080e514a062768b76606f9fa5e9"
    "92204fc5a670bde3f10d6b027113936a5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd1119"
    "8af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a81157435a7a56cc4"
)
CAVS_DKM_CHILD = (
    "8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c5811a8e7b5d1cdabd9560b2d5e092d1f24e"
    "2d4b85eccdf0ad0dc9abd94b51ee71814ca6dbc8bb51b6309f5b9545c7eb35cf5580b1e521a8fe20754a2d883ba0c2cf"
    "285f524aea6545b33106bc03e614296d319d41d4b50b3f510b1c0a22f3e664994d234cb4"
)
CAVS_DKM_CHILD_DH = (
    "bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d37301628190e38c66232eab4b3ab14c400a519"
    "7dd3730ed4820a8a10394d51e1c0400052f63ebd36b0e7ef53aaed31eba4a5080d7d4b5666023a8bbb5ffb7857240f9a"
    "05884d1b7d2f933708450b7b3288f1fc863ab49fa901227cffc06e27899c7054d56fd74c"
)
CAVS_SKEYSEED_REKEY = "63e81194946ebd05df7df5ebf5d8750056bf1f1d"


def test_prf_plus_cavs_ikev2_kdf() -> None:
    p = prf(2)
    skeyseed = p(CAVS_NI + CAVS_NR, CAVS_GIR)  # RFC 7296 §2.14
    assert skeyseed.hex() == CAVS_SKEYSEED
    dkm = prf_plus(p, skeyseed, CAVS_NI + CAVS_NR + CAVS_SPII + CAVS_SPIR, 132)
    assert dkm.hex() == CAVS_DKM
    sk_d = dkm[: p.output_len]
    assert prf_plus(p, sk_d, CAVS_NI + CAVS_NR, 132).hex() == CAVS_DKM_CHILD  # §2.17
    assert prf_plus(p, sk_d, CAVS_GIR_NEW + CAVS_NI + CAVS_NR, 132).hex() == CAVS_DKM_CHILD_DH
    assert p(sk_d, CAVS_GIR_NEW + CAVS_NI + CAVS_NR).hex() == CAVS_SKEYSEED_REKEY  # §2.18


def test_prf_plus_prefix_property_and_limit() -> None:
    p = prf(5)
    long = prf_plus(p, b"k", b"seed", 100)
    assert prf_plus(p, b"k", b"seed", 33) == long[:33]
    assert len(prf_plus(p, b"k", b"s", 255 * 32)) == 255 * 32
    with pytest.raises(ValueError):
        prf_plus(p, b"k", b"s", 255 * 32 + 1)


def test_lookup_by_name_and_unknown() -> None:
    assert prf_by_name("prfsha384").id == 6
    with pytest.raises(prfmod.UnknownPrf):
        prf(1)
    with pytest.raises(prfmod.UnknownPrf):
        prf_by_name("prfmd5")
