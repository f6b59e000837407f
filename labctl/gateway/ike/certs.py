"""X.509 for both IKE cores: our own certificate chain, and validation of the peer's chain.

Sans-I/O like the rest of ``ike/``: PEM or DER bytes and a wall-clock time in, a certificate path or a reason in
plain words out. Certificate validity is calendar time (RFC 5280 §4.1.2.5), which the engines' monotonic ``now``
cannot give, so the caller passes a timezone-aware UTC ``datetime`` (the daemon's adapter reads the real clock;
tests pass a fixed one).

Path validation is the part of RFC 5280 §6.1 a lab needs. The peer sends its end-entity certificate first and may
add intermediate CA certificates as further CERT payloads (RFC 7296 §3.6; RFC 2408 §3.9 for IKEv1); the path
runs from that end entity through those intermediates to one of the configured CA certificates (the trust
anchors), and every link is checked:

- name chaining and the issuer's signature (§6.1.3 (a)(1), (a)(4));
- validity of every certificate on the path, the trust anchor included (§4.1.2.5, §6.1.3 (a)(2));
- every issuer is a CA: basicConstraints with cA TRUE (§4.2.1.9, §6.1.4 (k)) and, when it has a
  pathLenConstraint, no more intermediate CAs below it than that allows (§4.2.1.9, §6.1.4 (l), (m));
- when an issuer carries keyUsage, keyCertSign is set (§4.2.1.3, §6.1.4 (n));
- a critical extension that is not processed here makes the certificate unusable (§4.2, §6.1.4 (o));
- at most ``MAX_CHAIN_DEPTH`` certificates from the end entity to the trust anchor.

Not done: revocation (CRLs, OCSP), name constraints and certificate policies (a certificate that marks one of
them critical is refused by the rule above, never accepted unchecked).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

WallClock = Callable[[], dt.datetime]

MAX_CHAIN_DEPTH = 5  # certificates from the end entity to the trust anchor, both counted
MAX_PEER_CERTIFICATES = 8  # CERT payloads taken from one message (end entity + intermediates)
MAX_SIGNATURE_CHECKS = 32  # path building stops after this many signature verifications

# Extensions whose meaning is handled here or by the identity checks (subjectAltName), or that carry no
# constraint (key identifiers). extendedKeyUsage is not enforced: RFC 4945 §5.1.3.12 asks IKE not to.
_PROCESSED_EXTENSIONS = (
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.SubjectAlternativeName,
    x509.ExtendedKeyUsage,
    x509.SubjectKeyIdentifier,
    x509.AuthorityKeyIdentifier,
)


class CertError(ValueError):
    """A certificate or chain that cannot be used; the message says why in plain words."""


def describe(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- our own credentials --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalChain:
    """Our end-entity certificate and the intermediate CA certificates we send after it (RFC 7296 §3.6)."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()

    def ders(self) -> list[bytes]:
        """DER of each CERT payload to send, the end entity first."""
        return [c.public_bytes(serialization.Encoding.DER) for c in (self.leaf, *self.intermediates)]


def load_pem_certificates(pem: bytes | str, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order; ``what`` names the file in the error."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertError(f"{what} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' block)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertError(f"{what}: a certificate in it cannot be read ({exc})") from None


def load_private_key(pem: bytes | str, what: str = "the private key file") -> PrivateKeyTypes:
    """A PEM private key of any type (the cores check the type they sign with)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertError(f"{what} holds no usable unencrypted PEM private key ({exc})") from None


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def local_chain(cert_pem: bytes | str, private_key: PrivateKeyTypes | None = None,
                what: str = "the certificate file") -> LocalChain:
    """Our certificate file: the gateway's own certificate first, then any intermediate CA certificates.

    With ``private_key`` the first certificate must carry that key's public half, so a file in the wrong
    order (or the wrong file) is named here rather than as a signature the peer cannot verify.
    """
    certs = load_pem_certificates(cert_pem, what)
    leaf = certs[0]
    if private_key is not None and _spki(leaf.public_key()) != _spki(private_key.public_key()):
        raise CertError(f"the first certificate in {what} ({describe(leaf.subject)}) does not belong to the "
                        "private key: put the gateway's own certificate first, then its intermediate CAs")
    return LocalChain(leaf, tuple(certs[1:]))


def local_chain_from_pem(key_pem: bytes | str, cert_pem: bytes | str) -> LocalChain:
    """Both files of a certificate-authenticated connection, checked against each other."""
    return local_chain(cert_pem, load_private_key(key_pem))


def load_anchors(ca_pems: Sequence[bytes | str]) -> list[x509.Certificate]:
    """The configured CA certificates (each file may hold several)."""
    out: list[x509.Certificate] = []
    for i, pem in enumerate(ca_pems):
        out += load_pem_certificates(pem, f"CA file {i + 1}")
    return out


# --- the peer's chain ---------------------------------------------------------------------------------------


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError as exc:  # duplicate or malformed extensions
        raise CertError(f"certificate {describe(cert.subject)} has malformed extensions ({exc})") from None


def _validity_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    # RFC 5280 §4.1.2.5: valid from notBefore through notAfter, both inclusive.
    if now < cert.not_valid_before_utc:
        return f"certificate {describe(cert.subject)} is not valid before {_when(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"certificate {describe(cert.subject)} expired on {_when(cert.not_valid_after_utc)}"
    return None


def _critical_problem(cert: x509.Certificate) -> str | None:
    # RFC 5280 §4.2: a critical extension that is not recognised (or not processed) makes the certificate
    # unusable.
    for ext in _extensions(cert):
        if ext.critical and not isinstance(ext.value, _PROCESSED_EXTENSIONS):
            return (f"certificate {describe(cert.subject)} has a critical extension this gateway does not "
                    f"process ({ext.oid.dotted_string})")
    return None


def _issuer_problem(issuer: x509.Certificate, intermediates_below: int) -> str | None:
    """RFC 5280 §4.2.1.9 and §4.2.1.3 for a certificate that signs another one on the path."""
    name = describe(issuer.subject)
    try:
        bc = _extensions(issuer).get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"issuer {name} is not a CA (it has no basicConstraints extension)"
    if not bc.ca:
        return f"issuer {name} is not a CA (its basicConstraints has cA FALSE)"
    if bc.path_length is not None and intermediates_below > bc.path_length:
        return (f"issuer {name} allows {bc.path_length} intermediate CA certificate(s) below it "
                f"(pathLenConstraint), this chain has {intermediates_below}")
    try:
        ku = _extensions(issuer).get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        return f"issuer {name} may not sign certificates (its keyUsage lacks keyCertSign)"
    return _critical_problem(issuer)


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


class _PathBuilder:
    """Depth-first search from the end entity up to a trust anchor; the reason of the failure that got
    furthest up the path is the one reported."""

    def __init__(self, anchors: Sequence[x509.Certificate], pool: Sequence[x509.Certificate], now: dt.datetime,
                 max_depth: int) -> None:
        self.anchors = list(anchors)
        self.pool = list(pool)
        self.now = now
        self.max_depth = max_depth
        self.checks = 0
        self._signatures: dict[tuple[int, int], bool] = {}
        self._failure: tuple[int, str] | None = None

    def note(self, depth: int, reason: str) -> None:
        if self._failure is None or depth > self._failure[0]:
            self._failure = (depth, reason)

    @property
    def reason(self) -> str:
        return self._failure[1] if self._failure else "no certificate path was found"

    def signed(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        key = (id(cert), id(issuer))
        if key not in self._signatures:
            self.checks += 1
            try:
                cert.verify_directly_issued_by(issuer)  # RFC 5280 §6.1.3 (a)(1)
                self._signatures[key] = True
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                self._signatures[key] = False
        return self._signatures[key]

    def extend(self, path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cert = path[-1]
        depth = len(path)  # certificates on the path so far; the issuer would be number depth + 1
        # RFC 5280 §6.1.3 (a)(4): the issuer's subject is this certificate's issuer name. Configured CAs first.
        candidates = [(a, True) for a in self.anchors if a.subject == cert.issuer]
        candidates += [(c, False) for c in self.pool
                       if c.subject == cert.issuer and c not in path]
        if not candidates:
            self.note(depth, f"certificate {describe(cert.subject)} is not issued by a trusted CA: its issuer "
                             f"{describe(cert.issuer)} is neither a configured CA nor among the certificates "
                             "the peer sent")
            return None
        for issuer, is_anchor in candidates:
            if self.checks >= MAX_SIGNATURE_CHECKS:
                self.note(depth + 1, f"gave up building a path for {describe(path[0].subject)} after "
                                     f"{MAX_SIGNATURE_CHECKS} signature checks")
                return None
            if not self.signed(cert, issuer):
                self.note(depth + 1, f"the signature on certificate {describe(cert.subject)} does not verify "
                                     f"with the key of {'CA' if is_anchor else 'issuer'} "
                                     f"{describe(issuer.subject)}")
                continue
            below = sum(1 for c in path[1:] if not _self_issued(c))  # RFC 5280 §6.1.4 (l)
            problem = _validity_problem(issuer, self.now) or _issuer_problem(issuer, below)
            if problem is not None:
                self.note(depth + 1, problem)
                continue
            if is_anchor:
                return [*path, issuer]
            if depth + 2 > self.max_depth:  # this intermediate, then at least a trust anchor above it
                self.note(depth + 1, f"the chain of {describe(path[0].subject)} is longer than "
                                     f"{self.max_depth} certificates")
                continue
            found = self.extend([*path, issuer])
            if found is not None:
                return found
        return None


def _parse_der(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertError(f"{what} cannot be parsed as an X.509 certificate ({exc})") from None


def verify_chain(end_entity: bytes, intermediates: Sequence[bytes], anchors: Sequence[x509.Certificate],
                 now: dt.datetime, max_depth: int = MAX_CHAIN_DEPTH) -> list[x509.Certificate]:
    """Validate the peer's end-entity certificate (DER) up to one of ``anchors``, using the intermediate CA
    certificates (DER) the peer sent along. Returns the path, end entity first and trust anchor last; raises
    CertError with the reason otherwise. ``now`` is the wall-clock time, timezone-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise CertError("cannot check certificate validity: the wall clock gave a time without a timezone")
    if 1 + len(intermediates) > MAX_PEER_CERTIFICATES:
        raise CertError(f"the peer sent {1 + len(intermediates)} certificates; at most {MAX_PEER_CERTIFICATES} "
                        "are accepted")
    if not anchors:
        raise CertError("no CA certificate is configured to check the peer's certificate against")
    leaf = _parse_der(end_entity, "the peer's certificate")
    pool = [_parse_der(d, f"intermediate certificate {i + 1} from the peer") for i, d in enumerate(intermediates)]
    problem = _validity_problem(leaf, now) or _critical_problem(leaf)
    if problem is not None:
        raise CertError(problem)
    builder = _PathBuilder(anchors, pool, now, max_depth)
    path = builder.extend([leaf])
    if path is None:
        raise CertError(builder.reason)
    return path
