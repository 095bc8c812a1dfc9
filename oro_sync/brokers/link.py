"""One connection to one Redis server, kept up for as long as it is wanted.

The Redis broker holds two per Redis server (one publishing, one
subscribed).  A :class:`RedisLink` connects (TCP or TLS), authenticates and
selects the database through txredisapi's protocol, tells its owner when the
connection is ready and when it is gone, and reconnects with exponential
back-off (with jitter, so a fleet of nodes does not reconnect in step) until
it is stopped.  It never logs an outage itself: the owner logs one start and
one end for each outage of a server, however many attempts it took.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import txredisapi
from twisted.internet import defer, endpoints, protocol

from oro_sync.brokers.settings import RedisURL
from oro_sync.logs import Logger

#: First wait before a reconnection attempt, in seconds (doubled each time).
INITIAL_DELAY = 0.2
CONNECT_TIMEOUT = 5.0


class Subscriber(txredisapi.SubscriberProtocol):
    """A subscribed connection: hands every message to ``on_message``.

    SUBSCRIBE and UNSUBSCRIBE are written without waiting for their replies
    (Redis answers them in order; txredisapi drops replies nobody waits for),
    so a burst of interest changes costs no Deferreds.
    """

    on_message: Callable[[Any, Any], None] = staticmethod(lambda channel, message: None)
    #: Channels asked for (SUBSCRIBE) or given up (UNSUBSCRIBE), and the
    #: replies Redis sent for them: one each, in order.
    requested = 0
    confirmed = 0

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.on_message(channel, message)

    def replyReceived(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] in _ACKS:
            self.confirmed += 1
            waiting = getattr(self, "_settling", None)
            while waiting and waiting[0][0] <= self.confirmed:
                waiting.pop(0)[1].callback(None)
            return
        super().replyReceived(reply)

    def send_subscribe(self, command: str, channels: list[str]) -> None:
        if channels and self.transport is not None:
            self.requested += len(channels)
            self.transport.write(self._build_command(command, *channels))

    def settled(self) -> defer.Deferred:
        """Fires once Redis has answered every SUBSCRIBE/UNSUBSCRIBE sent so far
        (its subscriptions are then in force)."""
        if self.confirmed >= self.requested:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        if not hasattr(self, "_settling"):
            self._settling: list = []
        self._settling.append((self.requested, d))
        return d


_ACKS = {"subscribe", "unsubscribe", b"subscribe", b"unsubscribe"}


class _Factory(protocol.Factory):
    """What txredisapi's protocol expects of its factory."""

    isLazy = False
    noisy = False

    def __init__(self, link: "RedisLink"):
        self.link = link
        self.connectionQueue = defer.DeferredQueue()

    def buildProtocol(self, addr: Any) -> Any:
        url = self.link.url
        p = self.link.protocol_class(charset="utf-8", password=url.password,
                                     dbid=url.db, username=url.username,
                                     convertNumbers=self.link.convert_numbers)
        p.factory = self
        return p

    def stopTrying(self) -> None:
        """txredisapi gives up after a refused AUTH or SELECT; we keep trying
        (at the longest delay), as the operator may fix the server."""

    def connectionError(self, msg: str) -> None:
        self.link.last_error = msg


class RedisLink:
    """Keeps one connection to ``url`` open; see the module docstring.

    :param on_up: called with the protocol once it is authenticated.
    :param on_down: called with the reason when a ready connection is lost
        or an attempt fails.
    """

    log = Logger()

    def __init__(self, url: RedisURL, protocol_class: Any, reactor: Any,
                 on_up: Callable[[Any], None], on_down: Callable[[str], None],
                 max_delay: float = 10.0, convert_numbers: bool = True, tls_ca: str = ""):
        self.url = url
        self.protocol_class = protocol_class
        self.reactor = reactor
        self.on_up = on_up
        self.on_down = on_down
        self.max_delay = max_delay
        self.convert_numbers = convert_numbers
        self.tls_ca = tls_ca
        self.protocol: Any = None
        self.last_error = ""
        self.attempts = 0
        self._factory = _Factory(self)
        self._retry: Any = None
        self._pending: Any = None
        self._opening: Any = None
        self._running = False

    @property
    def up(self) -> bool:
        return self.protocol is not None

    def start(self) -> None:
        self._running = True
        self._connect()

    def stop(self) -> defer.Deferred:
        """Stop reconnecting and close the connection; fires once it is closed."""
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._pending is not None:
            self._pending.cancel()
        proto, self.protocol = self.protocol or self._opening, None
        self._opening = None
        if proto is None or proto.transport is None or not proto.connected:
            return defer.succeed(None)
        gone = proto.whenDisconnected()
        proto.transport.loseConnection()
        return gone

    def _endpoint(self) -> Any:
        ep = endpoints.TCP4ClientEndpoint(self.reactor, self.url.host, self.url.port,
                                          timeout=CONNECT_TIMEOUT)
        if self.url.tls:
            from twisted.internet.ssl import Certificate, optionsForClientTLS

            trust = None  # the platform's trusted authorities
            if self.tls_ca:
                with open(self.tls_ca, "rb") as f:
                    trust = Certificate.loadPEM(f.read())
            ep = endpoints.wrapClientTLS(optionsForClientTLS(self.url.host, trustRoot=trust), ep)
        return ep

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        d = self._pending = self._endpoint().connect(self._factory)
        d.addCallback(self._connected)
        d.addErrback(self._failed)

    def _connected(self, proto: Any) -> Any:
        self._pending = None
        self._opening = proto  # connected, not yet authenticated
        # A subscriber only listens: without keep-alive probes a Redis that
        # vanished without closing (a host gone, a dropped route) would
        # never be noticed, and the node would stay deaf with no outage line.
        keep_alive(getattr(proto, "transport", None))
        lost = proto.whenDisconnected()
        ready = proto.whenConnected()
        lost.addCallback(lambda _: self._lost(proto))
        ready.addCallback(self._ready)
        return None

    def _ready(self, proto: Any) -> None:
        if self._opening is proto:
            self._opening = None
        if not self._running or not proto.connected:
            if proto.transport is not None:
                proto.transport.loseConnection()
            return
        self.protocol = proto
        self.attempts = 0
        self.last_error = ""
        self.on_up(proto)

    def _lost(self, proto: Any) -> None:
        if self._opening is proto:
            self._opening = None
        was_up = self.protocol is proto
        if was_up:
            self.protocol = None
        if not self._running:
            return
        self.on_down(self.last_error or "connection lost")
        self._schedule()

    def _failed(self, failure: Any) -> None:
        self._pending = None
        if failure.check(defer.CancelledError) or not self._running:
            return
        self.last_error = failure.getErrorMessage()
        self.on_down(self.last_error)
        self._schedule()

    def _schedule(self) -> None:
        if self._retry is not None or not self._running:
            return
        delay = min(self.max_delay, INITIAL_DELAY * (2 ** min(self.attempts, 16)))
        delay *= 1 + random.uniform(-0.1, 0.1)
        self.attempts += 1
        self._retry = self.reactor.callLater(delay, self._connect)


#: TCP keep-alive of the Redis links: first probe after 30 s of silence,
#: then every 10 s; 3 unanswered probes end the connection (about a minute).
KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


def keep_alive(transport: Any) -> None:
    """Turn on TCP keep-alive (with the timings above) for a Redis link."""
    import socket

    handle = getattr(transport, "socket", None)
    for _ in range(3):  # through a TLS wrapper to the TCP socket
        if isinstance(handle, socket.socket) or transport is None:
            break
        transport = getattr(transport, "transport", None)
        handle = getattr(transport, "socket", None)
    if not isinstance(handle, socket.socket):
        return
    try:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                handle.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:  # the connection is already gone: nothing to keep alive
        pass
