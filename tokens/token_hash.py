"""The token hash of RFC 9770 §4, shared by the AS, a resource server and a
device that follows the Token Revocation List.

HASH_INPUT is the UTF-8 of the base64url text (no padding) of BYTES, the
value of the ``access_token`` byte string in the AS's CBOR response
(§4.2.1; at an RS, TOKEN_INFO, §4.3.1 step 3). The hash is the RFC 6920 §6
binary form: the suite id byte (1 = sha-256, mandatory to implement, §4.4)
then the 32-byte SHA-256 digest.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["HASH_NAME", "SHA256_SUITE", "token_hash"]

#: RFC 6920 §9.4 suite id of sha-256 (256 bits, untruncated).
SHA256_SUITE = 1
#: "Hash Name String" of the hash function (RFC 9770 §10).
HASH_NAME = "sha-256"


def token_hash(token_bytes: bytes) -> bytes:
    """The RFC 9770 §4 token hash of a CWT whose BYTES are ``token_bytes``."""
    hash_input = base64.urlsafe_b64encode(token_bytes).rstrip(b"=")
    return bytes([SHA256_SUITE]) + hashlib.sha256(hash_input).digest()
