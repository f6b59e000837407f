"""L2TPv2 numbers (RFC 2661 §3.2, §4.4): message types, AVP types, result and error codes."""

from __future__ import annotations

from enum import IntEnum

PORT = 1701  # RFC 2661 §8.1


class MessageType(IntEnum):
    """RFC 2661 §3.2."""

    SCCRQ = 1
    SCCRP = 2
    SCCCN = 3
    STOPCCN = 4
    HELLO = 6
    OCRQ = 7
    OCRP = 8
    OCCN = 9
    ICRQ = 10
    ICRP = 11
    ICCN = 12
    CDN = 14
    WEN = 15
    SLI = 16


class AvpType(IntEnum):
    """RFC 2661 §4.4 attribute types (vendor 0)."""

    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    PROTOCOL_VERSION = 2
    FRAMING_CAPABILITIES = 3
    BEARER_CAPABILITIES = 4
    TIE_BREAKER = 5
    FIRMWARE_REVISION = 6
    HOST_NAME = 7
    VENDOR_NAME = 8
    ASSIGNED_TUNNEL_ID = 9
    RECEIVE_WINDOW_SIZE = 10
    CHALLENGE = 11
    Q931_CAUSE_CODE = 12
    CHALLENGE_RESPONSE = 13
    ASSIGNED_SESSION_ID = 14
    CALL_SERIAL_NUMBER = 15
    MINIMUM_BPS = 16
    MAXIMUM_BPS = 17
    BEARER_TYPE = 18
    FRAMING_TYPE = 19
    CALLED_NUMBER = 21
    CALLING_NUMBER = 22
    SUB_ADDRESS = 23
    TX_CONNECT_SPEED = 24
    PHYSICAL_CHANNEL_ID = 25
    INITIAL_RECEIVED_LCP_CONFREQ = 26
    LAST_SENT_LCP_CONFREQ = 27
    LAST_RECEIVED_LCP_CONFREQ = 28
    PROXY_AUTHEN_TYPE = 29
    PROXY_AUTHEN_NAME = 30
    PROXY_AUTHEN_CHALLENGE = 31
    PROXY_AUTHEN_ID = 32
    PROXY_AUTHEN_RESPONSE = 33
    CALL_ERRORS = 34
    ACCM = 35
    RANDOM_VECTOR = 36
    PRIVATE_GROUP_ID = 37
    RX_CONNECT_SPEED = 38
    SEQUENCING_REQUIRED = 39


KNOWN_AVP_TYPES = frozenset(int(t) for t in AvpType)

# The AVPs each message must carry besides Message Type (RFC 2661 §6.1-6.14).
REQUIRED_AVPS: dict[MessageType, tuple[AvpType, ...]] = {
    MessageType.SCCRQ: (
        AvpType.PROTOCOL_VERSION,
        AvpType.HOST_NAME,
        AvpType.FRAMING_CAPABILITIES,
        AvpType.ASSIGNED_TUNNEL_ID,
    ),
    MessageType.SCCRP: (
        AvpType.PROTOCOL_VERSION,
        AvpType.FRAMING_CAPABILITIES,
        AvpType.HOST_NAME,
        AvpType.ASSIGNED_TUNNEL_ID,
    ),
    MessageType.SCCCN: (),
    MessageType.STOPCCN: (AvpType.ASSIGNED_TUNNEL_ID, AvpType.RESULT_CODE),
    MessageType.HELLO: (),
    MessageType.ICRQ: (AvpType.ASSIGNED_SESSION_ID, AvpType.CALL_SERIAL_NUMBER),
    MessageType.ICRP: (AvpType.ASSIGNED_SESSION_ID,),
    MessageType.ICCN: (AvpType.TX_CONNECT_SPEED, AvpType.FRAMING_TYPE),
    MessageType.CDN: (AvpType.RESULT_CODE, AvpType.ASSIGNED_SESSION_ID),
}

TUNNEL_MESSAGES = frozenset(
    {MessageType.SCCRQ, MessageType.SCCRP, MessageType.SCCCN, MessageType.STOPCCN, MessageType.HELLO}
)


class StopCcnResult(IntEnum):
    """RFC 2661 §4.4.2 result codes for StopCCN."""

    GENERAL_REQUEST = 1
    GENERAL_ERROR = 2
    CHANNEL_EXISTS = 3
    NOT_AUTHORIZED = 4
    BAD_PROTOCOL_VERSION = 5
    SHUTTING_DOWN = 6
    FSM_ERROR = 7


class CdnResult(IntEnum):
    """RFC 2661 §4.4.2 result codes for CDN."""

    LOST_CARRIER = 1
    GENERAL_ERROR = 2
    ADMINISTRATIVE = 3
    NO_FACILITIES_TEMPORARY = 4
    NO_FACILITIES_PERMANENT = 5


class ErrorCode(IntEnum):
    """RFC 2661 §4.4.2 general error codes."""

    NO_ERROR = 0
    NO_CONTROL_CONNECTION = 1
    BAD_LENGTH = 2
    BAD_VALUE = 3
    NO_RESOURCES = 4
    INVALID_SESSION_ID = 5
    VENDOR_ERROR = 6
    TRY_ANOTHER = 7
    UNKNOWN_MANDATORY_AVP = 8


STOPCCN_TEXT = {
    1: "general request to clear the control connection",
    2: "general error",
    3: "control channel already exists",
    4: "requester is not authorized",
    5: "protocol version not supported",
    6: "requester is being shut down",
    7: "finite state machine error",
}
CDN_TEXT = {
    1: "lost carrier",
    2: "general error",
    3: "administrative disconnect",
    4: "no facilities (temporary)",
    5: "no facilities (permanent)",
}
