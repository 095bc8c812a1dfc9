"""WAMP v2 sessions on the same hub, topics and handlers as WAMP v1.

A v2 client is the same kind of connection as a v1 client (the WAMP v1
protocol class negotiates ``wamp.2.json`` and hands its messages here), and
the same :class:`~oro_sync.interfaces.IPubSubPolicy` decides what its
SUBSCRIBE and PUBLISH do: Oro's routes, topic handlers, ``SecuredTopic`` and
the backend-only publish rule apply to v2 clients unchanged, and a v2 client
and a v1 browser on the same URI share one topic.

What is v2's own:

- the session opens with HELLO (any realm unless the factory names some;
  there is one router, so a realm does not separate topics) and the identity
  comes from the WebSocket handshake (the Oro ticket), as for v1;
- SUBSCRIBE is answered with SUBSCRIBED, or with ERROR
  ``wamp.error.not_authorized`` when the topic is unrouted or a handler
  refused it; only ``match: exact`` is offered;
- PUBLISH follows the broker's ``exclude_me`` (default true), ``exclude`` and
  ``eligible`` options, and ``acknowledge`` gets PUBLISHED, or ERROR when the
  publish was refused;
- CALL reaches the procedures registered on the server (the 0.8-style RPC
  API) or a client's registration (:mod:`oro_sync.wamp2.dealer`; who may
  register is the factory's ``wamp2Registrations`` rule).

:class:`Wamp2Router` holds what all v2 sessions of a factory share: one
subscription id per topic, so that every v2 subscriber of a topic gets the
same EVENT frame, built once per publish.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

from twisted.internet.defer import maybeDeferred

from oro_sync.core.frames import text_frame
from oro_sync.core.payload import from_v2, to_v2
from oro_sync.logs import Logger, clip
from oro_sync.wamp1 import messages as m1
from oro_sync.wamp1.rpc import error_triple
from oro_sync.wamp2 import messages as m
from oro_sync.wamp2.dealer import ERROR_PROCEDURE_EXISTS, REGISTRATION_RULES, Dealer, may_register

#: The subprotocol of WAMP v2 with the JSON serializer.
SUBPROTOCOL = "wamp.2.json"


#: A session id no session has (core ids are never empty): "deliver to nobody".
NOBODY = ""

_EVENT_PREFIX = b"[36,"


def event_subscription(frame: bytes) -> int | None:
    """The subscription id of a v2 EVENT frame (None for any other frame)."""
    n = frame[1] & 0x7F if len(frame) > 1 else 0
    start = 2 if n < 126 else 4 if n == 126 else 10
    if frame[start:start + 4] != _EVENT_PREFIX:
        return None
    end = frame.find(b",", start + 4)
    try:
        return int(frame[start + 4:end])
    except ValueError:
        return None


def new_id() -> int:
    """A random WAMP id in [1, 2^53] (session, publication, subscription ids)."""
    return secrets.randbelow(m.MAX_ID) + 1


class Wamp2Router:
    """State shared by every WAMP v2 session of one factory."""

    def __init__(self, hub: Any, realms: frozenset[str] | None = None, registrations: str = "backends"):
        if registrations not in REGISTRATION_RULES:
            raise ValueError(f"registrations must be one of {', '.join(REGISTRATION_RULES)}")
        self.hub = hub
        #: Realms a client may join (None: any).
        self.realms = realms
        #: Who may REGISTER procedures (see oro_sync.wamp2.dealer).
        self.registration_rule = registrations
        self.dealer = Dealer(new_id)
        self._subscription_ids: dict[str, int] = {}
        #: The publication id of the publish being delivered (None: a new id per event).
        self.publication: int | None = None
        #: The v2 sessions' encoder: one identity, so v2 sessions share frames.
        self.encoder: Callable[[Any, Any], bytes] = self._encode
        hub.topics.on_removed.append(self._topic_removed)

    def subscription_id(self, uri: str) -> int:
        sub = self._subscription_ids.get(uri)
        if sub is None:
            sub = self._subscription_ids[uri] = new_id()
        return sub

    def _topic_removed(self, topic: Any) -> None:
        self._subscription_ids.pop(topic.uri, None)

    def _encode(self, topic: Any, event: Any) -> bytes:
        args, kwargs = to_v2(event)
        publication = self.publication or new_id()
        return text_frame(m.event(self.subscription_id(topic.uri), publication, args, kwargs))


class Wamp2Session:
    """One connection's WAMP v2 session; ``conn`` is the core's ISession and
    the transport (the WAMP v1 protocol object in its v2 mode)."""

    _log = Logger()

    def __init__(self, conn: Any, router: Wamp2Router):
        self.conn = conn
        self.router = router
        self.established = False
        self.realm = ""
        #: subscription id -> topic URI, for this session's UNSUBSCRIBE.
        self.subscriptions: dict[int, str] = {}
        #: The dealer's indexes (oro_sync.wamp2.dealer): registration ids held,
        #: calls in flight as caller (by CALL request id) and as callee (by
        #: invocation id).
        self.registrations: set[int] = set()
        self.calls: dict[int, Any] = {}
        self.invocations: dict[int, Any] = {}

    # -- incoming ---------------------------------------------------------------

    def on_message(self, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self.abort("binary messages are not wamp.2.json", 1003)
            return
        try:
            msg = m.parse_message(payload)
        except m.ProtocolError as e:
            self.abort(e.reason)
            return
        except m.InvalidRequest as e:
            if not self.established:
                self.abort(e.reason)
                return
            self._log.info("{session} sent a bad request: {why}", session=self.conn.session_id, why=e.reason)
            self.send(m.error(e.request_type, e.request_id, e.error_uri, [e.reason]))
            return
        kind = type(msg)
        if not self.established:
            if kind is m.Hello:
                self.hello(msg)
            elif kind is m.Abort:
                self.conn.close(1000, "aborted by the client")
            else:
                self.abort(f"{kind.__name__.upper()} before HELLO")
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

    def hello(self, msg: m.Hello) -> None:
        realms = self.router.realms
        if realms is not None and msg.realm not in realms:
            self._log.warn("{peer} asked for unknown realm {realm}", peer=self.conn.peer, realm=clip(msg.realm))
            self.send(m.abort(m.ERROR_NO_SUCH_REALM, f"no realm {msg.realm}"))
            self.conn.close(1000, "no such realm")
            return
        self.established = True
        self.realm = msg.realm
        identity = self.conn.identity
        details = {
            "realm": msg.realm,
            "authid": identity.username,
            "authrole": "anonymous" if identity.anonymous else "user",
            "authmethod": "ticket" if (not identity.anonymous or identity.backend) else "anonymous",
            "authprovider": "oro-sync",
            "roles": {
                "broker": {"features": {"publisher_exclusion": True,
                                        "subscriber_blackwhite_listing": True}},
                "dealer": {"features": {}},
            },
        }
        self.send(m.welcome(int(self.conn.session_id), details))
        self.conn.wamp2Opened()

    def subscribe(self, msg: m.Subscribe) -> None:
        conn = self.conn
        # A handler's onSubscribe may already write to this peer (the current
        # state, say), and SUBSCRIBED must reach the client before any EVENT of
        # its subscription: hold the peer's output while the handlers run.
        held = conn.holdOutput()
        try:
            if msg.topic not in conn.subscriptions:
                conn.factory.pubsub.subscribe(conn, msg.topic)
        finally:
            accepted = msg.topic in conn.subscriptions
            if accepted:
                sub = self.router.subscription_id(msg.topic)
                self.subscriptions[sub] = msg.topic
                answer = m.subscribed(msg.request_id, sub)
            else:
                # Events for a subscription the client will never know.
                known = self.subscriptions
                held = [f for f in held if event_subscription(f) in known or event_subscription(f) is None]
                answer = m.error(m.SUBSCRIBE, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                                 [f"subscription to {msg.topic} refused"])
            conn.releaseOutput([])
            self.send(answer)
            conn.releaseOutput(held)

    def unsubscribe(self, msg: m.Unsubscribe) -> None:
        uri = self.subscriptions.pop(msg.subscription, None)
        if uri is None:
            self.send(m.error(m.UNSUBSCRIBE, msg.request_id, m.ERROR_NO_SUCH_SUBSCRIPTION))
            return
        self.conn.factory.pubsub.unsubscribe(self.conn, uri)
        self.send(m.unsubscribed(msg.request_id))

    def publish(self, msg: m.Publish) -> None:
        conn = self.conn
        if conn.factory.limits.publish_rate and not conn._take_token():
            if msg.acknowledge:
                self.send(m.error(m.PUBLISH, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                                  ["publishing too fast"]))
            return
        me = conn.session_id
        exclude = None
        if msg.exclude is not None:
            exclude = tuple(str(x) for x in msg.exclude) + ((me,) if msg.exclude_me else ())
        eligible = tuple(str(x) for x in msg.eligible) if msg.eligible is not None else None
        if eligible == ():
            # v2: an empty eligible list means nobody.  The Ratchet/Oro
            # profile reads an empty list as everyone, so name a session id
            # that no session has.
            eligible = (NOBODY,)
        event = from_v2(msg.args, msg.kwargs)
        # The v1 PUBLISH form the policies read: exclude_me for the Autobahn
        # profile, flag_truthy for the Ratchet/Oro profile.
        request = m1.Publish(msg.topic, event, exclude_me=msg.exclude_me, flag_truthy=msg.exclude_me,
                             exclude=exclude, eligible=eligible)
        publication = new_id()
        router = self.router
        outer, router.publication = router.publication, publication
        try:
            accepted = conn.factory.pubsub.publish(conn, msg.topic, request)
        finally:
            router.publication = outer
        if msg.acknowledge:
            if accepted is False:
                self.send(m.error(m.PUBLISH, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                                  [f"publish to {msg.topic} refused"]))
            else:
                self.send(m.published(msg.request_id, publication))

    def register(self, msg: m.Register) -> None:
        conn = self.conn
        if not may_register(self.router.registration_rule, conn.identity):
            self.send(m.error(m.REGISTER, msg.request_id, m.ERROR_NOT_AUTHORIZED,
                              [f"{conn.identity.username} may not register procedures"]))
        elif self._server_procedure(msg.procedure) is not None:
            self.send(m.error(m.REGISTER, msg.request_id, ERROR_PROCEDURE_EXISTS,
                              [f"{msg.procedure} is a procedure of the server"]))
        else:
            self.send(self.router.dealer.register(self, msg))

    def closed(self) -> None:
        """The session ended: its registrations and calls in flight go."""
        self.router.dealer.session_closed(self)

    def _server_procedure(self, uri: str) -> Any:
        conn = self.conn
        proc = conn.rpc_registry.lookup(uri) if conn.rpc_registry is not None else None
        return proc if proc is not None else conn.factory.rpc.lookup(uri)

    def call(self, msg: m.Call) -> None:
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
        d = maybeDeferred(proc, *(msg.args or ()))
        d.addCallbacks(self._call_result, self._call_failed,
                       callbackArgs=(msg.request_id,), errbackArgs=(msg.request_id, msg.procedure))

    def _call_result(self, value: Any, request_id: int) -> None:
        try:
            text = m.result(request_id, [value], None)
        except (TypeError, ValueError) as e:
            self._log.error("result of call {call} is not JSON: {why}", call=request_id, why=str(e))
            text = m.error(m.CALL, request_id, m.ERROR_RUNTIME, ["procedure result is not serializable"])
        self.send(text)

    def _call_failed(self, failure: Any, request_id: int, uri: str) -> None:
        error_uri, desc, details = error_triple(failure.value)
        if error_uri == m1.ERROR_INTERNAL:
            self._log.failure("procedure {uri} failed", failure, uri=uri)
            error_uri = m.ERROR_RUNTIME
        args = [desc] if details is None else [desc, details]
        try:
            text = m.error(m.CALL, request_id, error_uri if m.valid_uri(error_uri) else m.ERROR_RUNTIME, args)
        except (TypeError, ValueError):
            text = m.error(m.CALL, request_id, m.ERROR_RUNTIME, [desc])
        self.send(text)

    # -- outgoing ---------------------------------------------------------------

    def send(self, text: str) -> None:
        self.conn.sendWampText(text)

    def abort(self, reason: str, code: int = 1002) -> None:
        """Abort the session for a protocol violation: ABORT, then close."""
        self._log.warn("closing {peer} ({session}): {why}", peer=self.conn.peer,
                       session=self.conn.session_id, why=reason)
        self.send(m.abort(m.ERROR_PROTOCOL_VIOLATION, reason))
        self.conn.close(code, reason[:120])
