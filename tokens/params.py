"""Numbers on the wire: CoAP codes, ACE parameters, CWT claims, COSE labels.

Integer abbreviations as registered by RFC 9200 §8.10 (ACE parameters),
RFC 9201 (ACE OAuth parameters), RFC 8392 §9.1 (CWT claims), RFC 8747 §3.1
(``cnf`` methods), RFC 9052 §3.1 / RFC 9053 (COSE headers, algorithms, keys).
"""

from __future__ import annotations

from enum import IntEnum

#: Content-Format ``application/ace+cbor`` (RFC 9200 §8.15).
CONTENT_FORMAT_ACE_CBOR = 19
#: Content-Format ``application/cbor`` (RFC 7049 / RFC 8949).
CONTENT_FORMAT_CBOR = 60
#: Option number of the per-request Proof option (experimental range).
PROOF_OPTION = 65001
#: Option numbers of the other request parts a Proof covers: Content-Format
#: and Uri-Query (RFC 7252 §12.2), Echo (RFC 9175 §2.2).
CONTENT_FORMAT_OPTION = 12
URI_QUERY_OPTION = 15
ECHO_OPTION = 252


class CoapCode(IntEnum):
    """CoAP response codes used by the ACE gateway, as ``class << 5 | detail``
    (RFC 7252 §12.1.2; 4.29 from RFC 8516). Values equal aiocoap's ``Code``."""

    CREATED = 0x41  # 2.01
    DELETED = 0x42  # 2.02
    VALID = 0x43  # 2.03
    CHANGED = 0x44  # 2.04
    CONTENT = 0x45  # 2.05
    BAD_REQUEST = 0x80  # 4.00
    UNAUTHORIZED = 0x81  # 4.01
    BAD_OPTION = 0x82  # 4.02
    FORBIDDEN = 0x83  # 4.03
    NOT_FOUND = 0x84  # 4.04
    METHOD_NOT_ALLOWED = 0x85  # 4.05
    NOT_ACCEPTABLE = 0x86  # 4.06
    REQUEST_ENTITY_TOO_LARGE = 0x8D  # 4.13
    UNSUPPORTED_CONTENT_FORMAT = 0x8F  # 4.15
    TOO_MANY_REQUESTS = 0x9D  # 4.29
    INTERNAL_SERVER_ERROR = 0xA0  # 5.00
    BAD_GATEWAY = 0xA2  # 5.02
    SERVICE_UNAVAILABLE = 0xA3  # 5.03
    GATEWAY_TIMEOUT = 0xA4  # 5.04
    PROXYING_NOT_SUPPORTED = 0xA5  # 5.05

    @property
    def dotted(self) -> str:
        """The code as RFC 7252 writes it, e.g. ``"4.01"``."""
        return f"{self.value >> 5}.{self.value & 0x1F:02d}"


class Method(IntEnum):
    """CoAP request method codes (RFC 7252 §12.1.1, RFC 8132)."""

    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    PATCH = 6
    IPATCH = 7


class AceError(IntEnum):
    """ACE error codes (RFC 9200 §8.4, Table 3 of §5.8.3)."""

    INVALID_REQUEST = 1
    INVALID_CLIENT = 2
    INVALID_GRANT = 3
    UNAUTHORIZED_CLIENT = 4
    UNSUPPORTED_GRANT_TYPE = 5
    INVALID_SCOPE = 6
    UNSUPPORTED_POP_KEY = 7
    INCOMPATIBLE_ACE_PROFILES = 8


class Param(IntEnum):
    """ACE parameter abbreviations (RFC 9200 §8.10 / Table 6 and RFC 9201)."""

    ACCESS_TOKEN = 1
    EXPIRES_IN = 2
    REQ_CNF = 4
    AUDIENCE = 5
    CNF = 8
    SCOPE = 9
    CLIENT_ID = 24
    CLIENT_SECRET = 25
    RESPONSE_TYPE = 26
    REDIRECT_URI = 27
    STATE = 28
    CODE = 29
    ERROR = 30
    ERROR_URI = 31
    ERROR_DESCRIPTION = 32
    GRANT_TYPE = 33
    TOKEN_TYPE = 34
    USERNAME = 35
    PASSWORD = 36
    REFRESH_TOKEN = 37
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40
    RS_CNF = 41


class IntrospectionParam(IntEnum):
    """Introspection request/response abbreviations (RFC 9200 §8.12, Table 7)."""

    ISS = 1
    SUB = 2
    AUD = 3
    EXP = 4
    NBF = 5
    IAT = 6
    CTI = 7
    CNF = 8
    SCOPE = 9
    ACTIVE = 10
    TOKEN = 11
    CLIENT_ID = 24
    ERROR = 30
    ERROR_DESCRIPTION = 32
    TOKEN_TYPE_HINT = 33
    TOKEN_TYPE = 34
    USERNAME = 35
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40
    RS_CNF = 41


class CreationHint(IntEnum):
    """AS Request Creation Hints parameters (RFC 9200 §5.3, Table 2)."""

    AS = 1
    KID = 2
    AUDIENCE = 5
    SCOPE = 9
    CNONCE = 39


class Claim(IntEnum):
    """CWT claim keys (RFC 8392 §4, RFC 8747 §3.1, RFC 9200 §5.10.3)."""

    ISS = 1
    SUB = 2
    AUD = 3
    EXP = 4
    NBF = 5
    IAT = 6
    CTI = 7
    CNF = 8
    SCOPE = 9
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40


class Cnf(IntEnum):
    """Confirmation methods inside ``cnf`` (RFC 8747 §3.1)."""

    COSE_KEY = 1
    ENCRYPTED_COSE_KEY = 2
    KID = 3


class GrantType(IntEnum):
    """OAuth grant type abbreviations (RFC 9200 §8.5, Table 5)."""

    PASSWORD = 0
    AUTHORIZATION_CODE = 1
    CLIENT_CREDENTIALS = 2
    REFRESH_TOKEN = 3


class TokenType(IntEnum):
    """Token type abbreviations (RFC 9201 §5)."""

    BEARER = 1
    POP = 2


class AceProfile(IntEnum):
    """ACE profile identifiers (RFC 9202 §9 coap_dtls = 1)."""

    COAP_DTLS = 1


class CoseTag(IntEnum):
    """CBOR tags of COSE and CWT messages (RFC 9052 §2, RFC 8392 §6)."""

    ENCRYPT0 = 16
    MAC0 = 17
    SIGN1 = 18
    CWT = 61


class HeaderLabel(IntEnum):
    """COSE common header parameters (RFC 9052 §3.1)."""

    ALG = 1
    CRIT = 2
    CONTENT_TYPE = 3
    KID = 4
    IV = 5
    PARTIAL_IV = 6


class Alg(IntEnum):
    """COSE algorithms supported here (RFC 9053 §2, §3, §4)."""

    ES256 = -7
    EDDSA = -8
    HMAC_256_64 = 4
    HMAC_256_256 = 5
    AES_CCM_16_64_128 = 10


class KeyParam(IntEnum):
    """COSE_Key common and type-specific labels (RFC 9052 §7.1, RFC 9053 §7)."""

    KTY = 1
    KID = 2
    ALG = 3
    KEY_OPS = 4
    BASE_IV = 5
    CRV = -1
    X = -2
    Y = -3
    D = -4
    #: "k" of a kty Symmetric key (RFC 9053 §7.3); same label as ``crv``.
    K = -1


class KeyType(IntEnum):
    """COSE key types (RFC 9053 §7)."""

    OKP = 1
    EC2 = 2
    SYMMETRIC = 4


class Curve(IntEnum):
    """COSE elliptic curves (RFC 9053 §7.1)."""

    P256 = 1
    ED25519 = 6


#: AIF REST-specific method bits (RFC 9237 §2.3): bit ``method_code - 1``.
AIF_METHOD_BITS: dict[str, int] = {
    "GET": 1,
    "POST": 2,
    "PUT": 4,
    "DELETE": 8,
    "FETCH": 16,
    "PATCH": 32,
    "IPATCH": 64,
}
