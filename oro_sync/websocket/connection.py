"""One client connection: the WebSocket side of a WAMP session.

:class:`WampConnection` is the only Autobahn protocol of the server.  It
runs the handshake gate (connection limits, Origin, subprotocol choice, the
ticket check), creates the WAMP v1 or v2 session for the negotiated
subprotocol and hands it every message (:mod:`oro_sync.wamp.contract`).  It
owns everything between the session and the socket: the per-turn event
queue (the hub's outbox), output holding, flow control and the
slow-consumer cut-off, the publish rate, and closing.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import LogLevel
from zope.interface import implementer

from oro_sync.auth.origins import fix_schemeless_origin
from oro_sync.identity import Identity
from oro_sync.logs import Logger, clip
from oro_sync.wamp.contract import IConnection
from oro_sync.websocket.api08 import PerConnectionRegistrations
from oro_sync.websocket.header_gate import HeaderGate
from oro_sync.websocket.keepalive import PingPolicy, enable_tcp_keepalive
from oro_sync.websocket.output_flow import OutputFlow
from oro_sync.websocket.kernel_write import batches
from oro_sync.websocket.limits import TokenBucket
from oro_sync.websocket.read_throttle import ReadThrottle

_OPEN = WebSocketServerProtocol.STATE_OPEN


@implementer(IConnection, IPushProducer)
class WampConnection(PingPolicy, PerConnectionRegistrations, OutputFlow, ReadThrottle, HeaderGate,
                     WebSocketServerProtocol):
    """A WebSocket connection carrying one WAMP v1 or v2 session.

    It is also the push producer of its transport (flow control and the
    slow-consumer cut-off: :mod:`oro_sync.websocket.output_flow`).
    """

    # Not ``log``: that would shadow the txaio logger Autobahn's own code
    # uses, turning its many debug calls per connection into real events.
    _log = Logger()

    #: The WAMP session (an IWampSession and the core's ISession), once open.
    session: Any = None
    identity: Any = None
    session_id: str = ""
    #: The negotiated WebSocket subprotocol (the default one if none was offered).
    subprotocol: str = ""
    #: The handshake had no ticket although one is required: the session
    #: must authenticate in band (WAMP-Ticket) or be refused.
    ticket_pending = False
    _session_class: Any = None
    _publish_bucket: TokenBucket | None = None
    _throttled = False
    _ready_timer: Any = None
    _peer_host = ""
    _origin_fixed = False
    _handshaking = False
    #: True from session_ready() until the session left the hub.
    _session_open = False

    @property
    def clock(self) -> Any:
        return self.factory.clock

    # -- connection and handshake ----------------------------------------------

    def connectionMade(self) -> None:
        enable_tcp_keepalive(self.transport, self.factory.limits)
        super().connectionMade()  # HeaderGate: counting and accept-time limits

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.inputHeld -= self._input_held
        self._input_held = 0
        self.factory.inputHolders.discard(self)
        self.factory.outputCaughtUp(self)
        self._handshake_done()
        self._cancel_resume_timer()
        super().connectionLost(reason)  # HeaderGate: counting, then Autobahn

    #: Bytes of this connection's unparsed input counted in factory.inputHeld,
    #: and the payload received of the message being assembled.
    _input_held = 0
    _partial = 0

    def onMessageFrameData(self, payload: bytes) -> None:
        self._partial += len(payload)
        super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        self._partial = 0
        super().onMessageEnd()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)  # HeaderGate, then Autobahn
        if self._autobahn_started:
            self.account_input()

    def account_input(self) -> None:
        """The total budget for buffered input: what clients sent and is not
        parsed yet (partial messages, frames read before a rate pause)."""
        factory = self.factory
        held = len(self.data) + self._partial
        factory.inputHeld += held - self._input_held
        self._input_held = held
        if held > 65536:
            factory.inputHolders.add(self)
        else:
            factory.inputHolders.discard(self)
        budget = factory.limits.max_total_input_buffer
        if budget and factory.inputHeld > budget:
            # Those holding the most are closed, not whoever sends next: idle
            # connections sitting on partial messages must not make every
            # later large message fail.
            total = factory.inputHeld
            for _, _, conn in sorted(((c._input_held, id(c), c) for c in factory.inputHolders), reverse=True):
                if total <= budget:
                    break
                total -= conn._input_held
                if conn.state == _OPEN:  # (a closing one is on its way out already)
                    conn._input_budget_exhausted()

    def _input_budget_exhausted(self) -> None:
        factory = self.factory
        factory.metrics.counters["input_budget_closed"] += 1
        factory.repeats.warn(("input_budget", self._peer_host),
                             "{peer} ({session}): the server's input budget is exhausted: closing",
                             peer=self.peer, session=self.session_id)
        self.close(1009, "server input budget exhausted")

    def _handshake_done(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self.factory.handshakeEnded()

    def processHandshake(self) -> Any:
        # HeaderGate hands Autobahn only complete (and bounded) request heads.
        if not self._origin_fixed:
            end = self.data.find(b"\r\n\r\n")
            if end >= 0:
                self._origin_fixed = True
                self.data = fix_schemeless_origin(self.data[:end]) + self.data[end:]
        else:
            # Bytes sent before the 101 (the ticket is still being checked):
            # a WebSocket client has no business sending any.  They are not
            # parsed as another request (a second head would run onConnect
            # again and count a second pending handshake that nothing ends,
            # until accept() paused for good); they wait, bounded, and are
            # read as frames once the session is open.
            limit = self.factory.limits.max_request_header
            if limit and len(self.data) > limit:
                self.wasClean = False
                self.dropConnection(abort=True)
            return None
        return super().processHandshake()

    def _refuse(self, reason: str, status: int, why: str, request: Any = None) -> None:
        self.factory.metrics.refused(reason)
        # One line per refusal, but the same refusal repeated by one address
        # is counted rather than logged each time.
        # (Keyed without the text: a new Origin per attempt must not pass.)
        self.factory.repeats.warn(("refused", reason, self._peer_host),
                                  "refusing {address}: {why} (session {session}, user {user}, protocol {protocol})",
                                  log_event="refusal", peer=self.peer, why=clip(why, 300), reason=reason,
                                  address=self._peer_host, session=self.session_id or "-", user="-",
                                  protocol=_offered(request))
        raise ConnectionDeny(status, why)

    def onConnect(self, request: Any) -> Any:
        # Counted from a complete upgrade request (the costly part is the
        # ticket check): idle or trickling sockets cannot fill the budget of
        # pending handshakes and pause accept() for everyone; the handshake
        # timeout drops them.
        self._handshaking = True
        factory = self.factory
        factory.handshakeStarted()
        # (Connection limits were applied at accept: see HeaderGate.)
        if factory.originPolicy is not None:
            why = factory.originPolicy.check(request.headers.get("origin"))
            if why is not None:
                self._refuse("origin", ConnectionDeny.FORBIDDEN, why, request)
        # The client's first choice among those we speak (its order is its preference).
        protocol = next((p for p in request.protocols if p in factory.sessionClasses), None)
        if protocol is None and (request.protocols or factory.strictSubprotocol):
            # Offering only what we do not speak is a client asking for
            # something else (serving it WAMP v1 would fail it silently).
            self._refuse("subprotocol", ConnectionDeny.BAD_REQUEST,
                         "offer one of the WebSocket subprotocols this server speaks: "
                         + ", ".join(f'"{p}"' for p in factory.sessionClasses), request)
        self.subprotocol = protocol or factory.defaultSubprotocol
        self._session_class = factory.sessionClasses[self.subprotocol]
        self.session_id = self._session_class.new_session_id()
        authenticator = factory.authenticator
        if authenticator is None:
            return protocol
        if getattr(self._session_class, "in_band_auth", False) and hasattr(authenticator, "verify_in_band"):
            # WAMP-Ticket: without a URL ticket the session authenticates in HELLO.
            d = maybeDeferred(authenticator.authenticate, request, self.session_id, in_band=True)
        else:
            d = maybeDeferred(authenticator.authenticate, request, self.session_id)

        def authenticated(identity: Any) -> Any:
            self.identity = identity
            self.ticket_pending = identity is None
            return protocol

        def refused(failure: Any) -> Any:
            if failure.check(ConnectionDeny):
                factory.metrics.refused("ticket" if failure.value.code == ConnectionDeny.FORBIDDEN
                                        else "authentication_unavailable")
            return failure

        return d.addCallbacks(authenticated, refused)

    def succeedHandshake(self, res: Any) -> Any:
        # An asynchronous authenticate() may finish after the peer left or the
        # opening-handshake timeout dropped it: then there is nothing to open.
        if self.state != self.STATE_CONNECTING:
            return None
        return super().succeedHandshake(res)

    def onOpen(self) -> None:
        self._handshake_done()
        factory = self.factory
        if self.identity is None:
            self.identity = Identity.anonymous_for(self.session_id)
        limits = factory.limits
        if limits.publish_rate:
            self._publish_bucket = TokenBucket(limits.publish_rate, limits.publish_burst, factory.clock)
        if limits.message_rate and not getattr(self.identity, "backend", False):
            self.start_message_budget(limits.message_rate, limits.message_burst)
        if limits.max_output_buffer:
            self.transport.registerProducer(self, True)
        if batches(self.transport):  # the fan-out fast path
            self._queue = factory.hub.outbox.queue_for(self.transport)
        self._forget_handshake()
        self.session = factory.makeSession(self._session_class, self)
        self.session.open()
        if not self._session_open and limits.handshake_timeout:
            self._ready_timer = factory.clock.callLater(limits.handshake_timeout, self._not_ready)

    def _not_ready(self) -> None:
        self._ready_timer = None
        if self.state == _OPEN and not self._session_open:
            reason = self.session.ready_timeout_reason
            self._log.info("{peer}: {why}: closing", peer=self.peer, why=reason)
            self.close(1000, reason)

    def _cancel_ready_timer(self) -> None:
        if self._ready_timer is not None:
            if self._ready_timer.active():
                self._ready_timer.cancel()
            self._ready_timer = None

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

    # -- IConnection -----------------------------------------------------------

    def session_ready(self) -> None:
        if self.state != _OPEN or self._left:
            return  # an in-band authentication finished after the peer left
        self._cancel_ready_timer()
        session = self.session
        # WAMP-Ticket: the session learnt who it is in band, after onOpen
        # gave the connection the anonymous identity of a missing URL ticket.
        identity = getattr(session, "identity", None)
        if identity is not None and identity is not self.identity:
            self.identity = identity
            if getattr(identity, "backend", False):
                self._message_budget = None  # backends are not rate-limited
        session.send_frame = self._queue.send if self._queue is not None else self._write_now
        self._session_open = True
        self._opened_at = self.factory.clock.seconds()
        self._log.info("connect {session}: user {user} from {address} over {protocol}",
                       log_event="connect", session=self.session_id, user=_user(self.identity),
                       address=self._peer_host, protocol=session.protocol)
        self.factory.sessionOpened(session)
        self.onSessionOpen()

    def onSessionOpen(self) -> None:
        """Override to register per-connection RPC or pub/sub, as in AutobahnPython 0.8."""

    def send_message(self, data: bytes, binary: bool = False) -> None:
        if self.state == _OPEN:
            counters = self.factory.metrics.counters
            counters["messages_out"] += 1
            counters["bytes_out"] += len(data)
            self.sendMessage(data, binary)

    def allow_publish(self) -> bool:
        bucket = self._publish_bucket
        if bucket is None or bucket.take():
            self._throttled = False
            return True
        self.factory.metrics.counters["publishes_throttled"] += 1
        if not self._throttled:
            self._throttled = True
            self._log.warn("{peer} ({session}) publishes faster than {rate}/s: dropping",
                           peer=self.peer, session=self.session_id, rate=bucket.rate)
        return False

    def close(self, code: int, reason: str) -> None:
        """Close with any WebSocket code (Autobahn's sendClose allows only
        1000 and 3000-4999; the failure path sends the given code)."""
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason.encode("utf-8")[:123].decode("utf-8", "ignore"))
        else:
            self._fail_connection(code, reason)

    # -- incoming messages -------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Autobahn still delivers messages while CLOSING: a session that was
        # sent a close frame (or cut off) gets nothing more.
        if self.state != _OPEN or self.session is None or self._left:
            return
        counters = self.factory.metrics.counters
        counters["messages_in"] += 1
        counters["bytes_in"] += len(payload)
        self.spend_message_budget()
        try:
            self.session.receive(payload, isBinary)
        except Exception:
            # A bug behind the session must cost this connection at most, never
            # the server; logged as an error (client input never reaches critical).
            self._log.failure("{session}: failed to handle a message", session=self.session_id,
                              level=LogLevel.error)
            self.close(1011, "internal error")

    # -- closing -------------------------------------------------------------------

    _left = False
    #: When the session opened (for the disconnect line); None before and after.
    _opened_at: float | None = None

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None,
                       isReply: bool = False) -> None:
        # After a close frame no data frame may follow (RFC 6455, 5.5.1):
        # leave every topic before sending it.
        if self.state == _OPEN:
            self._leave()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self._cancel_paused_check()
        self._cancel_ready_timer()
        self._leave()
        if self._opened_at is not None:
            session = self.session
            self._log.info("disconnect {session}: user {user} from {address} over {protocol} "
                           "(code {code}, after {duration:.0f} s)", log_event="disconnect",
                           session=self.session_id, user=_user(self.identity), address=self._peer_host,
                           protocol=session.protocol, code=code, clean=wasClean,
                           duration=self.factory.clock.seconds() - self._opened_at)
            self._opened_at = None

    def _leave(self) -> None:
        self._left = True
        if self._session_open:
            self._session_open = False
            session = self.session
            try:
                session.closed()
            except Exception:  # the session must leave the hub whatever happens
                self._log.failure("{session}: session cleanup failed", session=self.session_id)
            session.__dict__.pop("send_frame", None)  # back to the no-op method
            self.factory.sessionClosed(session)


def _user(identity: Any) -> str:
    """The user a log line names (never anything from the ticket but the name)."""
    return getattr(identity, "username", None) or "-"


def _offered(request: Any) -> str:
    """The subprotocols a refused client offered, for its log line."""
    protocols = getattr(request, "protocols", None)
    if not protocols:
        return "-"
    return "".join(c if c.isprintable() else "?" for c in clip(",".join(protocols), 100))
