"""The AMQP pusher: the backend publishes to RabbitMQ, as with Gos's AMQP pusher.

GosWebSocketBundle's AMQP pusher declares a durable ``direct`` exchange
``gos_websocket_exchange`` and a durable queue ``gos_websocket`` and
publishes ``{"topic": ..., "data": ...}`` with an empty routing key (its
server side consumes the queue; binding the two was left to the operator).
This consumer declares the same exchange and queue with the same flags, so
either side may start first and neither redeclaration fails, and also binds
them with ``routing_key`` (empty by default), so Gos's publisher works
without a manual binding.  Publishing straight to the queue (default
exchange, routing key ``gos_websocket``) works too.

Messages are acknowledged once handed to the handlers; a bad one is
rejected without requeueing (requeued, it would come back forever), so a
dead-letter exchange configured on the queue keeps it.  Unacknowledged
messages stay in the durable queue across outages of either side.

The connection uses pika's Twisted adapter under Twisted's ClientService:
lost connections are re-established with exponential back-off, the
exchange, queue and binding are declared again, and the outage is logged
once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, protocol, ssl

from oro_sync.logs import Logger
from oro_sync.pushers.dispatch import PushDispatcher
from oro_sync.pushers.outage import Outage, WatchedEndpoint
from oro_sync.pushers.settings import AmqpPusherSettings

PROVIDER = "amqp"

# pika logs through the standard library; without a handler of its own its
# warnings would go to stderr through logging's last resort.  The outage
# lines below say what an operator needs.
logging.getLogger("pika").addHandler(logging.NullHandler())


class _Connection(TwistedProtocolConnection):
    """pika's Twisted protocol, telling the pusher when it is lost."""

    def __init__(self, parameters: Any, reactor: Any, pusher: "AmqpPusher"):
        super().__init__(parameters, custom_reactor=reactor)
        self.pusher = pusher

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self.pusher._lost(self, reason)


class _ConnectionFactory(protocol.Factory):
    noisy = False

    def __init__(self, pusher: "AmqpPusher"):
        self.pusher = pusher

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self.pusher.parameters, self.pusher.reactor, self.pusher)


class AmqpPusher(service.Service):
    """Consumes ``settings.queue`` while running."""

    log = Logger()

    def __init__(self, settings: AmqpPusherSettings, dispatcher: PushDispatcher, reactor: Any,
                 initial_delay: float = 0.5, max_delay: float = 10.0):
        self.settings = settings
        self.dispatcher = dispatcher
        self.reactor = reactor
        self.parameters = pika.URLParameters(settings.url)
        parts = urlsplit(settings.url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        self.tls = parts.scheme == "amqps"
        self.retry = backoffPolicy(initialDelay=initial_delay, maxDelay=max_delay)
        self.outage = Outage(f"AMQP pusher {self.host}:{self.port} queue {settings.queue!r}", reactor)
        self.client: ClientService | None = None
        #: The connection whose consumer is running, or None.
        self.consuming: _Connection | None = None
        self._consuming_waiters: list[defer.Deferred] = []

    def startService(self) -> None:
        super().startService()
        endpoint = endpoints.HostnameEndpoint(self.reactor, self.host, self.port, timeout=10)
        if self.tls:
            endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS(self.host), endpoint)
        factory = _ConnectionFactory(self)
        self.client = ClientService(WatchedEndpoint(endpoint, self.outage), factory,
                                    retryPolicy=self.retry, clock=self.reactor,
                                    prepareConnection=self._prepare)
        self.client.startService()

    def stopService(self) -> Any:
        super().stopService()
        client, self.client = self.client, None
        self.consuming = None
        if client is None:
            return None
        return client.stopService()

    def when_consuming(self) -> defer.Deferred:
        """Fires once a connection consumes the queue (at once if one does)."""
        if self.consuming is not None:
            return defer.succeed(self.consuming)
        d: defer.Deferred = defer.Deferred()
        self._consuming_waiters.append(d)
        return d

    @defer.inlineCallbacks
    def _prepare(self, conn: _Connection) -> Any:
        """Declare and bind as Gos does, then consume (ClientService retries
        the whole connection if any step fails)."""
        s = self.settings
        try:
            # ClientService hands us a proxy; ``ready`` fires with the
            # protocol itself, which is what _lost() is told about.
            conn = yield conn.ready
            channel = yield conn.channel()
            yield channel.exchange_declare(exchange=s.exchange, exchange_type="direct", durable=True)
            yield channel.queue_declare(queue=s.queue, durable=True)
            yield channel.queue_bind(queue=s.queue, exchange=s.exchange, routing_key=s.routing_key)
            yield channel.basic_qos(prefetch_count=s.prefetch)
            queue, _tag = yield channel.basic_consume(queue=s.queue, auto_ack=False)
        except Exception as e:
            self.outage.down(f"setting up the queue failed: {e!r}")
            raise
        self.consuming = conn
        self.outage.up()
        waiters, self._consuming_waiters = self._consuming_waiters, []
        for d in waiters:
            d.callback(conn)
        self._consume(queue)

    @defer.inlineCallbacks
    def _consume(self, queue: Any) -> Any:
        while True:
            try:
                channel, method, _properties, body = yield queue.get()
            except Exception:
                return  # the channel closed (connection lost, or we stopped)
            result = self.dispatcher.dispatch(body, PROVIDER)
            if not channel.is_open:
                continue  # acknowledged by nobody: RabbitMQ redelivers it
            if result.delivered:
                channel.basic_ack(delivery_tag=method.delivery_tag)
            else:
                channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)

    def _lost(self, conn: _Connection, reason: Any) -> None:
        if self.consuming is conn:
            self.consuming = None
        if self.running:
            self.outage.down(reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else str(reason))
