"""How a WAMP v2 session opens: HELLO, WAMP-Ticket, WELCOME or ABORT.

A mixin of :class:`~oro_sync.wamp2.session.Wamp2Session`, kept apart because
it is the only part that knows authentication:

- the URL ticket (checked during the WebSocket upgrade) already gave the
  identity: HELLO gets WELCOME at once, even with ``authmethods: ["ticket"]``;
- otherwise HELLO ``authmethods: ["ticket"]`` gets CHALLENGE ``ticket`` and
  AUTHENTICATE's signature (an Oro sync ticket) goes to the ``authenticator``
  the connection gave (the server's verifier; this package does not import
  it): WELCOME with ``authmethod: "ticket"``, or ABORT
  ``wamp.error.not_authorized`` and one log line with the reason;
- with tickets required and none given, a HELLO without ``ticket`` gets ABORT
  ``wamp.error.not_authorized``; a server that checks no tickets answers a
  ticket-only HELLO with ABORT ``wamp.error.no_auth_method``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred

from oro_sync.logs import clip
from oro_sync.wamp2 import messages as m

#: The in-band authentication method this router offers (WAMP-Ticket).
TICKET = "ticket"


class OpeningMixin:
    """HELLO to WELCOME (see the module docstring); needs the session's
    ``router``, ``conn``, ``identity``, ``authenticator``, ``authenticated``,
    ``services``, ``send``."""

    #: The HELLO waiting for AUTHENTICATE (and then for the verifier).
    _pending_hello: Any = None
    _verifying = False

    def hello(self, msg: m.Hello) -> None:
        realms = self.router.realms
        if realms is not None and msg.realm not in realms:
            self._log.warn("{peer} asked for unknown realm {realm}", peer=self.conn.peer, realm=clip(msg.realm))
            self.send(m.abort(m.ERROR_NO_SUCH_REALM, f"no realm {msg.realm}"))
            self.conn.close(1000, "no such realm")
            return
        methods = msg.details.get("authmethods")
        wants_ticket = isinstance(methods, list) and TICKET in methods
        if self.authenticated and (not wants_ticket or self._ticket_given()):
            self.welcome(msg)  # the URL ticket (or none needed, none offered)
        elif wants_ticket and self.authenticator is not None:
            self._pending_hello = msg
            self.send(m.challenge(TICKET))
        elif wants_ticket and "anonymous" in methods and self.authenticated:
            self.welcome(msg)
        elif wants_ticket:
            self.refuse(m.ERROR_NO_AUTH_METHOD, "this server checks no tickets")
        else:
            self.refuse(m.ERROR_NOT_AUTHORIZED, 'a ticket is required (authmethods: ["ticket"])')

    def _ticket_given(self) -> bool:
        """The handshake's URL ticket already said who this is."""
        identity = self.identity
        return not identity.anonymous or identity.backend

    def authenticate(self, msg: m.Authenticate) -> None:
        self._verifying = True
        d = maybeDeferred(self.authenticator, msg.signature, self.session_id)
        d.addCallbacks(self._verified, self._verify_failed)

    def _verified(self, outcome: Any) -> None:
        # If the peer left meanwhile, what follows is dropped by the
        # connection (and session_ready does not join a closed connection).
        self._verifying = False
        if isinstance(outcome, str):
            self.services.metrics.refused("ticket")
            self.refuse(m.ERROR_NOT_AUTHORIZED, "ticket refused", log_reason=f"ticket {outcome}")
            return
        self.identity = outcome
        self.authenticated = True
        hello, self._pending_hello = self._pending_hello, None
        self.welcome(hello)

    def _verify_failed(self, failure: Any) -> None:
        self._verifying = False
        self._log.failure("{session}: ticket check failed", failure, session=self.session_id)
        self.services.metrics.refused("authentication_unavailable")
        self.refuse(m.ERROR_NOT_AUTHORIZED, "authentication is unavailable")

    def refuse(self, reason_uri: str, message: str, log_reason: str | None = None) -> None:
        """End the opening with ABORT ``reason_uri`` (one log line, never the ticket)."""
        self._log.warn("refusing {peer} ({session}): {why}", peer=self.conn.peer,
                       session=self.session_id, why=log_reason or message)
        self.send(m.abort(reason_uri, message))
        self.conn.close(1000, message)

    def welcome(self, msg: m.Hello) -> None:
        self.established = True
        self.realm = msg.realm
        identity = self.identity
        details = {
            "realm": msg.realm,
            "authid": identity.username,
            "authrole": "anonymous" if identity.anonymous else "user",
            "authmethod": TICKET if self._ticket_given() else "anonymous",
            "authprovider": "oro-sync",
            "roles": {
                "broker": {"features": {"publisher_exclusion": True,
                                        "subscriber_blackwhite_listing": True}},
                "dealer": {"features": {}},
            },
        }
        self.send(m.welcome(int(self.session_id), details))
        self.conn.session_ready()

