"""RFC 9770 §4 token hash, shared by the AS and the devices that follow the TRL."""

from __future__ import annotations

import base64
import hashlib

from tokens.token_hash import SHA256_SUITE, token_hash

# RFC 9770 §4.2.1 figure 3: the access_token byte string of a CBOR AS response
RFC_BYTES = bytes.fromhex(
    "d83dd0835820a3010a044c53796d6d6574726963313238054d99a0d7846e762c49ffe8a63e0ba05858"
    "b918a11fd81e438b7f973d9e2e119bcb22424ba0f38a80f27562f400ee1d0d6c0fdb559c02421fd384"
    "fc2ebe22d7071378b0ea7428fff157444d45f7e6afcda1aae5f6495830c58627087fc5b4974f319a87"
    "07a635dd643b"
)


def test_hash_input_is_unpadded_base64url_of_the_token_bytes() -> None:
    text = base64.urlsafe_b64encode(RFC_BYTES).decode().rstrip("=")
    assert text.startswith("2D3Q") and "=" not in text
    th = token_hash(RFC_BYTES)
    assert th[0] == SHA256_SUITE == 1 and len(th) == 33
    assert th[1:] == hashlib.sha256(text.encode()).digest()


def test_different_bytes_of_one_token_hash_differently() -> None:
    # the hash is over the bytes as the AS sent them, not a re-encoding
    assert token_hash(RFC_BYTES) != token_hash(RFC_BYTES + b"\x00")
    assert token_hash(b"\xfb\xff") != token_hash(b"\xfb\xfe")  # '-_' vs '-' in base64url
