"""Decrypt the SK payloads of the 8 IKEv2 captures from the Wireshark test suite with our own code.

Data and expected values: ../shared/vectors/wireshark/README.md (captures and key table from the
Wireshark source tree, test/captures and test/config/ikev2_decryption_table; expected AUTH values
from its test/suite_decryption.py).  Every encrypted message must verify (ICV or AEAD tag) and decrypt;
the AUTH payload data of the named frames must equal the published values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from labctl.gateway.ike.v2.ciphers import IntegrityError, SkCipher, encr_alg, integ_alg
from labctl.gateway.ike.v2.codec import AuthPayload, SkPayload, parse_message, parse_payloads
from labctl.gateway.ike.v2.constants import HEADER_LENGTH, Encr, Integ, PayloadType

from .pcap_reader import udp_payloads

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO.parent / "shared" / "vectors" / "wireshark"


@dataclass(frozen=True)
class Vector:
    capture: str
    encr: int
    key_bits: int
    integ: int | None
    sk_ei: str
    sk_er: str
    sk_ai: str
    sk_ar: str
    auth: dict[int, str]  # frame number (1-based) -> AUTH data


VECTORS_TABLE = [
    Vector("ikev2-decrypt-3des-sha1_160.pcap", Encr.TRIPLE_DES, 192, Integ.HMAC_SHA1_160,
           "2e0e194070fc658c2bfbfdbf8b956be4b2eaa33d02a43cca", "219f3080e631774b8d5836d3a675b099b1e271c9bdcf6e15",
           "c96f5bad08aebbff60509c7495f11c183818b916", "e742ac415cdfdd709c9de92769a169e0a5224f79",
           {3: "02f7a0d5f1fdc8ea81039818c65bb9bd09af9b8917319b887ff9ba3046c344c7",
            4: "f6bbc7b60d1502191f1c6bed6fd8dcda8c4c0f879ff5ae544b66086392959641"}),
    Vector("ikev2-decrypt-aes128ccm12.pcap", Encr.AES_CCM_12, 128, None,
           "be83fe15f6a9976941870830fe26c014" "b863b3", "79e0f4476861a76e64329e787b1c4ff3" "8d732f", "", "",
           {4: "c2104394299e1ffe7908ea720ad5d13717a0d454e4fa0a2128ea689411f479c4",
            3: "c335abf2598a6730a4c3ff3a9e3281c24f3899e1d02027f47dc065bc2c1eedca"}),
    # The table row for this capture is written as AES-CTR; the real CCM salts are 5db0bc / 2ac38a.
    Vector("ikev2-decrypt-aes128ccm12-2.pcap", Encr.AES_CCM_12, 128, None,
           "5daf82e6fd7e57d5fbf76cd5af73fd46" "5db0bc", "68848f4a7602b20c7d033cc998b0c097" "2ac38a", "", "",
           {3: "aaa281c87b4a19046c57271d557488ca413b57228cb951f5fa9640992a0285b9",
            4: "ca9504df5c91a0ee5216148cf70759f4621edaa32ce1a2498ae56d8dba9be460"}),
    Vector("ikev2-decrypt-aes192ctr.pcap", Encr.AES_CTR, 192, Integ.HMAC_SHA2_512_256,
           "aaa06839eaf0959d486eeecda7a48b23080963b5fd721792" "8e8fbf58",
           "92dc96ec87076caa84e26b3621c7c469427e2e4bcc1b9623" "62a3dde3",
           "65777be31ee2137f31cf23fa0ee834dfede11cc0adc9a84541026642c09df2bf"
           "96056a2036e97a67ce7d3c5b6f37e17e8fe64f4ef23e14f5997fb7671df3adaf",
           "42abd4709f1b94fd8c2270c74aae3fbe61c0b9c109c55f3e3b9ed7e480bc75c3"
           "985c15234caa623c8ca0606c303921d7cfd44861df1e798370b2ee95fe712e52",
           {3: "3ec23dcf9348485638407c754547aeb3085290082c49f583fdbae59263a20b4a",
            4: "37cc3de8ba560cec4ed39aae24f19e5c94cc55654c060a322ecd1e72f7f791a2"}),
    Vector("ikev2-decrypt-aes256cbc.pcapng", Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128,
           "9096ddd2933620e8f48122c53a3f562cb0222c1cf97ce41fcc874ea2582a89ac",
           "6718c6b2bbef2f234eac4c13832f885d87b574afd2af0111161e99b5dc61b4d4",
           "12d532c3e83c757906af548dfe1ccf223ca5507af77898454e2d55c8ace57a17",
           "30c4ead18c93024b58a86c1e3db60f550221801026853170b4cb0248d3a95329",
           {3: "e1a8d550064201a7ec024a85758d0673c61c5c510ac13bcd225d6327f50da3d3",
            4: "ebbc48efe986d5058f0d52a71f34986d1ab78f63c0fdde69164cd57638b1b048"}),
    Vector("ikev2-decrypt-aes256ccm16.pcapng", Encr.AES_CCM_16, 256, None,
           "daa0a85a81e6adda7b8c568f1c4cfaa6e9f9edb242e9895f012caaa642eacf4d" "004903",
           "e02281ba4bb8ed20321faff956b95ce7f841b3039984dad4ed4625e77743fce4" "a04f32", "", "",
           {3: "fa2e74bdc01e30fb0b3ddc9723c9449095969da51f69e560209d2c2b7940210a",
            4: "bf368b0105a598390eeb6b230ff279cd21ba70481370b19f0d7c739c69b97999"}),
    Vector("ikev2-decrypt-aes256gcm16.pcap", Encr.AES_GCM_16, 256, None,
           "647075bf167447a1c8683e8dbe4794b4cfe73799cc6bec34905441159ce13705" "c8dfb3a9",
           "15c9eae6f94631d63068bf44bb69999abc07b3d15e915fd8f0ed99ad481efd75" "deb02a5e", "", "",
           {4: "9ab71f14ab553cad873a1aa70b99df155dee77cdcf3694b3b7527acbb9712ded",
            3: "bc404a4c66a36c59a0b3fd700bbc5597176ad2c5e5df5bba82c4a6b6b4ef8b31"}),
    Vector("ikev2-decrypt-aes256gcm8.pcap", Encr.AES_GCM_8, 256, None,
           "91b817d036d97db3ace64475cd8d1cbeab186295020211a9cf0c16cec10b92b4" "53ecd24e",
           "d04516586721974d970627d85f7d031433b6558c0ec6faecf9217e5445e17e7e" "eee6bc68", "", "",
           {3: "4a66d822d0afbc22ad9a92a2cf4287c920ad8ac3b069a4a7e75fe0a5d499f914",
            4: "fba50353f2535dab9804ca772fc7b2d19e85ffb48da87918a9a54bbd9975a078"}),
]


def _vectors_dir() -> Path:
    if not VECTORS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"test vectors missing at {VECTORS} (required in CI)")
        pytest.skip(f"../shared/vectors/wireshark not present at {VECTORS}; these vectors are not shipped in the repo")
    return VECTORS


def _ciphers(v: Vector) -> tuple[SkCipher, SkCipher]:
    encr = encr_alg(v.encr, v.key_bits)
    integ = integ_alg(v.integ) if v.integ is not None else None
    i = SkCipher(encr, bytes.fromhex(v.sk_ei), integ, bytes.fromhex(v.sk_ai))
    r = SkCipher(encr, bytes.fromhex(v.sk_er), integ, bytes.fromhex(v.sk_ar))
    return i, r


@pytest.mark.parametrize("v", VECTORS_TABLE, ids=[v.capture for v in VECTORS_TABLE])
def test_decrypt_capture(v: Vector) -> None:
    datagrams = udp_payloads(_vectors_dir() / "captures" / v.capture)
    assert len(datagrams) in (4, 6)
    from_i, from_r = _ciphers(v)
    found: dict[int, str] = {}
    for frame, data in enumerate(datagrams, start=1):
        msg = parse_message(data)
        sk = msg.payloads[-1]
        if frame <= 2:
            assert not isinstance(sk.body, SkPayload)
            continue
        assert isinstance(sk.body, SkPayload) and sk.type == PayloadType.SK
        cipher = from_i if msg.header.from_initiator else from_r
        inner = cipher.open(data, HEADER_LENGTH)  # SK is the first payload in all these captures
        payloads = parse_payloads(sk.body.inner_first, inner)
        for p in payloads:
            if isinstance(p.body, AuthPayload):
                found[frame] = p.body.data.hex()
        # The same bytes with one flipped ciphertext bit must be refused by the ICV/tag check.
        bad = bytearray(data)
        bad[-cipher.icv_len - 1] ^= 0x01
        with pytest.raises(IntegrityError):
            cipher.open(bytes(bad), HEADER_LENGTH)
    assert found == v.auth
