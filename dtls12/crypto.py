"""Key schedule and record protection for TLS_PSK_WITH_AES_128_CCM(_8)
(RFC 6655 §3-§4 over RFC 5246 §5, §6.3, §8.1 and §7.4.9; RFC 4279 §2 premaster
secret; RFC 7627 §4 extended master secret; RFC 9146 §5 records with a
Connection ID).

Every primitive comes from ``cryptography`` (OpenSSL): AES-CCM, HMAC-SHA256,
SHA-256. Secrets are ``bytes`` objects; Python cannot wipe them (see
docs/decisions.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from .wire import DTLS_1_2, ContentType, record_header

_SHA256 = hashes.SHA256()
_EXPLICIT_NONCE = 8
_CID_PLACEHOLDER = b"\xff" * 8
_AAD = struct.Struct(">HHIBHH")
_NONCE_TAIL = struct.Struct(">HHI")
_VERIFY_DATA_LENGTH = 12
_MASTER_SECRET_LENGTH = 48


@dataclass(frozen=True)
class CipherSuite:
    """An AES-128-CCM PSK suite (RFC 6655 §4)."""

    code: int
    name: str
    tag_length: int


TLS_PSK_WITH_AES_128_CCM_8 = CipherSuite(0xC0A8, "TLS_PSK_WITH_AES_128_CCM_8", 8)
TLS_PSK_WITH_AES_128_CCM = CipherSuite(0xC0A4, "TLS_PSK_WITH_AES_128_CCM", 16)
CIPHER_SUITES = {s.code: s for s in (TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CCM)}


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) through OpenSSL."""
    mac = hmac.HMAC(key, _SHA256)
    mac.update(data)
    return mac.finalize()


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.2 PRF with SHA-256: P_SHA256(secret, label + seed)
    (RFC 5246 §5)."""
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac_sha256(secret, a)
        out += hmac_sha256(secret, a + seed)
    return bytes(out[:length])


def psk_premaster_secret(psk: bytes) -> bytes:
    """uint16 N, N zero bytes, uint16 N, the PSK (RFC 4279 §2)."""
    n = len(psk).to_bytes(2, "big")
    return n + bytes(len(psk)) + n + psk


def extended_master_secret(premaster: bytes, session_hash: bytes) -> bytes:
    """master_secret bound to the handshake transcript (RFC 7627 §4)."""
    return prf(premaster, b"extended master secret", session_hash, _MASTER_SECRET_LENGTH)


def finished_verify_data(master: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """verify_data of a Finished message (RFC 5246 §7.4.9)."""
    return prf(master, label, transcript_hash, _VERIFY_DATA_LENGTH)


class Transcript:
    """Running SHA-256 of the handshake messages (RFC 6347 §4.2.6: whole
    messages with their DTLS headers; the first ClientHello and the
    HelloVerifyRequest are left out, §4.2.1)."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = hashes.Hash(_SHA256)

    def add(self, message: bytes) -> None:
        self._hash.update(message)

    def digest(self) -> bytes:
        """The hash of everything added so far (the running state goes on)."""
        return self._hash.copy().finalize()


class RecordProtection:
    """AES-CCM protection of one direction of one epoch (RFC 6655 §3: the
    nonce is the 4-byte implicit IV followed by the 8-byte explicit nonce,
    which is epoch and sequence number; RFC 5246 §6.2.3.3 additional data;
    RFC 9146 §5 for tls12_cid records)."""

    __slots__ = ("_aead", "_iv", "_tag_length")

    def __init__(self, suite: CipherSuite, key: bytes, iv: bytes) -> None:
        self._aead = AESCCM(key, suite.tag_length)
        self._iv = iv
        self._tag_length = suite.tag_length

    def seal(
        self, content_type: int, epoch: int, sequence: int, plaintext: bytes, cid: bytes = b""
    ) -> bytes:
        """One protected record, with header, ready for the wire."""
        seq_high, seq_low = sequence >> 32, sequence & 0xFFFFFFFF
        explicit = _NONCE_TAIL.pack(epoch, seq_high, seq_low)
        if cid:
            inner = plaintext + bytes((content_type,))
            aad = b"".join(
                (
                    _CID_PLACEHOLDER,
                    bytes((ContentType.TLS12_CID, len(cid), ContentType.TLS12_CID)),
                    DTLS_1_2.to_bytes(2, "big"),
                    explicit,
                    cid,
                    len(inner).to_bytes(2, "big"),
                )
            )
            sealed = self._aead.encrypt(self._iv + explicit, inner, aad)
            length = (_EXPLICIT_NONCE + len(sealed)).to_bytes(2, "big")
            return (
                b"".join(
                    (
                        bytes((ContentType.TLS12_CID,)),
                        DTLS_1_2.to_bytes(2, "big"),
                        explicit,
                        cid,
                        length,
                    )
                )
                + explicit
                + sealed
            )
        aad = _AAD.pack(epoch, seq_high, seq_low, content_type, DTLS_1_2, len(plaintext))
        sealed = self._aead.encrypt(self._iv + explicit, plaintext, aad)
        return record_header(content_type, epoch, sequence, _EXPLICIT_NONCE + len(sealed)) + (
            explicit + sealed
        )

    def open(
        self,
        content_type: int,
        version: int,
        epoch: int,
        sequence: int,
        fragment: bytes,
        cid: bytes = b"",
    ) -> tuple[int, bytes] | None:
        """``(content_type, plaintext)`` of a protected record, or None if it
        does not authenticate. For a tls12_cid record the real content type
        is read from the DTLSInnerPlaintext (RFC 9146 §4)."""
        size = len(fragment) - _EXPLICIT_NONCE - self._tag_length
        if size < 0:
            return None
        nonce = self._iv + fragment[:_EXPLICIT_NONCE]
        seq_high, seq_low = sequence >> 32, sequence & 0xFFFFFFFF
        if cid:
            aad = b"".join(
                (
                    _CID_PLACEHOLDER,
                    bytes((ContentType.TLS12_CID, len(cid), ContentType.TLS12_CID)),
                    version.to_bytes(2, "big"),
                    _NONCE_TAIL.pack(epoch, seq_high, seq_low),
                    cid,
                    size.to_bytes(2, "big"),
                )
            )
        else:
            aad = _AAD.pack(epoch, seq_high, seq_low, content_type, version, size)
        try:
            plaintext = self._aead.decrypt(nonce, fragment[_EXPLICIT_NONCE:], aad)
        except InvalidTag:
            return None
        if not cid:
            return content_type, plaintext
        # DTLSInnerPlaintext: content, real type, zero padding.
        inner = plaintext.rstrip(b"\0")
        if not inner:
            return None
        return inner[-1], inner[:-1]


@dataclass(frozen=True)
class KeyBlock:
    """The four secrets an AEAD suite takes from the key block
    (RFC 5246 §6.3, RFC 6655 §3: no MAC keys, 4-byte implicit IVs)."""

    client: RecordProtection
    server: RecordProtection


def key_block(
    suite: CipherSuite, master: bytes, client_random: bytes, server_random: bytes
) -> KeyBlock:
    """Derive both directions' protection (RFC 5246 §6.3)."""
    block = prf(master, b"key expansion", server_random + client_random, 40)
    return KeyBlock(
        client=RecordProtection(suite, block[0:16], block[32:36]),
        server=RecordProtection(suite, block[16:32], block[36:40]),
    )
