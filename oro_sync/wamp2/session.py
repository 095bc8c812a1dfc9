"""WAMP v2 sessions on the same hub, topics and handlers as WAMP v1.

A v2 client connects like a v1 client (the connection negotiates
``wamp.2.json`` and hands its messages here), and the same
:class:`~oro_sync.core.policy.IPubSubPolicy` decides what its SUBSCRIBE and
PUBLISH do: Oro's routes, topic handlers, ``SecuredTopic`` and the
backend-only publish rule apply to v2 clients unchanged, and a v2 client
and a v1 browser on the same URI share one topic.

What is v2's own:

- the session opens with HELLO (any realm unless the server names some;
  there is one router, so a realm does not separate topics) and the identity
  comes from the WebSocket handshake (the Oro ticket), as for v1, or from
  WAMP-Ticket: HELLO ``authmethods: ["ticket"]`` → CHALLENGE → AUTHENTICATE
  with the ticket, checked by the ``authenticator`` the connection gives
  (this package knows nothing of tickets);
- messages are JSON, MessagePack or CBOR (:mod:`oro_sync.wamp2.serializers`),
  by the negotiated subprotocol;
- SUBSCRIBE is answered with SUBSCRIBED, or with ERROR
  ``wamp.error.not_authorized`` when the policy refuses it
  (:class:`~oro_sync.core.policy.SubscriptionDenied`); only ``match: exact``;
- PUBLISH follows the broker's ``exclude_me`` (default true), ``exclude`` and
  ``eligible`` options, and ``acknowledge`` gets PUBLISHED (with the
  publication id every EVENT of it carries), or ERROR when refused;
- CALL reaches the server's procedures (the 0.8-style RPC API) or a client's
  registration (:mod:`oro_sync.wamp2.dealer`), with ``timeout`` and
  progressive results; ``wamp.*`` procedures and topics are the session
  meta API (:mod:`oro_sync.wamp2.meta`), for the sessions the router's
  ``may_use_meta`` admits.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import TimeoutError, maybeDeferred
from twisted.logger import LogLevel
from zope.interface import implementer

from oro_sync.core.payload import from_v2
from oro_sync.core.policy import SubscriptionDenied
from oro_sync.core.publish import PublishRequest, new_id
from oro_sync.core.session import ISession
from oro_sync.logs import Logger, RepeatLimiter, clip
from oro_sync.wamp.contract import IWampSession, SessionBase, SessionServices, own_procedure
from oro_sync.wamp.rpc import ERROR_INTERNAL, error_triple
from oro_sync.wamp2 import messages as m
from oro_sync.wamp2.dealer import ERROR_PROCEDURE_EXISTS, call_options
from oro_sync.wamp2.meta import EVENTS as META_EVENTS, MetaError, is_meta
from oro_sync.wamp2.opening import OpeningMixin
from oro_sync.wamp2.router import Wamp2Router
from oro_sync.wamp2.serializers import JSON, SerializationError, Serializer

#: The subprotocol of WAMP v2 with the JSON serializer.
SUBPROTOCOL = "wamp.2.json"

#: A session id no session has (core ids are never empty): "deliver to nobody".
NOBODY = ""


_repeats = RepeatLimiter(Logger())  # keyed by session id: one line per client and interval


def _new_session_id() -> str:
    return str(new_id())  # v2 session ids are integers; the core's are strings


@implementer(ISession, IWampSession)
class Wamp2Session(OpeningMixin, SessionBase):
    """One client's WAMP v2 session (the core's ISession of that client)."""

    _log = Logger()
    protocol = SUBPROTOCOL
    #: The connection may let it through the upgrade without a URL ticket.
    in_band_auth = True
    new_session_id = staticmethod(_new_session_id)

    def __init__(self, conn: Any, services: SessionServices, router: Wamp2Router,
                 session_id: str, identity: Any, serializer: Serializer = JSON,
                 authenticator: Any = None, authenticated: bool = True):
        """``authenticator(ticket, session_id)`` returns a Deferred that fires
        with the identity, or with a str (the refusal reason, for the log);
        None when the server checks no tickets.  ``authenticated`` False: the
        handshake carried no ticket and one is required, so HELLO must
        authenticate with WAMP-Ticket."""
        super().__init__(conn, services, session_id, identity)
        self.router = router
        self.serializer = serializer
        if serializer is not JSON:  # the class says wamp.2.json (fewer per-session attributes)
            self.protocol = serializer.subprotocol
        self.encoder = router.encoders[serializer.subprotocol]
        self.authenticator = authenticator
        self.authenticated = authenticated
        # _pending_hello (the HELLO waiting for AUTHENTICATE) and _verifying
        # stay the mixin's class defaults until WAMP-Ticket is used.
        self.established = False
        self.realm = ""
        #: subscription id -> topic URI, for this session's UNSUBSCRIBE.
        self.by_subscription_id: dict[int, str] = {}
        #: The dealer's indexes (oro_sync.wamp2.dealer): registration ids held,
        #: calls in flight as caller (by CALL request id) and as callee (by
        #: invocation id).
        self.registrations: set[int] = set()
        self.calls: dict[int, Any] = {}
        self.invocations: dict[int, Any] = {}

    # -- IWampSession -------------------------------------------------------------

    def open(self) -> None:
        """Wait for HELLO (the connection closes if it does not come in time)."""

    @property
    def ready_timeout_reason(self) -> str:
        return "no AUTHENTICATE" if self._pending_hello is not None else "no HELLO"

    def receive(self, payload: bytes, is_binary: bool) -> None:
        serializer = self.serializer
        if is_binary != serializer.binary:
            self.abort(f"{'binary' if is_binary else 'text'} messages are not {serializer.subprotocol}",
                       1003)
            return
        try:
            msg = m.parse_value(serializer.decode(payload), self.services.max_uri_length)
        except SerializationError as e:
            self.abort(e.reason)
            return
        except m.ProtocolError as e:
            self.abort(e.reason)
            return
        except m.InvalidRequest as e:
            if not self.established:
                self.abort(e.reason)
                return
            _repeats.info(("bad request", self.session_id), "{session} sent a bad request: {why}",
                          session=self.session_id, why=e.reason)
            self.send(m.error(e.request_type, e.request_id, e.error_uri, [e.reason]))
            return
        kind = type(msg)
        if not self.established:
            if kind is m.Hello and self._pending_hello is None:
                self.hello(msg)
            elif kind is m.Authenticate and self._pending_hello is not None and not self._verifying:
                self.authenticate(msg)
            elif kind is m.Abort:
                self.conn.close(1000, "aborted by the client")
            else:
                when = "before WELCOME" if self._pending_hello is not None else "before HELLO"
                self.abort(f"{kind.__name__.upper()} {when}")
            return
        if kind is m.Publish:
            self.publish(msg)
        elif kind is m.Subscribe:
            self.subscribe(msg)
        elif kind is m.Unsubscribe:
            self.unsubscribe(msg)
        elif kind is m.Call:
            self.call(msg)
        elif kind is m.Register:
            self.register(msg)
        elif kind is m.Unregister:
            self.send(self.router.dealer.unregister(self, msg))
        elif kind is m.Cancel:
            self.router.dealer.cancel(self, msg)
        elif kind is m.Yield:
            self.router.dealer.yielded(self, msg)
        elif kind is m.Error:
            self.router.dealer.failed(self, msg)
        elif kind is m.Goodbye:
            self.send(m.goodbye(m.CLOSE_GOODBYE_AND_OUT))
            self.conn.close(1000, "goodbye")
        elif kind is m.Abort:
            self.conn.close(1000, "aborted by the client")
        else:  # HELLO
            self.abort("HELLO in an established session")

    def subscribe(self, msg: m.Subscribe) -> None:
        conn, router = self.conn, self.router
        if msg.topic in self.subscriptions:  # already subscribed: the same subscription again
            self.send(m.subscribed(msg.request_id, router.subscription_id(msg.topic)))
            return
        if is_meta(msg.topic):
            self._subscribe_meta(msg)
            return
        # A handler's onSubscribe may already write to this peer (the current
        # state, say), and SUBSCRIBED must reach the client before any EVENT of
        # its subscription: hold the peer's output while the handlers run.
        held = conn.hold_output()
        refusal: SubscriptionDenied | None = None
        router.watch(msg.topic)
        try:
            self.services.policy.subscribe(self, msg.topic)
        except SubscriptionDenied as e:
            refusal = e
        finally:
            watched = router.watch(None)
            if refusal is None and msg.topic in self.subscriptions:
                sub = router.subscription_id(msg.topic)
                self.by_subscription_id[sub] = msg.topic
                answer = m.subscribed(msg.request_id, sub)
            else:
                # Events for a subscription the client will never know.
                if watched:
                    dropped = {id(w) for w in watched}  # by identity: one frame per topic and publish
                    held = [f for f in held if id(f) not in dropped]
                answer = m.error(m.SUBSCRIBE, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                                 [f"subscription to {msg.topic} refused"])
            conn.release_output([])
            self.send(answer)
            conn.release_output(held)

    #: Whether this session was refused the meta API before (logged once).
    _meta_refused = False

    def _first_meta_refusal(self) -> bool:
        """True the first time: a user asking again and again is answered
        each time, but logged once per session."""
        first, self._meta_refused = not self._meta_refused, True
        return first

    def _subscribe_meta(self, msg: m.Subscribe) -> None:
        """The meta events (wamp.session.on_join...): backends only, no handlers."""
        if msg.topic not in META_EVENTS or not self.router.may_use_meta(self.identity):
            if self._first_meta_refusal():
                self._log.info("{user} ({session}) refused meta topic {topic}", user=self.identity.username,
                               session=self.session_id, topic=clip(msg.topic))
            self.send(m.error(m.SUBSCRIBE, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                              [f"subscription to {msg.topic} refused"]))
            return
        try:
            self.router.hub.subscribe(self, msg.topic)
        except SubscriptionDenied as e:
            self.send(m.error(m.SUBSCRIBE, msg.request_id, m.ERROR_NOT_AUTHORIZED, [str(e)]))
            return
        sub = self.router.subscription_id(msg.topic)
        self.by_subscription_id[sub] = msg.topic
        self.send(m.subscribed(msg.request_id, sub))

    def unsubscribe(self, msg: m.Unsubscribe) -> None:
        uri = self.by_subscription_id.pop(msg.subscription, None)
        if uri is None:
            self.send(m.error(m.UNSUBSCRIBE, msg.request_id, m.ERROR_NO_SUCH_SUBSCRIPTION))
            return
        self.services.policy.unsubscribe(self, uri)
        self.send(m.unsubscribed(msg.request_id))

    def publish(self, msg: m.Publish) -> None:
        if not self.conn.allow_publish():
            if msg.acknowledge:
                self.send(m.error(m.PUBLISH, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                                  ["publishing too fast"]))
            return
        me = self.session_id
        exclude = None
        if msg.exclude is not None:
            exclude = tuple(str(x) for x in msg.exclude) + ((me,) if msg.exclude_me else ())
        eligible = tuple(str(x) for x in msg.eligible) if msg.eligible is not None else None
        if eligible == ():
            # v2: an empty eligible list means nobody.  The Ratchet/Oro
            # profile reads an empty list as everyone, so name a session id
            # that no session has.
            eligible = (NOBODY,)
        request = PublishRequest(msg.topic, from_v2(msg.args, msg.kwargs), me, new_id(),
                                 exclude_me=msg.exclude_me, exclude_flag=msg.exclude_me,
                                 exclude=exclude, eligible=eligible)
        accepted = self.services.policy.publish(self, request)
        if msg.acknowledge:
            if accepted is False:
                self.send(m.error(m.PUBLISH, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                                  [f"publish to {msg.topic} refused"]))
            else:
                self.send(m.published(msg.request_id, request.publication_id))

    def register(self, msg: m.Register) -> None:
        if not self.router.may_register(self.identity):
            self.send(m.error(m.REGISTER, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                              [f"{self.identity.username} may not register procedures"]))
        elif self._server_procedure(msg.procedure) is not None:
            self.send(m.error(m.REGISTER, msg.request_id, ERROR_PROCEDURE_EXISTS,
                              [f"{msg.procedure} is a procedure of the server"]))
        else:
            self.send(self.router.dealer.register(self, msg))

    def closed(self) -> None:
        """The session ended: its registrations and calls in flight go."""
        self.router.dealer.session_closed(self)

    def _server_procedure(self, uri: str) -> Any:
        return own_procedure(self.conn, self.services, uri)

    def call(self, msg: m.Call) -> None:
        if is_meta(msg.procedure):
            self._call_meta(msg)
            return
        proc = self._server_procedure(msg.procedure)
        if proc is None:
            if not self.router.dealer.call(self, msg):
                self.send(m.error(m.CALL, msg.request_id, m.ERROR_NO_SUCH_PROCEDURE,
                                  [f"no procedure registered for {msg.procedure}"]))
            return
        if msg.kwargs:
            self.send(m.error(m.CALL, msg.request_id, m.ERROR_INVALID_ARGUMENT,
                              ["this procedure takes positional arguments only"]))
            return
        options = call_options(msg)
        if isinstance(options, str):
            self.send(m.error(m.CALL, msg.request_id, m.ERROR_INVALID_ARGUMENT, [options]))
            return
        d = maybeDeferred(proc, *(msg.args or ()))
        if options[0]:  # timeout: the procedure's Deferred is cancelled
            d.addTimeout(options[0], self.conn.clock)
        d.addCallbacks(self._call_result, self._call_failed,
                       callbackArgs=(msg.request_id,), errbackArgs=(msg.request_id, msg.procedure))

    def _call_meta(self, msg: m.Call) -> None:
        proc = self.router.meta.procedure(msg.procedure)
        if proc is None:
            self.send(m.error(m.CALL, msg.request_id, m.ERROR_NO_SUCH_PROCEDURE,
                              [f"no procedure registered for {msg.procedure}"]))
            return
        if not self.router.may_use_meta(self.identity):
            if self._first_meta_refusal():
                self._log.info("{user} ({session}) may not call {uri}", user=self.identity.username,
                               session=self.session_id, uri=clip(msg.procedure))
            self.send(m.error(m.CALL, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                              [f"{msg.procedure} is for backends"]))
            return
        # maybeDeferred: a cluster-wide presence may answer later.
        d = maybeDeferred(proc, msg.args or [], msg.kwargs or {})
        d.addCallbacks(self._call_result, self._meta_failed,
                       callbackArgs=(msg.request_id,), errbackArgs=(msg.request_id, msg.procedure))

    def _meta_failed(self, failure: Any, request_id: int, uri: str) -> None:
        if failure.check(MetaError):
            self.send(m.error(m.CALL, request_id, failure.value.uri, [failure.value.message]))
        else:
            self._call_failed(failure, request_id, uri)

    def _call_result(self, value: Any, request_id: int) -> None:
        try:
            data = self.serializer.encode(m.result(request_id, [value], None))
        except Exception as e:  # each format has its own error types
            self._log.error("result of call {call} is not serializable: {why}", call=request_id, why=str(e))
            data = self.serializer.encode(m.error(m.CALL, request_id, m.ERROR_RUNTIME,
                                                  ["procedure result is not serializable"]))
        self.conn.send_message(data, self.serializer.binary)

    def _call_failed(self, failure: Any, request_id: int, uri: str) -> None:
        if failure.check(TimeoutError):
            self.send(m.error(m.CALL, request_id, m.ERROR_CANCELED, ["call timed out"]))
            return
        error_uri, desc, details = error_triple(failure.value)
        if error_uri == ERROR_INTERNAL:
            self._log.failure("procedure {uri} failed", failure, uri=clip(uri), level=LogLevel.error)
            error_uri = m.ERROR_RUNTIME
        args = [desc] if details is None else [desc, details]
        encode = self.serializer.encode
        try:
            data = encode(m.error(m.CALL, request_id, error_uri if m.valid_uri(error_uri) else m.ERROR_RUNTIME,
                                  args))
        except Exception:
            data = encode(m.error(m.CALL, request_id, m.ERROR_RUNTIME, [str(desc)]))
        self.conn.send_message(data, self.serializer.binary)

    # -- outgoing ---------------------------------------------------------------

    def encode(self, msg: list) -> Any:
        """``msg`` in this session's serializer, or None (logged) when it
        cannot be encoded there."""
        serializer = self.serializer
        try:
            return serializer.encode(msg)
        except (OverflowError, TypeError, ValueError, RecursionError) as e:
            # Client input is bounded for every serializer; this is a value
            # from the server's side: never let it cost another connection.
            self._log.error("{session}: a message of type {kind} cannot be sent in {serializer}: {why}",
                            session=self.session_id, kind=msg[0], serializer=serializer.name, why=str(e))
            return None

    def send(self, msg: list) -> None:
        data = self.encode(msg)
        if data is None:
            if msg[0] != m.RESULT:
                return
            data = self.serializer.encode(m.error(m.CALL, msg[1], m.ERROR_RUNTIME, ["result cannot be serialized"]))
        self.send_encoded(data)

    def send_encoded(self, data: Any) -> None:
        """Send what :meth:`encode` returned."""
        self.conn.send_message(data, self.serializer.binary)

    def abort(self, reason: str, code: int = 1002) -> None:
        """Abort the session for a protocol violation: ABORT, then close."""
        self._log.warn("closing {peer} ({session}): {why}", peer=self.conn.peer,
                       session=self.session_id, why=reason)
        self.send(m.abort(m.ERROR_PROTOCOL_VIOLATION, reason))
        self.conn.close(code, reason[:120])
