"""The handshake gate: who may open a WebSocket.

:class:`TicketAuthenticator` checks the ``ticket`` query parameter of the
upgrade request (Oro's sync tickets) and refuses with HTTP 403 before the
WebSocket exists; the session then carries the ticket's identity.

Who may PUBLISH is decided by :func:`oro_sync.auth.rules.publish_permission`;
it and the rule names are re-exported here for existing callers.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import maybeDeferred

from oro_sync.auth.rules import ANYONE, BACKEND, USERS, publish_permission
from oro_sync.auth.rules import RULES as PUBLISHERS
from oro_sync.auth.tickets import TicketError
from oro_sync.identity import Identity
from oro_sync.logs import Logger

__all__ = ["ANYONE", "BACKEND", "PUBLISHERS", "USERS", "TicketAuthenticator",
           "publish_permission"]


class TicketAuthenticator:
    """``authenticate(request, session_id)`` for WampServerFactory.

    :param verifier: a :class:`~oro_sync.auth.verifier.TicketVerifier`.
    :param require_ticket: refuse connections without a ticket (Oro does);
        otherwise they are anonymous (and not backends).
    """

    log = Logger()

    def __init__(self, verifier: Any, require_ticket: bool = True):
        self.verifier = verifier
        self.require_ticket = require_ticket
        self.refused = 0

    def authenticate(self, request: Any, session_id: str) -> Any:
        tickets = request.params.get("ticket")
        if not tickets or not tickets[0]:
            if self.require_ticket:
                self._refuse(request, "no ticket")
            return Identity.anonymous_for(session_id)
        d = maybeDeferred(self.verifier.verify_identity, tickets[0], session_id)
        d.addErrback(self._failed, request)
        return d

    def _failed(self, failure: Any, request: Any) -> None:
        if failure.check(TicketError):
            self._refuse(request, f"ticket {failure.value.reason}")
        self.log.failure("ticket check failed for {peer}", failure, peer=request.peer)
        raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "authentication is unavailable")

    def _refuse(self, request: Any, why: str) -> None:
        self.refused += 1
        self.log.warn("refusing {peer}: {why}", peer=request.peer, why=why)
        raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Forbidden")
