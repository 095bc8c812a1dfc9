"""A WAMP v1 session: what one autobahn.js 0.8 or Oro PHP client may do.

It speaks WAMP v1 over an :class:`~oro_sync.wamp.contract.IConnection` and
the core's types: WELCOME on open, then each text message is parsed
(:mod:`oro_sync.wamp1.messages`) and dispatched — PREFIX to its own table,
CALL to the server's procedures, SUBSCRIBE / UNSUBSCRIBE / PUBLISH to the
pub/sub policy.  Events reach the peer as pre-framed bytes through
``send_frame`` (the connection's per-turn queue), never through here.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.logger import LogLevel
from zope.interface import implementer

from oro_sync.core.frames import text_frame
from oro_sync.core.payload import Payload
from oro_sync.core.policy import SubscriptionDenied
from oro_sync.core.publish import PublishRequest, new_id
from oro_sync.core.session import ISession, new_session_id
from oro_sync.logs import Logger, RepeatLimiter, clip
from oro_sync.wamp.contract import IWampSession, SessionBase, SessionServices, own_procedure
from oro_sync.wamp.rpc import error_triple
from oro_sync.wamp1 import messages as m

#: The WebSocket subprotocol of WAMP v1.
SUBPROTOCOL = "wamp"
#: Longest prefix + URI of one PREFIX (256 of them per connection by default).
MAX_PREFIX_CHARS = 2048


_repeats = RepeatLimiter(Logger())  # keyed by session id: one line per client and interval


def encode_event(topic: Any, event: Any, publication_id: int = 0) -> bytes:
    """The WAMP v1 EVENT frame for ``event`` on ``topic`` (WAMP v1 has no
    publication ids)."""
    if type(event) is Payload:  # from a WAMP v2 publisher
        event = event.v1_value()
    return text_frame(m.event(topic.uri, event))


@implementer(ISession, IWampSession)
class Wamp1Session(SessionBase):
    """One client's WAMP v1 session (the core's ISession of that client)."""

    _log = Logger()
    protocol = SUBPROTOCOL
    encoder = staticmethod(encode_event)
    ready_timeout_reason = "no WELCOME"
    new_session_id = staticmethod(new_session_id)

    def __init__(self, conn: Any, services: SessionServices, session_id: str, identity: Any):
        super().__init__(conn, services, session_id, identity)
        self.prefixes: dict[str, str] = {}

    # -- IWampSession --------------------------------------------------------------

    def open(self) -> None:
        self.conn.send_message(m.welcome(self.session_id, self.services.server_ident).encode("utf-8"))
        self.conn.session_ready()

    def closed(self) -> None:
        pass

    def receive(self, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self._reject("binary messages are not WAMP v1", m.CLOSE_UNSUPPORTED_DATA)
            return
        try:
            msg = m.parse_message(payload)
        except m.ProtocolError as e:
            if e.call_id is not None:
                _repeats.info(("bad CALL", self.session_id), "{session} sent a bad CALL: {why}",
                              session=self.session_id, why=e.reason)
                self._send(m.call_error(e.call_id, m.ERROR_INVALID_CALL, e.reason))
            else:
                self._reject(e.reason, e.code)
            return
        kind = type(msg)
        if kind is m.Publish:
            self._publish(msg)
        elif kind is m.Subscribe:
            uri = m.resolve_curie(msg.topic_uri, self.prefixes)
            if self._uri_ok(uri):
                self._subscribe(uri)
        elif kind is m.Unsubscribe:
            uri = m.resolve_curie(msg.topic_uri, self.prefixes)
            if self._uri_ok(uri):
                self.services.policy.unsubscribe(self, uri)
        elif kind is m.Call:
            self._call(msg)
        else:
            self._prefix(msg)

    def _uri_ok(self, uri: str) -> bool:
        """Topic URIs are bounded: a connection's subscriptions must not hold
        megabytes (WAMP v1 has no error for SUBSCRIBE, so the connection closes)."""
        limit = self.services.max_uri_length
        if limit and len(uri) > limit:
            self._reject(f"topic URIs may hold at most {limit} characters", m.CLOSE_POLICY_VIOLATION)
            return False
        return True

    # -- pub/sub ---------------------------------------------------------------------

    def _subscribe(self, uri: str) -> None:
        try:
            self.services.policy.subscribe(self, uri)
        except SubscriptionDenied as e:
            # WAMP v1 has no answer to SUBSCRIBE; Oro optionally sends its text.
            if e.notice is not None:
                self.send_frame(text_frame(e.notice))

    def _publish(self, msg: m.Publish) -> None:
        if not self.conn.allow_publish():
            return
        uri = m.resolve_curie(msg.topic_uri, self.prefixes)
        if not self._uri_ok(uri):
            return
        request = PublishRequest(uri, msg.event,
                                 self.session_id, new_id(), exclude_me=msg.exclude_me,
                                 exclude_flag=msg.flag_truthy, exclude=msg.exclude,
                                 eligible=msg.eligible)
        self.services.policy.publish(self, request)

    # -- PREFIX and CALL -----------------------------------------------------------

    def _prefix(self, msg: m.Prefix) -> None:
        if len(msg.prefix) + len(msg.uri) > MAX_PREFIX_CHARS:
            self._reject(f"a PREFIX may hold at most {MAX_PREFIX_CHARS} characters", m.CLOSE_POLICY_VIOLATION)
            return
        limit = self.services.max_prefixes
        if msg.prefix not in self.prefixes and limit and len(self.prefixes) >= limit:
            self._reject(f"at most {limit} prefixes per connection", m.CLOSE_POLICY_VIOLATION)
            return
        self.prefixes[msg.prefix] = msg.uri

    def _call(self, msg: m.Call) -> None:
        uri = m.resolve_curie(msg.proc_uri, self.prefixes)
        limit = self.services.max_uri_length
        if limit and len(uri) > limit:
            self._send(m.call_error(msg.call_id, m.ERROR_INVALID_CALL,
                                    f"procedure URIs may hold at most {limit} characters"))
            return
        proc = own_procedure(self.conn, self.services, uri)
        if proc is None:
            self._send(m.call_error(msg.call_id, m.ERROR_NO_SUCH_RPC_ENDPOINT,
                                    f"no procedure registered for URI {uri}"))
            return
        d = maybeDeferred(proc, *msg.args)
        d.addCallbacks(self._call_result, self._call_failed,
                       callbackArgs=(msg.call_id,), errbackArgs=(msg.call_id, uri))

    def _call_result(self, result: Any, call_id: str) -> None:
        try:
            text = m.call_result(call_id, result)
        except (TypeError, ValueError) as e:
            self._log.error("result of call {call} is not JSON: {why}", call=call_id, why=str(e))
            text = m.call_error(call_id, m.ERROR_INTERNAL, "procedure result is not serializable to JSON")
        self._send(text)

    def _call_failed(self, failure: Any, call_id: str, uri: str) -> None:
        uri_, desc, details = error_triple(failure.value)
        if uri_ == m.ERROR_INTERNAL:
            self._log.failure("procedure {uri} failed", failure, uri=clip(uri), level=LogLevel.error)
        try:
            text = m.call_error(call_id, uri_, desc, details)
        except (TypeError, ValueError):
            text = m.call_error(call_id, m.ERROR_INTERNAL, "error details are not serializable to JSON")
        self._send(text)

    # -- output ------------------------------------------------------------------------

    def _send(self, text: str) -> None:
        self.conn.send_message(text.encode("utf-8"))

    def _reject(self, reason: str, code: int) -> None:
        self._log.warn("closing {peer} ({session}) with {code}: {why}",
                       peer=self.conn.peer, session=self.session_id, code=code, why=reason)
        self.conn.close(code, reason)
