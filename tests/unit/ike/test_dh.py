"""Known-answer and validation tests for labctl.gateway.ike.dh."""

import random

import pytest

from labctl.gateway.ike import dh

h = bytes.fromhex


def _unhex(text: str) -> bytes:
    return h("".join(text.split()))


def _pi_scaled(bits: int) -> int:
    """floor(pi * 2^bits), by Machin's formula in integers: independent of any table."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            total += sign * (term // (2 * n + 1))
            sign, n = -sign, n + 1
        return total

    return (4 * (4 * arctan_inv(5) - arctan_inv(239))) >> guard


def _probably_prime(n: int, rounds: int = 4) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rnd = random.Random(7)
    for _ in range(rounds):
        x = pow(rnd.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


# RFC 2409 §6.2 (group 2) and RFC 3526 §2-§5: p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) pi) + k)
MODP_FORMULA = [(2, 1024, 129093), (5, 1536, 741804), (14, 2048, 124476), (15, 3072, 1690314),
                (16, 4096, 240904)]


@pytest.mark.parametrize(("number", "bits", "k"), MODP_FORMULA)
def test_modp_prime_matches_rfc_formula_and_is_safe(number: int, bits: int, k: int) -> None:
    g = dh.group(number)
    assert isinstance(g, dh.ModpGroup)
    expected = 2**bits - 2 ** (bits - 64) - 1 + 2**64 * (_pi_scaled(bits - 130) + k)
    assert g.prime == expected
    assert g.public_len * 8 == bits
    assert _probably_prime(g.prime) and _probably_prime((g.prime - 1) // 2)


def test_modp2048_published_hex_ends() -> None:
    # RFC 3526 §3: first and last words of the printed 2048-bit prime.
    text = f"{dh.group(14).prime:X}"  # type: ignore[attr-defined]
    assert text.startswith("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1")
    assert text.endswith("98FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF")


# RFC 5903 §8.1, 256-bit random ECP group.
P256_I = _unhex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433")
P256_GI = _unhex(
    "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180"
    "5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3"
)
P256_R = _unhex("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53")
P256_GR = _unhex(
    "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63"
    "56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB"
)
P256_GIR = _unhex("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE")

# RFC 7748 §6.1, X25519 (RFC 8031 uses the same function and encoding).
X25519_A = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
X25519_A_PUB = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
X25519_B = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
X25519_B_PUB = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X25519_K = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def _fixed(value: bytes):  # type: ignore[no-untyped-def]
    def rng(n: int) -> bytes:
        assert n == len(value)
        return value

    return rng


def test_ecp256_rfc5903_vector_both_directions() -> None:
    g = dh.group(19)
    i = g.generate(_fixed(P256_I))
    r = g.generate(_fixed(P256_R))
    assert i.public_bytes() == P256_GI
    assert r.public_bytes() == P256_GR
    assert i.shared_secret(P256_GR) == P256_GIR
    assert r.shared_secret(P256_GI) == P256_GIR


def test_x25519_rfc7748_vector_both_directions() -> None:
    g = dh.group(31)
    a = g.generate(_fixed(X25519_A))
    b = g.generate(_fixed(X25519_B))
    assert a.public_bytes() == X25519_A_PUB
    assert b.public_bytes() == X25519_B_PUB
    assert a.shared_secret(X25519_B_PUB) == X25519_K
    assert b.shared_secret(X25519_A_PUB) == X25519_K


@pytest.mark.parametrize("number", dh.supported_groups())
def test_agreement_and_lengths(number: int) -> None:
    g = dh.group(number)
    a, b = g.generate(), g.generate()
    assert len(a.public_bytes()) == g.public_len
    s = a.shared_secret(b.public_bytes())
    assert s == b.shared_secret(a.public_bytes())
    if isinstance(g, dh.ModpGroup):
        assert len(s) == g.public_len  # RFC 7296 §2.14: zero-padded to the prime's length
    elif isinstance(g, dh.EcpGroup):
        assert len(s) == g.coord_len  # RFC 5903 §7: x coordinate only


@pytest.mark.parametrize("number", [2, 14, 16])
def test_modp_rejects_rfc6989_values(number: int) -> None:
    g = dh.group(number)
    assert isinstance(g, dh.ModpGroup)
    priv = g.generate()
    n = g.public_len
    for bad in (0, 1, g.prime - 1, g.prime, g.prime + 1):
        value = bad.to_bytes(n + 1, "big")[-n:] if bad < 2 ** (8 * n) else b"\xff" * n
        with pytest.raises(dh.InvalidPublicValue):
            priv.shared_secret(value)
    with pytest.raises(dh.InvalidPublicValue):
        priv.shared_secret(b"\x02")  # wrong length


@pytest.mark.parametrize("number", [19, 20, 21])
def test_ecp_rejects_off_curve_and_wrong_length(number: int) -> None:
    g = dh.group(number)
    a, b = g.generate(), g.generate()
    pub = bytearray(b.public_bytes())
    pub[-1] ^= 1  # y changed: the point is no longer on the curve
    with pytest.raises(dh.InvalidPublicValue):
        a.shared_secret(bytes(pub))
    with pytest.raises(dh.InvalidPublicValue):
        a.shared_secret(b"\x04" + b.public_bytes())  # SEC1 prefix must not be sent (RFC 5903 §7)
    with pytest.raises(dh.InvalidPublicValue):
        a.shared_secret(bytes(g.public_len))


def test_x25519_rejects_small_order_points() -> None:
    a = dh.group(31).generate()
    # u = 0 and u = 1 are of small order: the shared secret would be all zero (RFC 7748 §6.1).
    for u in (bytes(32), b"\x01" + bytes(31)):
        with pytest.raises(dh.InvalidPublicValue):
            a.shared_secret(u)
    with pytest.raises(dh.InvalidPublicValue):
        a.shared_secret(bytes(31))


def test_lookup() -> None:
    assert dh.group_by_name("x25519").number == 31
    assert dh.group_by_name("modp2048").number == 14
    assert dh.group_by_name("ecp384").number == 20
    with pytest.raises(dh.UnknownGroup):
        dh.group(1)
    with pytest.raises(dh.UnknownGroup):
        dh.group_by_name("modp768")
