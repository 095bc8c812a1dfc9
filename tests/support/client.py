"""A small WAMP v1 test client over a real WebSocket (Autobahn, Twisted).

Tests talk to the server the way browsers do, through a socket, but need
to wait on outcomes rather than sleep.  So everything here is a Deferred:

- :func:`connect` fires once the WebSocket is open and (by default) the
  server's first message, WELCOME, has arrived; it fails with
  :class:`HandshakeFailed` when the server refuses the upgrade.
- :meth:`WampTestClient.next_message` is a queue: each call takes the next
  message received (JSON-decoded for text), waiting if none is there yet,
  failing with :class:`ConnectionClosed` once the connection is gone and the
  queue is empty, and with :class:`MessageTimeout` after a bounded wait.
- :attr:`WampTestClient.closed` fires with ``(wasClean, code, reason)``.

To show that something did NOT arrive, send a marker through the same path
afterwards and check that the marker is the next message.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

#: Bounded waits: long enough for a loaded CI machine, short enough to fail fast.
DEFAULT_TIMEOUT = 10.0


class HandshakeFailed(Exception):
    """The WebSocket opening handshake did not succeed (e.g. HTTP 400)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ConnectionClosed(Exception):
    """The connection closed while a message was awaited."""

    def __init__(self, wasClean: bool, code: int | None, reason: str | None):
        super().__init__(f"connection closed (clean={wasClean}, code={code}, reason={reason!r})")
        self.wasClean = wasClean
        self.code = code
        self.reason = reason


class MessageTimeout(Exception):
    """No message arrived within the allowed time."""


class _Protocol(WebSocketClientProtocol):
    """Forwards Autobahn's callbacks to the :class:`WampTestClient`."""

    client: "WampTestClient"

    def onConnect(self, response: Any) -> None:
        self.client._handshake(self, response)

    def onOpen(self) -> None:
        self.client._opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.client._received(payload, isBinary)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.client._lost(wasClean, code, reason)


class _Factory(WebSocketClientFactory):
    protocol = _Protocol

    def __init__(self, client: "WampTestClient", *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.client = client

    def buildProtocol(self, addr: Any) -> _Protocol:
        proto = super().buildProtocol(addr)
        proto.client = self.client
        self.client.proto = proto
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.client._lost(False, None, f"TCP connection failed: {reason.getErrorMessage()}")


class WampTestClient:
    """One client connection and what it has seen."""

    _ids = itertools.count(1)

    def __init__(self, reactor: Any, timeout: float = DEFAULT_TIMEOUT):
        self.reactor = reactor
        self.timeout = timeout
        self.proto: _Protocol | None = None
        #: The subprotocol the server chose (None if it chose none).
        self.subprotocol: str | None = None
        #: HTTP headers of the server's 101 response (lower-case names).
        self.response_headers: dict[str, Any] = {}
        #: The server's first message, decoded (set by :func:`connect`).
        self.welcome: Any = None
        self.is_open = False
        #: Fires with (wasClean, code, reason) when the connection is gone.
        self.closed: defer.Deferred = defer.Deferred()
        self.close_info: tuple[bool, Any, Any] | None = None
        self._queue: list[Any] = []
        self._waiters: list[tuple[defer.Deferred, IDelayedCall]] = []
        self._opening: defer.Deferred = defer.Deferred()

    # -- what tests use --------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session id from WELCOME."""
        return self.welcome[1]

    def send(self, msg: Any, isBinary: bool = False) -> None:
        """Send ``msg``: bytes and text as they are (no validation, so bad
        input reaches the server), anything else JSON-encoded."""
        if isinstance(msg, bytes):
            payload = msg
        elif isinstance(msg, str):
            payload = msg.encode("utf-8")
        else:
            payload = json.dumps(msg).encode("utf-8")
        assert self.proto is not None, "not connected"
        self.proto.sendMessage(payload, isBinary=isBinary)

    def next_message(self, timeout: float | None = None) -> defer.Deferred:
        """The next received message: a decoded JSON value for text
        messages that parse, else the raw payload bytes."""
        if self._queue:
            return defer.succeed(self._queue.pop(0))
        if self.close_info is not None:
            return defer.fail(ConnectionClosed(*self.close_info))
        d: defer.Deferred = defer.Deferred()
        call = self.reactor.callLater(self.timeout if timeout is None else timeout,
                                      self._expire, d)
        self._waiters.append((d, call))
        return d

    def pending(self) -> list[Any]:
        """Messages received and not yet taken (a snapshot)."""
        return list(self._queue)

    # WAMP v1 conveniences: they only build and send client messages.

    def prefix(self, prefix: str, uri: str) -> None:
        self.send([1, prefix, uri])

    def call(self, proc_uri: str, *args: Any) -> str:
        """Send a CALL and return its call id."""
        call_id = f"c{next(self._ids)}"
        self.send([2, call_id, proc_uri, *args])
        return call_id

    @defer.inlineCallbacks
    def rpc(self, proc_uri: str, *args: Any) -> Any:
        """CALL and return the next message, checked to answer this call
        (use only when nothing else can arrive in between)."""
        call_id = self.call(proc_uri, *args)
        msg = yield self.next_message()
        if not (isinstance(msg, list) and len(msg) >= 2 and msg[0] in (3, 4) and msg[1] == call_id):
            raise AssertionError(f"expected the answer to call {call_id}, got {msg!r}")
        return msg

    def subscribe(self, topic_uri: str) -> None:
        self.send([5, topic_uri])

    def unsubscribe(self, topic_uri: str) -> None:
        self.send([6, topic_uri])

    def publish(self, topic_uri: str, event: Any, *rest: Any) -> None:
        """PUBLISH; ``rest`` is the optional excludeMe/exclude and eligible."""
        self.send([7, topic_uri, event, *rest])

    def disconnect(self, code: int = 1000, reason: str | None = None) -> defer.Deferred:
        """Start a clean close; the result is :attr:`closed`'s."""
        if self.close_info is None and self.proto is not None:
            if self.is_open:
                self.proto.sendClose(code, reason)
            else:
                self.proto.transport.abortConnection()
        return self._closed_result()

    def abort(self) -> defer.Deferred:
        """Drop TCP without a closing handshake."""
        if self.close_info is None and self.proto is not None and self.proto.transport:
            self.proto.transport.abortConnection()
        return self._closed_result()

    def _closed_result(self) -> defer.Deferred:
        if self.close_info is not None:
            return defer.succeed(self.close_info)
        d: defer.Deferred = defer.Deferred()
        self.closed.addBoth(lambda r: (d.callback(r), r)[1])
        return d

    # -- callbacks from the protocol --------------------------------------------

    def _handshake(self, proto: _Protocol, response: Any) -> None:
        self.subprotocol = response.protocol
        self.response_headers = dict(response.headers)

    def _opened(self) -> None:
        self.is_open = True
        d, self._opening = self._opening, None
        if d is not None:
            d.callback(self)

    def _received(self, payload: bytes, isBinary: bool) -> None:
        msg: Any = payload
        if not isBinary:
            try:
                msg = json.loads(payload.decode("utf-8"))
            except ValueError:
                msg = payload
        if self._waiters:
            d, call = self._waiters.pop(0)
            call.cancel()
            d.callback(msg)
        else:
            self._queue.append(msg)

    def _lost(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self.close_info is not None:
            return
        self.is_open = False
        self.close_info = (wasClean, code, reason)
        waiters, self._waiters = self._waiters, []
        for d, call in waiters:
            call.cancel()
            d.errback(ConnectionClosed(wasClean, code, reason))
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.errback(HandshakeFailed(str(reason)))
        self.closed.callback(self.close_info)

    def _expire(self, d: defer.Deferred) -> None:
        self._waiters = [(w, c) for (w, c) in self._waiters if w is not d]
        d.errback(MessageTimeout(f"no message within the timeout; pending={self._queue!r}"))


def connect(port: int, protocols: Iterable[str] | None = ("wamp",),
            headers: dict[str, str] | None = None, path: str = "/", *,
            host: str = "127.0.0.1", wait_welcome: bool = True,
            timeout: float = DEFAULT_TIMEOUT, reactor: Any = None,
            tls: Any = None, options: dict[str, Any] | None = None) -> defer.Deferred:
    """Open a WebSocket to ``ws://host:port/path`` offering ``protocols``.

    Fires with a :class:`WampTestClient` once open and, if ``wait_welcome``,
    once the first message (stored as ``.welcome``) has arrived.  Fails with
    :class:`HandshakeFailed` if the upgrade is refused or the connection
    closes first, or with :class:`MessageTimeout` after ``timeout`` seconds
    (the connection is then aborted, so nothing is left behind).  With
    ``tls`` (client TLS options) it connects over TLS (``wss://``).
    ``options`` are Autobahn client protocol options.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    client = WampTestClient(reactor, timeout)
    scheme = "wss" if tls is not None else "ws"
    factory = _Factory(client, f"{scheme}://{host}:{port}{path}",
                       protocols=list(protocols) if protocols else None,
                       headers=headers, reactor=reactor)
    if options:  # Autobahn client protocol options, e.g. perMessageCompressionOffers
        factory.setProtocolOptions(**options)
    if tls is not None:  # client TLS options, e.g. ssl.optionsForClientTLS(...)
        reactor.connectSSL(host, port, factory, tls, timeout=timeout)
    else:
        reactor.connectTCP(host, port, factory, timeout=timeout)
    opening = client._opening
    result: defer.Deferred = defer.Deferred()

    def fail(reason: Any) -> None:
        if not result.called:
            result.errback(reason)

    def on_open(_: Any) -> None:
        if not wait_welcome:
            result.callback(client)
            return
        d = client.next_message(timeout)

        def got(msg: Any) -> None:
            client.welcome = msg
            result.callback(client)

        def lost(f: Any) -> None:
            if f.check(MessageTimeout):
                client.abort()
            fail(f)

        d.addCallbacks(got, lost)

    def expire() -> None:
        if not result.called:
            client.abort()
            result.errback(MessageTimeout(f"connection to port {port} did not open in {timeout}s"))

    guard = reactor.callLater(timeout, expire)

    def stop_guard(r: Any) -> Any:
        if guard.active():
            guard.cancel()
        return r

    opening.addCallbacks(on_open, fail)
    result.addBoth(stop_guard)
    return result


@defer.inlineCallbacks
def round_trip(c: Any, timeout: float | None = None) -> Any:
    """CALL an unknown procedure and wait for its CALLERROR: everything the
    WAMP v1 client ``c`` sent before has then been processed by its server.
    Fires with the other messages that arrived meanwhile, in order."""
    call_id = c.call("urn:oro-sync-test:round-trip")
    seen: list = []
    while True:
        msg = yield c.next_message(timeout=timeout)
        if isinstance(msg, list) and msg[:2] == [4, call_id]:
            return seen
        seen.append(msg)
