"""IKEv2 key derivation checked against the NIST CAVS IKEv2 KDF sample (see test_prf.py for its source)."""

from labctl.gateway.ike.prf import prf
from labctl.gateway.ike.v2.ciphers import encr_alg, integ_alg
from labctl.gateway.ike.v2.constants import Encr, Integ
from labctl.gateway.ike.v2.engine import Ikev2Engine
from labctl.gateway.ike.v2.keymat import child_keys, ike_keys, rekey_skeyseed, skeyseed

from .test_prf import (
    CAVS_DKM,
    CAVS_DKM_CHILD_DH,
    CAVS_GIR,
    CAVS_GIR_NEW,
    CAVS_NI,
    CAVS_NR,
    CAVS_SKEYSEED_REKEY,
    CAVS_SPII,
    CAVS_SPIR,
)
from .v2_pair import make_pair


def test_ike_keys_split_the_cavs_dkm_in_rfc_order() -> None:
    p = prf(2)
    seed = skeyseed(p, CAVS_NI, CAVS_NR, CAVS_GIR)
    # AES-CBC-128 + HMAC-SHA1-96: 20 (SK_d) + 20 + 20 (SK_a) + 16 + 16 (SK_e) + 20 + 20 (SK_p) = 132 bytes.
    k = ike_keys(p, seed, CAVS_NI, CAVS_NR, CAVS_SPII, CAVS_SPIR, encr_alg(Encr.AES_CBC, 128),
                 integ_alg(Integ.HMAC_SHA1_96))
    dkm = bytes.fromhex(CAVS_DKM)
    assert k.sk_d + k.sk_ai + k.sk_ar + k.sk_ei + k.sk_er + k.sk_pi + k.sk_pr == dkm
    assert (len(k.sk_d), len(k.sk_ai), len(k.sk_ei), len(k.sk_pi)) == (20, 20, 16, 20)
    assert rekey_skeyseed(p, k.sk_d, CAVS_GIR_NEW, CAVS_NI, CAVS_NR).hex() == CAVS_SKEYSEED_REKEY


def test_child_keys_with_pfs_follow_cavs_order() -> None:
    p = prf(2)
    sk_d = bytes.fromhex(CAVS_DKM)[:20]
    ck = child_keys(p, sk_d, CAVS_NI, CAVS_NR, 36, 30, gir_new=CAVS_GIR_NEW)  # 2 * (36 + 30) = 132
    assert ck.encr_i + ck.integ_i + ck.encr_r + ck.integ_r == bytes.fromhex(CAVS_DKM_CHILD_DH)


def test_engine_drops_garbage_without_raising() -> None:
    import random

    pair = make_pair()
    pair.a.initiate("s2s", pair.now)
    pair.transfer()
    eng: Ikev2Engine = pair.b
    r = random.Random(5)
    sent = [d for _who, d in pair.sent]
    for _ in range(300):
        base = bytearray(r.choice(sent))
        for _j in range(r.randint(1, 4)):
            base[r.randrange(len(base))] = r.randrange(256)
        eng.receive_datagram(bytes(base[: r.randint(0, len(base))]), ("192.0.2.1", 500), ("192.0.2.2", 500),
                             pair.now)
    assert len(eng.status()["ike_sas"]) >= 1
