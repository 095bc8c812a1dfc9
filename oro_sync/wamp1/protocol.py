"""The WAMP v1 server protocol: a thin adapter between Autobahn and the core.

It negotiates the ``wamp`` subprotocol, sends WELCOME, parses each text
message with :mod:`oro_sync.wamp1.messages` and hands the result to the
factory's RPC registry and pub/sub policy.  Events reach it only as
pre-framed bytes (:meth:`send_frame`), queued in the hub's outbox and sent
once per reactor turn.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


from oro_sync.auth.origins import fix_schemeless_origin
from oro_sync.core.frames import text_frame
from oro_sync.core.outbox import PeerQueue, batches
from oro_sync.core.payload import Payload
from oro_sync.core.session import ISession, new_session_id
from oro_sync.identity import Identity
from oro_sync.logs import Logger
from oro_sync.wamp1 import messages as m
from oro_sync.wamp1.rpc import RpcRegistry, error_triple
from oro_sync.wamp2.session import SUBPROTOCOL as WAMP2, Wamp2Session, new_id

_OPEN = WebSocketServerProtocol.STATE_OPEN
#: Longest prefix + URI of one PREFIX (256 of them per connection).
MAX_PREFIX_CHARS = 2048


def _skip_pformat_unless_debug() -> None:
    """Autobahn pretty-prints its ~45 options for a debug line on every new
    connection, before the log level is checked: a fifth of the cost of a
    connection (Oro's backend opens one per publish).  Format only when
    Autobahn's debug logging is on."""
    import txaio
    from autobahn.websocket import protocol as ab_protocol

    real = getattr(ab_protocol.pformat, "_oro_sync_real", ab_protocol.pformat)

    def pformat_if_debug(obj: Any, *args: Any, **kwargs: Any) -> str:
        if txaio.get_global_log_level() in ("debug", "trace"):
            return real(obj, *args, **kwargs)
        return "<not formatted: debug logging is off>"

    pformat_if_debug._oro_sync_real = real  # type: ignore[attr-defined]
    ab_protocol.pformat = pformat_if_debug


_skip_pformat_unless_debug()


def buffered_bytes(transport: Any) -> int:
    """Bytes a Twisted transport holds for its peer (its kernel buffer aside).

    Follows wrapping transports (TLS) down to the socket's FileDescriptor;
    0 when the transport does not say.
    """
    for _ in range(4):
        if hasattr(transport, "_tempDataLen"):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        transport = getattr(transport, "transport", None)
        if transport is None:
            break
    return 0


def encode_event(topic: Any, event: Any) -> bytes:
    """The WAMP v1 EVENT frame for ``event`` on ``topic`` (one per delivery)."""
    if type(event) is Payload:  # from a WAMP v2 publisher
        event = event.v1_value()
    return text_frame(m.event(topic.uri, event))


@implementer(ISession, IPushProducer)
class WampServerProtocol(WebSocketServerProtocol):
    """One WAMP v1 client connection (AutobahnPython 0.8's API, on Autobahn 26).

    Events go through the hub's outbox: once open, ``send_frame`` is its
    peer queue's ``send`` (one list append per delivery; one ``send()`` per
    peer and reactor turn), and a session leaves its topics as soon as a
    close frame is sent.

    It is also the push producer of its transport: while the peer does not
    read and the buffers are full, Twisted calls ``pauseProducing`` on every
    further write, and a periodic check runs while paused; past the
    factory's output buffer limit the connection is aborted (a slow consumer
    must not grow the server's memory without bound).
    """

    # Not ``log``: that would shadow the txaio logger Autobahn's own code
    # uses, turning its many debug calls per connection into real events.
    _log = Logger()
    encoder = staticmethod(encode_event)

    session_id: str = ""
    identity: Any = None
    #: Per-connection RPC / pub-sub registrations (0.8 style), made lazily.
    rpc_registry: Any = None
    pubsub_registry: Any = None

    # Output flow control (see the class docstring).
    _paused_check: Any = None
    # Publish rate limiting (token bucket).
    _tokens = 0.0
    _last_refill = 0.0
    _throttled = False
    _peer_host = ""
    _origin_fixed = False
    #: True once WELCOME was sent: only then is this a session the factory knows.
    _session_open = False

    # -- connection and handshake ------------------------------------------------

    _handshaking = False

    def connectionMade(self) -> None:
        self._peer_host = getattr(self.transport.getPeer(), "host", "")
        self.factory.connectionCounted(self._peer_host, +1)
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connectionCounted(self._peer_host, -1)
        self._handshake_done()
        super().connectionLost(reason)

    def _handshake_done(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self.factory.handshakeEnded()

    def processHandshake(self) -> Any:
        if not self._origin_fixed:
            end = self.data.find(b"\r\n\r\n")
            if end >= 0:
                self._origin_fixed = True
                self.data = fix_schemeless_origin(self.data[:end]) + self.data[end:]
        return super().processHandshake()

    def onConnect(self, request: Any) -> Any:
        # Counted from a complete upgrade request (the costly part is the
        # ticket check): idle or trickling sockets cannot fill the budget of
        # pending handshakes and pause accept() for everyone; the handshake
        # timeout drops them.
        self._handshaking = True
        self.factory.handshakeStarted()
        self.prefixes: dict[str, str] = {}
        self.subscriptions: set[str] = set()
        factory = self.factory
        refusal = factory.connectionRefusal(self._peer_host)
        if refusal is not None:
            self._log.warn("refusing {peer}: {why}", peer=self.peer, why=refusal)
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, refusal)
        if factory.originPolicy is not None:
            refusal = factory.originPolicy.check(request.headers.get("origin"))
            if refusal is not None:
                self._log.warn("refusing {peer}: {why}", peer=self.peer, why=refusal)
                raise ConnectionDeny(ConnectionDeny.FORBIDDEN, refusal)
        # The client's first choice among those we speak (its order is its preference).
        protocol = next((p for p in request.protocols if p in factory.subprotocols), None)
        if protocol is None and factory.strictSubprotocol:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST,
                                 "this server speaks WAMP v1 and v2: offer the WebSocket subprotocol "
                                 + " or ".join(f'"{p}"' for p in factory.subprotocols))
        if protocol == WAMP2:
            self._wamp2 = Wamp2Session(self, factory.wamp2)
            self.encoder = factory.wamp2.encoder
            self.session_id = str(new_id())  # v2 session ids are integers
        else:
            self.session_id = new_session_id()
        if factory.authenticator is None:
            return protocol
        d = maybeDeferred(factory.authenticator.authenticate, request, self.session_id)

        def authenticated(identity: Any) -> Any:
            self.identity = identity
            return protocol

        return d.addCallback(authenticated)

    def succeedHandshake(self, res: Any) -> Any:
        # An asynchronous authenticate() may finish after the peer left or the
        # opening-handshake timeout dropped it: then there is nothing to open.
        if self.state != self.STATE_CONNECTING:
            return None
        return super().succeedHandshake(res)

    def onOpen(self) -> None:
        self._handshake_done()
        if self.identity is None:
            self.identity = Identity.anonymous_for(self.session_id)
        limits = self.factory.limits
        self._tokens = float(limits.publish_burst)
        self._last_refill = self.factory.clock.seconds()
        if limits.max_output_buffer:
            self.transport.registerProducer(self, True)
        if self._wamp2 is None:
            self.sendMessage(m.welcome(self.session_id, self.factory.serverIdent).encode("utf-8"))
        elif limits.handshake_timeout:  # a v2 session opens with the client's HELLO
            self._hello_timer = self.factory.clock.callLater(limits.handshake_timeout, self._no_hello)
        self._fast_path = self._make_fast_path()
        self._forget_handshake()
        if self._wamp2 is None:
            self._open_session()

    def _make_fast_path(self) -> Any:
        if batches(self.transport):  # the fan-out fast path
            self._queue = self.factory.hub.outbox.queue_for(self.transport)
            return self._queue.send
        return self._write_now

    def _write_now(self, data: bytes) -> None:
        """``send_frame`` for transports without an outbox queue."""
        if self._hold is not None:
            self._hold.append(data)
        else:
            self.transport.write(data)

    # Output holding: while a front end answers a request whose handlers may
    # already write (a v2 SUBSCRIBE), everything for this peer waits, in order.
    _hold: list[bytes] | None = None
    _queued_before_hold: list[bytes] | None = None

    def holdOutput(self) -> list[bytes]:
        """Keep every frame for this peer (events and other writes), in order,
        until :meth:`releaseOutput`; returns the list they go to.

        Events reach the peer queue's ``send`` (what topics hold), so the
        queue's list itself is swapped for the hold list: no check is added
        to the per-delivery path."""
        self._hold = hold = []
        if self._queue is not None:
            self._queued_before_hold, self._queue.frames = self._queue.frames, hold
        return hold

    def releaseOutput(self, held: list[bytes]) -> None:
        """Stop holding, then send ``held`` (the list, possibly filtered) in order."""
        if self._hold is not None and self._queue is not None:
            self._queue.frames = self._queued_before_hold
            self._queued_before_hold = None
        self._hold = None
        for data in held:
            if self._queue is not None:
                self._queue.send(data)
            else:
                self.transport.write(data)

    def _open_session(self) -> None:
        self.send_frame = self._fast_path
        del self._fast_path
        self._session_open = True
        self.factory.sessionOpened(self)
        self.onSessionOpen()

    # -- WAMP v2 (oro_sync.wamp2.session drives these) ---------------------------

    #: The connection's WAMP v2 session, when it negotiated wamp.2.json.
    _wamp2: Wamp2Session | None = None
    _hello_timer: Any = None

    @property
    def wamp_version(self) -> int:
        """1 or 2: the WAMP version this connection speaks."""
        return 1 if self._wamp2 is None else 2

    def wamp2Opened(self) -> None:
        """HELLO was answered with WELCOME: the session joins the hub."""
        self._cancel_hello_timer()
        self._open_session()

    def sendWampText(self, text: str) -> None:
        if self.state == _OPEN:
            self.sendMessage(text.encode("utf-8"))

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.state == _OPEN and not self._session_open:
            self._log.info("{peer} sent no HELLO: closing", peer=self.peer)
            self.close(1000, "no HELLO")

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None:
            if self._hello_timer.active():
                self._hello_timer.cancel()
            self._hello_timer = None

    #: Handshake leftovers Autobahn keeps for the connection's lifetime; an
    #: idle connection is cheaper without them (class-level None stays).
    _HANDSHAKE_LEFTOVERS = ("http_request_data", "http_response_data", "http_status_line",
                            "_wskey", "websocket_extensions")
    http_request_data = http_response_data = http_status_line = _wskey = None
    websocket_extensions: Any = None

    def _forget_handshake(self) -> None:
        pop = self.__dict__.pop
        for name in self._HANDSHAKE_LEFTOVERS:
            pop(name, None)

    def onSessionOpen(self) -> None:
        """Override to register per-connection RPC or pub/sub, as in 0.8."""

    # -- ISession -----------------------------------------------------------

    #: This session's events of the current reactor turn (see oro_sync.core.outbox).
    _queue: PeerQueue | None = None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every other write (WELCOME, RPC results, pings, the close frame)
        # goes after the events queued before it.
        if self._hold is not None:
            self._hold.append(data)
            return
        queue = self._queue
        if queue is not None and queue.frames:
            queue.flush()
        super().sendData(data, sync, chopsize)

    def send_frame(self, data: bytes) -> None:
        """Before WELCOME: nothing may be sent yet (replaced by the transport's
        ``write`` in :meth:`onOpen`)."""

    # IPushProducer: the transport tells us when its buffer is full / drained.
    def pauseProducing(self) -> None:
        # Twisted calls this on every write while the buffer is full: with the
        # outbox that is once per reactor turn for a lagging peer, whatever
        # the number of events, so the buffer is measured every time.
        if self._over_output_limit():
            self._slow_consumer()
        elif self._paused_check is None:
            # Some transports (TLS) pause only once: keep checking while paused.
            self._paused_check = self.factory.clock.callLater(1.0, self._check_paused)

    def resumeProducing(self) -> None:
        self._cancel_paused_check()

    def stopProducing(self) -> None:
        self._cancel_paused_check()

    def _check_paused(self) -> None:
        self._paused_check = None
        if self._over_output_limit():
            self._slow_consumer()
        else:
            self._paused_check = self.factory.clock.callLater(1.0, self._check_paused)

    def _cancel_paused_check(self) -> None:
        if self._paused_check is not None:
            if self._paused_check.active():
                self._paused_check.cancel()
            self._paused_check = None

    def _over_output_limit(self) -> bool:
        return buffered_bytes(self.transport) > self.factory.limits.max_output_buffer

    def _slow_consumer(self) -> None:
        self._cancel_paused_check()
        self._log.warn("{peer} ({session}) does not read its events: closing "
                       "(over {limit} bytes queued)", peer=self.peer, session=self.session_id,
                       limit=self.factory.limits.max_output_buffer)
        self.factory.stats["slow_consumers_closed"] += 1
        if self._queue is not None:
            self._queue.discard()
        self._leave()  # no more events are queued for it from now on
        self.wasClean = False
        self.wasNotCleanReason = "slow consumer: output buffer limit exceeded"
        self.dropConnection(abort=True)

    def close(self, code: int, reason: str) -> None:
        """Close with any WebSocket code (Autobahn's sendClose allows only
        1000 and 3000-4999; the failure path sends the given code)."""
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason.encode("utf-8")[:123].decode("utf-8", "ignore"))
        else:
            self._fail_connection(code, reason)

    # -- incoming messages ----------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._wamp2 is not None:
            if self.state == _OPEN:
                try:
                    self._wamp2.on_message(payload, isBinary)
                except Exception:
                    self._log.failure("{session}: failed to handle a WAMP v2 message",
                                      session=self.session_id)
                    self.close(1011, "internal error")
            return
        if not self._session_open:
            return  # we sent a close frame (Autobahn still delivers messages while CLOSING)
        if isBinary:
            self._reject("binary messages are not WAMP v1", m.CLOSE_UNSUPPORTED_DATA)
            return
        try:
            msg = m.parse_message(payload)
        except m.ProtocolError as e:
            if e.call_id is not None:
                self._log.info("{session} sent a bad CALL: {why}", session=self.session_id, why=e.reason)
                self.sendMessage(m.call_error(e.call_id, m.ERROR_INVALID_CALL, e.reason).encode("utf-8"))
            else:
                self._reject(e.reason, e.code)
            return
        try:
            self._dispatch(msg)
        except Exception:
            # A bug behind the policy must cost this connection at most, never the server.
            self._log.failure("{session}: failed to handle {kind}", session=self.session_id,
                             kind=type(msg).__name__)
            self.close(1011, "internal error")

    def _dispatch(self, msg: Any) -> None:
        kind = type(msg)
        policy = self.factory.pubsub
        if kind is m.Publish:
            if self.factory.limits.publish_rate and not self._take_token():
                return
            policy.publish(self, m.resolve_curie(msg.topic_uri, self.prefixes), msg)
        elif kind is m.Subscribe:
            policy.subscribe(self, m.resolve_curie(msg.topic_uri, self.prefixes))
        elif kind is m.Unsubscribe:
            policy.unsubscribe(self, m.resolve_curie(msg.topic_uri, self.prefixes))
        elif kind is m.Call:
            self._call(msg)
        else:
            self._prefix(msg)

    def _take_token(self) -> bool:
        """Token bucket: ``publish_rate`` per second, bursts of ``publish_burst``."""
        limits = self.factory.limits
        now = self.factory.clock.seconds()
        self._tokens = min(float(limits.publish_burst),
                           self._tokens + (now - self._last_refill) * limits.publish_rate)
        self._last_refill = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._throttled = False
            return True
        self.factory.stats["publishes_throttled"] += 1
        if not self._throttled:
            self._throttled = True
            self._log.warn("{peer} ({session}) publishes faster than {rate}/s: dropping",
                          peer=self.peer, session=self.session_id, rate=limits.publish_rate)
        return False

    def _reject(self, reason: str, code: int) -> None:
        self._log.warn("closing {peer} ({session}) with {code}: {why}",
                      peer=self.peer, session=self.session_id, code=code, why=reason)
        self.close(code, reason)

    def _prefix(self, msg: m.Prefix) -> None:
        if len(msg.prefix) + len(msg.uri) > MAX_PREFIX_CHARS:
            self._reject(f"a PREFIX may hold at most {MAX_PREFIX_CHARS} characters", m.CLOSE_POLICY_VIOLATION)
            return
        limit = self.factory.maxPrefixes
        if msg.prefix not in self.prefixes and limit and len(self.prefixes) >= limit:
            self._reject(f"at most {limit} prefixes per connection", m.CLOSE_POLICY_VIOLATION)
            return
        self.prefixes[msg.prefix] = msg.uri

    def _call(self, msg: m.Call) -> None:
        uri = m.resolve_curie(msg.proc_uri, self.prefixes)
        proc = None
        if self.rpc_registry is not None:
            proc = self.rpc_registry.lookup(uri)
        if proc is None:
            proc = self.factory.rpc.lookup(uri)
        if proc is None:
            self._send_text(m.call_error(msg.call_id, m.ERROR_NO_SUCH_RPC_ENDPOINT,
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
        self._send_text(text)

    def _call_failed(self, failure: Any, call_id: str, uri: str) -> None:
        uri_, desc, details = error_triple(failure.value)
        if uri_ == m.ERROR_INTERNAL:
            self._log.failure("procedure {uri} failed", failure, uri=uri)
        try:
            text = m.call_error(call_id, uri_, desc, details)
        except (TypeError, ValueError):
            text = m.call_error(call_id, m.ERROR_INTERNAL, "error details are not serializable to JSON")
        self._send_text(text)

    def _send_text(self, text: str) -> None:
        if self.state == _OPEN:
            self.sendMessage(text.encode("utf-8"))

    # -- closing ------------------------------------------------------------

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None,
                       isReply: bool = False) -> None:
        # After a close frame no data frame may follow (RFC 6455, 5.5.1):
        # leave every topic before sending it.
        if self.state == _OPEN:
            self._leave()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self._cancel_paused_check()
        self._cancel_hello_timer()
        self._leave()

    def _leave(self) -> None:
        if self._session_open:
            self._session_open = False
            if self._wamp2 is not None:
                try:
                    self._wamp2.closed()
                except Exception:  # the session must leave the hub whatever happens
                    self._log.failure("{session}: WAMP v2 cleanup failed", session=self.session_id)
            self.__dict__.pop("send_frame", None)  # back to the no-op method
            self.factory.sessionClosed(self)

    # -- 0.8-style per-connection registration ----------------------------

    def _own_rpc(self) -> RpcRegistry:
        if self.rpc_registry is None:
            self.rpc_registry = RpcRegistry()
        return self.rpc_registry

    def _own_pubsub(self) -> Any:
        if self.pubsub_registry is None:
            from oro_sync.wamp1.pubsub import PubSubRegistry
            self.pubsub_registry = PubSubRegistry()
        return self.pubsub_registry

    def registerForRpc(self, obj: Any, baseUri: str = "", methods: list | None = None) -> list[str]:
        return self._own_rpc().registerForRpc(obj, baseUri, methods)

    def registerMethodForRpc(self, uri: str, obj: Any, proc: Any) -> None:
        self._own_rpc().registerMethodForRpc(uri, obj, proc)

    def registerProcedureForRpc(self, uri: str, proc: Any) -> None:
        self._own_rpc().registerProcedureForRpc(uri, proc)

    def registerForPubSub(self, topicUri: str, prefixMatch: bool = False, pubsub: int = 3) -> None:
        self._own_pubsub().registerForPubSub(topicUri, prefixMatch, pubsub)

    def registerHandlerForSub(self, obj: Any, topicUri: str, handler: Any, prefixMatch: bool = False) -> None:
        self._own_pubsub().registerHandlerForSub(obj, topicUri, handler, prefixMatch)

    def registerHandlerForPub(self, obj: Any, topicUri: str, handler: Any, prefixMatch: bool = False) -> None:
        self._own_pubsub().registerHandlerForPub(obj, topicUri, handler, prefixMatch)

    def registerHandlerForPubSub(self, obj: Any, baseUri: str = "") -> None:
        self._own_pubsub().registerHandlerForPubSub(obj, baseUri)
