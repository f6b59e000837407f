"""Numbers of the ISAKMP / IKEv1 protocol (RFC 2407, 2408, 2409, 3706, 3947).

Only numbers live here: no behaviour. Names follow the RFC text so a reader can grep the RFC.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

ISAKMP_VERSION = 0x10  # major 1, minor 0 (RFC 2408 §3.1)
HEADER_LENGTH = 28
COOKIE_LENGTH = 8
IKE_PORT = 500
NATT_PORT = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 §2.2 / RFC 3947 §4


class ExchangeType(IntEnum):
    """RFC 2408 §3.1 and RFC 2409 §5 (Quick Mode 32)."""

    NONE = 0
    BASE = 1
    MAIN = 2  # "Identity Protection"
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # Mode Config, not implemented
    QUICK = 32
    NEW_GROUP = 33


class Flags(IntFlag):
    """RFC 2408 §3.1."""

    NONE = 0
    ENCRYPTION = 1
    COMMIT = 2
    AUTH_ONLY = 4


class PayloadType(IntEnum):
    """RFC 2408 §3.1; NAT-D / NAT-OA from RFC 3947 §3.2 and §5.2 (draft values 130/131)."""

    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERTREQ = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR = 13
    NAT_D = 20
    NAT_OA = 21
    NAT_D_DRAFT = 130
    NAT_OA_DRAFT = 131


DOI_IPSEC = 1  # RFC 2407 §4.2
SIT_IDENTITY_ONLY = 1  # RFC 2407 §4.2.1


class ProtocolId(IntEnum):
    """RFC 2407 §4.4.1."""

    ISAKMP = 1
    AH = 2
    ESP = 3
    IPCOMP = 4


KEY_IKE = 1  # RFC 2407 §4.4.2: the only phase-1 transform id


class Phase1Attr(IntEnum):
    """RFC 2409 Appendix A, attribute classes."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class EncryptionAlgorithm(IntEnum):
    """RFC 2409 Appendix A; AES = 7 from RFC 3602 §5."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_CBC = 4
    TRIPLE_DES_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7


class HashAlgorithm(IntEnum):
    """RFC 2409 Appendix A; SHA2 values from RFC 4868 §3 / IANA."""

    MD5 = 1
    SHA1 = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    """RFC 2409 Appendix A."""

    PSK = 1
    DSS_SIG = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_REV_ENC = 5


class LifeType(IntEnum):
    """RFC 2409 Appendix A and RFC 2407 §4.5 use the same values."""

    SECONDS = 1
    KILOBYTES = 2


class Phase2Attr(IntEnum):
    """RFC 2407 §4.5."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTH_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICT_SIZE = 8
    COMPRESS_PRIVATE_ALG = 9


class EncapsulationMode(IntEnum):
    """RFC 2407 §4.5, RFC 3947 §5.1, and the draft-ietf-ipsec-nat-t-ike-00..03 values strongSwan also sends."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3
    UDP_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443
    UDP_TRANSPORT_DRAFT = 61444


class EspTransformId(IntEnum):
    """RFC 2407 §4.4.4 and IANA "IPsec ESP Transform Identifiers"."""

    ESP_3DES = 3
    ESP_NULL = 11
    ESP_AES_CBC = 12
    ESP_AES_CTR = 13
    ESP_AES_GCM_8 = 18
    ESP_AES_GCM_12 = 19
    ESP_AES_GCM_16 = 20


class AhTransformId(IntEnum):
    """RFC 2407 §4.4.3 and IANA "IPsec AH Transform Identifiers"."""

    AH_MD5 = 2
    AH_SHA = 3
    AH_SHA2_256 = 5
    AH_SHA2_384 = 6
    AH_SHA2_512 = 7


class AuthAlgorithm(IntEnum):
    """RFC 2407 §4.5 "Authentication Algorithm"; SHA2 values from RFC 4868 §3."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IdType(IntEnum):
    """RFC 2407 §4.6.2.1."""

    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class CertEncoding(IntEnum):
    """RFC 2408 §3.9."""

    PKCS7 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    X509_KEY_EXCHANGE = 5
    KERBEROS = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10


class NotifyType(IntEnum):
    """RFC 2408 §3.14.1 (errors), RFC 2407 §4.6.3 (IPsec status), RFC 3706 §5 (DPD)."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137


# Vendor IDs. The NAT-T ones are MD5 of the document name (RFC 3947 §3.1; the drafts did the same).
VID_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
VID_NATT_DRAFT_02 = bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448")
VID_NATT_DRAFT_02_N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")  # the name with a trailing "\n"
VID_NATT_DRAFT_03 = bytes.fromhex("7d9419a65310ca6f2c179d9215529d56")
VID_NATT_DRAFTS = (VID_NATT_DRAFT_02, VID_NATT_DRAFT_02_N, VID_NATT_DRAFT_03)
# RFC 3706 §7: 14 fixed bytes followed by major 1, minor 0.
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
