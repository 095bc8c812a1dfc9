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
from oro_sync.auth.tickets import TicketError, parse_ticket
from oro_sync.identity import Identity
from oro_sync.logs import Logger, RepeatLimiter, clip

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
        #: One line per refusal, but a client repeating the same refused
        #: ticket (cheap: refusals are cached) is counted, not logged each time.
        self.repeats = RepeatLimiter(self.log)

    def authenticate(self, request: Any, session_id: str, in_band: bool = False) -> Any:
        """The identity of the URL ticket (a Deferred), or the anonymous one
        when none is required.  ``in_band``: the connection speaks WAMP v2,
        whose HELLO can carry the ticket (WAMP-Ticket), so a missing one is
        not refused here but answered None: the session must authenticate."""
        tickets = request.params.get("ticket")
        if not tickets or not tickets[0]:
            if self.require_ticket:
                if in_band:
                    return None
                self._refuse(request, "no ticket", session_id, "-")
            return Identity.anonymous_for(session_id)
        d = maybeDeferred(self.verifier.verify_identity, tickets[0], session_id)
        d.addErrback(self._failed, request, session_id, tickets[0])
        return d

    def verify_in_band(self, ticket: str, session_id: str) -> Any:
        """WAMP-Ticket's AUTHENTICATE: the same verifier (digest workers,
        cache, one-time tickets, user lookup) as a URL ticket.  Fires with the
        Identity, or with the refusal reason (a str, for the session's one log
        line); fails only when authentication is unavailable."""
        d = maybeDeferred(self.verifier.verify_identity, ticket, session_id)

        def refused(failure: Any) -> Any:
            if failure.check(TicketError):
                self.refused += 1
                return failure.value.reason
            return failure

        return d.addErrback(refused)

    def _failed(self, failure: Any, request: Any, session_id: str, ticket: str) -> None:
        if failure.check(TicketError):
            self._refuse(request, f"ticket {failure.value.reason}", session_id, _claimed_user(ticket))
        self.log.failure("ticket check failed for {peer}", failure, peer=request.peer)
        raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "authentication is unavailable")

    def _refuse(self, request: Any, why: str, session_id: str, user: str) -> None:
        # The one line per refused connection; never the ticket itself.
        self.refused += 1
        peer = getattr(request, "peer", "")
        address = peer.split(":", 1)[1].rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
        self.repeats.warn(("ticket", address, why),
                          "refusing {address}: {why} (session {session}, user {user}, protocol {protocol})",
                          log_event="refusal", peer=peer, why=why, reason="ticket", address=address,
                      session=session_id, user=user,
                      protocol=",".join(getattr(request, "protocols", None) or ()) or "-")
        raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Forbidden")


def _claimed_user(ticket: str) -> str:
    """The username a refused ticket claims (unverified, so cut short and
    without control characters: a log line must stay one line), or "-"."""
    try:
        name = parse_ticket(ticket).username or "anonymous"
    except Exception:
        return "-"
    return "".join(c if c.isprintable() else "?" for c in clip(name, 64))
