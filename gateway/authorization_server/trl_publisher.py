"""The embedded AS's Token Revocation List kept current (RFC 9770 §5.1):
after every registry change (``acegw tokens revoke``, ``clients disable`` or
``delete``) and when a listed token expires, the TRL is recomputed from the
ledger of issued tokens and the observers concerned are notified (§11).

Requesters (RFC 9770 §7 step 1, §10): a client id in ``as.trl_admins`` is
an administrator; a registered client allowed ``POST /introspect`` is a
resource server, served the tokens issued for its registered audiences (or
every AS audience when it names none); any other registered client is a
device, served its own tokens. Unknown or disabled identities get 4.01.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from gateway.authorization_server.issued_tokens import IssuedTokens, SharedIssuedTokens
from gateway.authorization_server.revocation_list import Requester, RevocationList
from gateway.authorization_server.token_endpoint import ClientPolicy
from gateway.coap.trl_resource import TrlResource

log = logging.getLogger(__name__)


class TrlPublisher:
    """Ledger + TRL + endpoint of one worker."""

    def __init__(
        self,
        ledger: IssuedTokens | SharedIssuedTokens,
        *,
        client_for_identity: Callable[[bytes], ClientPolicy | None],
        admins: Callable[[], Iterable[str]],
        audiences: Callable[[], tuple[str, ...]],
        revoked: Callable[[], list[tuple[bytes, float]]],
        cutoff: Callable[[str], float | None],
        audit: Callable[..., None],
    ) -> None:
        self.ledger = ledger
        self.trl = RevocationList()
        self._client_for_identity = client_for_identity
        self._admins = admins
        self._audiences = audiences
        self._revoked = revoked
        self._cutoff = cutoff
        self.resource = TrlResource(self.trl, self.requester_for, audit)
        self._next_expiry = float("inf")
        #: a shared ledger: compute again after this many seconds anyway
        self._resync = float(getattr(ledger, "resync", float("inf")))
        self._computed = -float("inf")

    def requester_for(self, identity: bytes) -> Requester | None:
        client = self._client_for_identity(identity)
        if client is None:
            return None
        if client.client_id in set(self._admins()):
            return Requester("admin", client.client_id)
        if client.allowed_scope.allows(("introspect",), "POST"):
            return Requester("rs", client.client_id, client.audiences or self._audiences())
        return Requester("device", client.client_id)

    def refresh(self, now: float, *, changed: bool) -> int:
        """Recompute the TRL when the registry ``changed``, a listed token
        expired or (shared ledger) its resync time passed; notify observers.
        Returns the observers woken."""
        shared = self.ledger if isinstance(self.ledger, SharedIssuedTokens) else None
        fresh = shared is not None and shared.take_fresh()
        resync = now >= self._computed + self._resync
        if shared is not None and (changed or resync):
            shared.request_read()  # in the ledger's thread; applied when fresh
        if not changed and not fresh and not resync and now < self._next_expiry:
            return 0
        if changed or resync:
            self._computed = now
        entries = self.ledger.revoked(now, (c for c, _ in self._revoked()), self._cutoff)
        removed, added = self.trl.update(entries)
        self._next_expiry = min((e.exp for e in entries), default=float("inf"))
        if not (removed or added):
            return 0
        log.info("TRL: %d added, %d removed, %d listed", len(added), len(removed), len(entries))
        return self.resource.changed(removed, added)

    def purge(self, now: float) -> int:
        return self.ledger.purge(now)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.trl.entries), "observers": self.resource.observers}


__all__ = ["TrlPublisher"]
