"""The Redis channel pusher: the backend ``PUBLISH``es to a Redis channel.

The backend runs ``PUBLISH oro-sync:push '{"topic": "oro/maintenance",
"data": {...}}'`` (any Redis client, no WebSocket); this service holds one
subscriber connection (txredisapi, with hiredis when installed) and hands
every message to the :class:`~oro_sync.pushers.dispatch.PushDispatcher`.

When Redis goes away the WebSocket side does not notice: the subscriber
reconnects with exponential back-off (txredisapi's pool slot, which uses
Twisted's ClientService), subscribes again on every new connection, and
logs the outage's start and end once (:class:`~oro_sync.pushers.outage.Outage`).
Messages published while no subscriber was connected are lost: Redis
pub/sub keeps nothing (use the AMQP pusher where that matters).  Every
node of a cluster subscribes and handles each message, so what the
handlers publish for it is delivered on that node only (the broker's
``local_only``): each subscriber gets it once.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.application import service
from twisted.internet import defer, endpoints, ssl

from oro_sync.logs import Logger
from oro_sync.pushers.dispatch import PushDispatcher
from oro_sync.pushers.outage import Outage, WatchedEndpoint
from oro_sync.pushers.settings import RedisPusherSettings

PROVIDER = "redis"


class _PushSubscriber(txredisapi.SubscriberProtocol):
    """Subscribes to the push channel once connected (after AUTH/SELECT)
    and forwards its messages."""

    factory: "_PushSubscriberFactory"

    def connectionMade(self) -> Any:
        # A subscriber only listens: without keep-alive probes a peer that
        # vanished without closing would never be noticed.
        if hasattr(self.transport, "setTcpKeepAlive"):
            self.transport.setTcpKeepAlive(True)
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.factory.pusher._connected(self))
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.pusher.received(message)

    def connectionLost(self, why: Any) -> None:
        self.factory.pusher._lost(self, why)
        super().connectionLost(why)


class _PushSubscriberFactory(txredisapi.RedisFactory):
    """One reconnecting subscriber connection, raw bytes in (no decoding, no
    number conversion: a message is JSON text for the dispatcher)."""

    protocol = _PushSubscriber

    def __init__(self, pusher: "RedisChannelPusher", initial_delay: float, max_delay: float):
        url = pusher.settings.url
        super().__init__(None, None, 1, isLazy=True, charset=None, password=url.password,
                         convertNumbers=False, username=url.username)
        self.pusher = pusher
        self.initialDelay = initial_delay
        self.maxDelay = max_delay
        # Nobody waits for the pool (the pusher hears of connections from
        # its protocol); an AUTH refusal fails this Deferred and is logged
        # by connectionError below, not as an unhandled error.
        self.deferred.addErrback(lambda failure: None)

    def connectionError(self, why: str) -> None:
        # AUTH refused: txredisapi stops retrying; say so once, clearly.
        self.pusher.refused = True
        self.pusher.log.error("Redis push channel: {why}; not retrying", why=why)
        super().connectionError(why)


class RedisChannelPusher(service.Service):
    """Subscribes to ``settings.channel`` while running."""

    log = Logger()

    def __init__(self, settings: RedisPusherSettings, dispatcher: PushDispatcher, reactor: Any,
                 initial_delay: float = 0.5, max_delay: float = 10.0):
        self.settings = settings
        self.dispatcher = dispatcher
        self.reactor = reactor
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        url = settings.url
        self.outage = Outage(f"Redis push channel {url.host}:{url.port} {settings.channel!r}", reactor)
        self.factory: _PushSubscriberFactory | None = None
        self._subscribed_waiters: list[defer.Deferred] = []
        #: The connected subscriber that has subscribed, or None.
        self.subscriber: _PushSubscriber | None = None
        #: Redis refused our credentials: no reconnecting, no outage lines.
        self.refused = False

    def endpoint(self) -> Any:
        url = self.settings.url
        endpoint = endpoints.HostnameEndpoint(self.reactor, url.host, url.port, timeout=10)
        if url.tls:
            endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS(url.host), endpoint)
        return WatchedEndpoint(endpoint, self.outage)

    def startService(self) -> None:
        super().startService()
        self.factory = _PushSubscriberFactory(self, self.initial_delay, self.max_delay)
        self.factory.startConnecting(self.endpoint())

    def stopService(self) -> Any:
        super().stopService()
        factory, self.factory = self.factory, None
        self.subscriber = None
        if factory is None:
            return None
        return factory.disconnect()

    def when_subscribed(self) -> defer.Deferred:
        """Fires once a connection has subscribed to the channel (at once if
        one has): for tests and for readiness checks."""
        if self.subscriber is not None:
            return defer.succeed(self.subscriber)
        d: defer.Deferred = defer.Deferred()
        self._subscribed_waiters.append(d)
        return d

    # -- from the protocol ---------------------------------------------------

    def _connected(self, proto: _PushSubscriber) -> None:
        if not self.running:
            return
        d = proto.subscribe(self.settings.channel)
        d.addCallbacks(lambda _: self._subscribed(proto), lambda f: self._subscribe_failed(proto, f))

    def _subscribe_failed(self, proto: _PushSubscriber, failure: Any) -> None:
        # Start over on a new connection (with back-off) rather than stay
        # connected and deaf.
        self.outage.down(f"SUBSCRIBE failed: {failure.getErrorMessage()}")
        if proto.transport is not None:
            proto.transport.loseConnection()

    def _subscribed(self, proto: _PushSubscriber) -> None:
        if not proto.connected:
            return
        self.subscriber = proto
        self.outage.up()
        waiters, self._subscribed_waiters = self._subscribed_waiters, []
        for d in waiters:
            d.callback(proto)

    def _lost(self, proto: _PushSubscriber, why: Any) -> None:
        if self.subscriber is proto:
            self.subscriber = None
        if self.running and not self.refused:
            self.outage.down(why.getErrorMessage() if hasattr(why, "getErrorMessage") else str(why))

    def received(self, message: Any) -> None:
        if isinstance(message, str):  # defensive: the factory asks for bytes
            message = message.encode("utf-8")
        # Every node subscribes to the channel: deliver on this node only.
        self.dispatcher.dispatch(message, PROVIDER, everywhere=True)
