"""Sans-I/O core of the ACE gateway: ACE messages (RFC 9200/9201), CWTs
(RFC 8392), COSE (RFC 9052/9053), proof-of-possession keys (RFC 8747), AIF
scopes (RFC 9237), per-request proofs and replay windows.

No asyncio, no sockets, no clock reads: every time-dependent function takes
``now`` (seconds since the epoch, float) as a parameter.
"""

from .errors import TokenError

__all__ = ["TokenError"]
