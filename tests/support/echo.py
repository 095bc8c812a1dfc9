"""A test-only WebSocket echo server on oro-sync's own send path.

Why this exists: the WAMP server's fan-out path does not use Autobahn's
``sendMessage``; it frames each event once with
:func:`oro_sync.core.frames.frame` and writes the bytes straight to the
transport (:meth:`WampServerProtocol.send_frame`).  A protocol-compliance
suite (kosoku, the Autobahn TestSuite cases) can only talk to an *echo*
endpoint, not to WAMP, so this module provides one whose replies go out
through exactly that code: ``frame(payload, opcode)`` + ``transport.write``.
Receiving, handshakes, pings and closes stay Autobahn's, configured with the
very same protocol options as :class:`WampServerFactory` (copied from a
reference instance, so a change there is tested here too).  Only the size
limits differ, and only when a caller asks (the 9.x cases send 16 MiB).

This is never imported by ``oro_sync``; it is test scaffolding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

from oro_sync.core.frames import OPCODE_BINARY, OPCODE_TEXT, frame
from oro_sync.websocket.factory import DEFAULT_MAX_MESSAGE_SIZE, WampServerFactory

#: The Autobahn protocol options copied verbatim from WampServerFactory, so
#: that the echo endpoint behaves like production on everything but the echo.
#: (``maxMessagePayloadSize`` / ``maxFramePayloadSize`` are set separately.)
MIRRORED_OPTIONS: tuple[str, ...] = (
    "versions",
    "webStatus",
    "utf8validateIncoming",
    "requireMaskedClientFrames",
    "maskServerFrames",
    "applyMask",
    "autoFragmentSize",
    "failByDrop",
    "echoCloseCodeReason",
    "openHandshakeTimeout",
    "closeHandshakeTimeout",
    "tcpNoDelay",
    "serveFlashSocketPolicy",
    "flashSocketPolicy",
    "perMessageCompressionAccept",
    "autoPingInterval",
    "autoPingTimeout",
    "autoPingSize",
    "autoPingRestartOnAnyTraffic",
    "allowedOrigins",
    "allowedOriginsPatterns",
    "allowNullOrigin",
    "maxConnections",
    "trustXForwardedFor",
)

#: Largest message any kosoku case in 1.x-10.x sends: case 9.1.6 / 9.2.6
#: echo a 16 MiB message (WampServerFactory's 1 MiB default would answer
#: those with close 1009, which the cases score as FAILED).
CONFORMANCE_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

#: frame() as imported, for tests that patch ``frame`` here and still need
#: the real encoder underneath their deliberate corruption.
FRAME_UNPATCHED = frame

#: The ``Server`` header; kosoku names its report files after it.
ECHO_SERVER_IDENT = "oro-sync-echo"


class FramesEchoProtocol(WebSocketServerProtocol):
    """Echoes every data message back through :func:`frame` + ``transport.write``.

    The reply deliberately bypasses ``sendMessage``: what is under test is
    oro-sync's hand-built framing (header length encoding at the 125/126 and
    65535/65536 boundaries, FIN and opcode bits, no masking), exactly as
    :meth:`WampServerProtocol.send_frame` puts it on the wire.
    """

    factory: "FramesEchoFactory"

    def connectionMade(self) -> None:
        self.factory.live.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.factory.connection_gone(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        opcode = OPCODE_BINARY if isBinary else OPCODE_TEXT
        self.send_frame(frame(payload, opcode))

    def send_frame(self, data: bytes) -> None:
        """Same guard and write as WampServerProtocol.send_frame: frames are
        only written while open (never after our close frame went out)."""
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.transport.write(data)


class FramesEchoFactory(WebSocketServerFactory):
    """Serves :class:`FramesEchoProtocol` with WampServerFactory's options.

    :param maxMessageSize: message and frame payload limit in bytes; the
        default is the WAMP server's own, pass
        :data:`CONFORMANCE_MAX_MESSAGE_SIZE` for the 9.x (large message) cases.
    """

    protocol = FramesEchoProtocol

    def __init__(self, *, maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
                 reactor: Any = None) -> None:
        super().__init__(server=ECHO_SERVER_IDENT, reactor=reactor)
        reference = WampServerFactory(reactor=reactor)
        for name in MIRRORED_OPTIONS:
            setattr(self, name, getattr(reference, name))
        # (setProtocolOptions resets allowNullOrigin unless it is passed.)
        self.setProtocolOptions(maxMessagePayloadSize=maxMessageSize,
                                maxFramePayloadSize=maxMessageSize,
                                allowNullOrigin=reference.allowNullOrigin)
        #: Open connections, so a test can end with none left (trial fails
        #: a test that leaves sockets behind in the reactor).
        self.live: set[FramesEchoProtocol] = set()
        self._idle: list[defer.Deferred[None]] = []

    def connection_gone(self, proto: FramesEchoProtocol) -> None:
        self.live.discard(proto)
        if not self.live:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def drop_all(self) -> defer.Deferred[None]:
        """Abort every open connection; fires once all of them are gone.

        A client that was killed mid-case (or a peer that vanished) can leave
        a half-open server connection behind; aborting is what a test
        teardown wants, not a polite close that waits for a dead peer.
        """
        if not self.live:
            cancel_batched_timers(self)
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle.append(waiter)
        for proto in list(self.live):
            proto.transport.abortConnection()
        return waiter.addCallback(lambda _: cancel_batched_timers(self))


def cancel_batched_timers(factory: Any) -> None:
    """Cancel the timer buckets an Autobahn factory still has scheduled.

    Autobahn puts its handshake / close timeouts in txaio "batched timers"
    (buckets of 200 ms, up to ``openHandshakeTimeout`` = 5 s ahead).
    Cancelling one of those timeouts leaves its bucket's reactor call in
    place, and trial fails a test that ends with pending calls.  Once a
    factory has no connections left, every timeout in its buckets belongs to
    a finished connection, so cancelling the buckets is safe and saves
    waiting up to 5 s per test.  Only call this when no connection is open.
    """
    timer = getattr(factory, "_batched_timer", None)
    if timer is None:
        return
    for call in factory.reactor.getDelayedCalls():
        if getattr(call.func, "__self__", None) is timer and call.active():
            call.cancel()


@dataclass
class EchoServer:
    """A listening echo endpoint: stop it with ``factory.drop_all()`` then
    ``port.stopListening()``."""

    port: IListeningPort
    url: str
    factory: FramesEchoFactory


def listen_echo(reactor: Any, *, maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
                interface: str = "127.0.0.1") -> EchoServer:
    """Listen on an ephemeral port and return the server with its ``ws://`` URL.

    Port 0 so parallel test runs never collide; the URL carries the port the
    OS actually chose.
    """
    factory = FramesEchoFactory(maxMessageSize=maxMessageSize, reactor=reactor)
    port = reactor.listenTCP(0, factory, interface=interface)
    address = port.getHost()
    url = f"ws://{address.host}:{address.port}"
    factory.setSessionParameters(url=url, server=ECHO_SERVER_IDENT)
    return EchoServer(port, url, factory)
