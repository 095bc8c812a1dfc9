"""A broker that spans nodes through Redis pub/sub.

A publication is delivered to this node's subscribers at once and sent once
to Redis (``PUBLISH``), on the channel of its topic
(``<channel_prefix>topic:<topic URI>``); every other node subscribed to that
channel delivers it to its own subscribers.  A node subscribes in Redis
only to the topics it has local subscribers for -- from a topic's first
local subscriber to its last (:class:`~oro_sync.core.topic.TopicRegistry`'s
``on_created``/``on_removed``) -- so Redis traffic follows interest, not
nodes x topics.

The message is the :class:`~oro_sync.core.publish.Publication`'s versioned
wire form as compact UTF-8 JSON whose first two members are ``v`` (the
format version) and ``origin`` (the publishing node)::

    {"v":1,"origin":"9f2c01ab33de","topic":"oro/maintenance","id":4242,
     "exclude":[],"eligible":null,"event":{"isOn":true}}

(``args``/``kwargs`` instead of ``event`` for a WAMP v2 payload that is not
one value).  Because ``exclude``/``eligible`` name session ids and the
publication id travels along, exclusion works across nodes and a WAMP v2
PUBLISHED and the EVENTs on every node carry the same id.  A node's own
messages come back to it from Redis and are recognized by their first bytes,
without parsing; anything that is not such a message is logged (rate
limited) and ignored.

Faults: with Redis away, local delivery goes on; publications for other
nodes are held (up to ``broker.buffer`` per Redis server) and sent when the
connection is back, beyond that dropped and counted (``broker_dropped``);
the node reconnects with back-off (each outage's end counted in
``broker_reconnects``), subscribes again to exactly its current
interest, and logs one line when the outage starts and one when it ends.
Redis pub/sub does not keep messages: what other nodes published while this
node's subscription was down is not delivered here.
"""

from __future__ import annotations

import json
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator

from twisted.application import service
from twisted.internet import defer
from zope.interface import implementer

import txredisapi

from oro_sync.brokers.link import RedisLink, Subscriber
from oro_sync.brokers.ratelog import RateLimitedWarning
from oro_sync.brokers.settings import BrokerSettings, RedisURL
from oro_sync.brokers.shards import ShardMap
from oro_sync.core.broker import BrokerBase, IBroker
from oro_sync.core.metrics import Metrics
from oro_sync.core.publish import WIRE_VERSION, Publication
from oro_sync.logs import Logger, clip

class BrokerUnreachable(ConnectionError):
    """A Redis server of the broker is not connected (see :meth:`RedisBroker.check`)."""


#: Channels per SUBSCRIBE command when a node subscribes to its whole interest.
SUBSCRIBE_CHUNK = 1000


class _Shard:
    """One Redis server: its two links, its outage state and buffer."""

    def __init__(self, broker: "RedisBroker", index: int, url: RedisURL):
        self.broker = broker
        self.index = index
        self.url = url
        r = broker.reactor
        delay = broker.settings.reconnect_max_delay
        ca = broker.settings.tls_ca
        self.pub = RedisLink(url, txredisapi.RedisProtocol, r, self._pub_up, self._down, delay,
                             tls_ca=ca)
        self.sub = RedisLink(url, Subscriber, r, self._sub_up, self._down, delay,
                             convert_numbers=False, tls_ca=ca)
        self.held: deque = deque()
        #: Characters of the held messages (their JSON text).
        self.held_bytes = 0
        self.outage_since: float | None = None
        self.dropped_in_outage = 0
        self.ever_up = False
        self._waiting_up: list[defer.Deferred] = []
        self._waiting_down: list[defer.Deferred] = []

    def when_up(self) -> defer.Deferred:
        """Fires when both connections are ready (at once if they are)."""
        if self.up:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self._waiting_up.append(d)
        return d

    def when_down(self) -> defer.Deferred:
        """Fires when a connection to this server is lost or cannot be made."""
        d: defer.Deferred = defer.Deferred()
        self._waiting_down.append(d)
        return d

    def settled(self) -> defer.Deferred:
        """Fires once Redis confirmed every subscription change sent so far."""
        return self.when_up().addCallback(lambda _: self.sub.protocol.settled())

    def start(self) -> None:
        self.pub.start()
        self.sub.start()

    def stop(self) -> defer.Deferred:
        return defer.DeferredList([self.pub.stop(), self.sub.stop()], consumeErrors=True)

    @property
    def up(self) -> bool:
        return self.pub.up and self.sub.up

    def send(self, channel: str, message: str) -> None:
        proto = self.pub.protocol
        counters = self.broker.metrics.counters
        if proto is not None and not self.held:
            proto.publish(channel, message).addErrback(self._publish_failed)
            counters["broker_sent"] += 1
        elif len(self.held) < self.broker.settings.buffer and (
                not self.broker.settings.buffer_bytes
                or self.held_bytes + len(message) <= self.broker.settings.buffer_bytes):
            # Bounded by count and by bytes: 10,000 events of 1 MiB each
            # must not hold 10 GB while Redis is away.
            self.held.append((channel, message))
            self.held_bytes += len(message)
            counters["broker_held"] += 1
        else:
            counters["broker_dropped"] += 1
            self.dropped_in_outage += 1

    def _publish_failed(self, failure: Any) -> None:
        # The connection went while the PUBLISH was under way: it may or may
        # not have reached Redis, so it is counted, not sent again.
        self.broker.metrics.counters["broker_publish_failed"] += 1

    def _pub_up(self, proto: Any) -> None:
        held, self.held = self.held, deque()
        self.held_bytes = 0
        for channel, message in held:
            proto.publish(channel, message).addErrback(self._publish_failed)
        self.broker.metrics.counters["broker_sent"] += len(held)
        self._check_up(len(held))

    def _sub_up(self, proto: Any) -> None:
        proto.on_message = self.broker.received
        channels = self.broker.channels_of(self.index)
        for i in range(0, len(channels), SUBSCRIBE_CHUNK):  # a big node has many thousands
            proto.send_subscribe("SUBSCRIBE", channels[i:i + SUBSCRIBE_CHUNK])
        self._check_up(0)

    def _down(self, why: str) -> None:
        waiting, self._waiting_down = self._waiting_down, []
        for d in waiting:
            d.callback(why)
        if self.outage_since is not None:
            return
        self.outage_since = self.broker.reactor.seconds()
        self.dropped_in_outage = 0
        self.broker.log.warn(
            "Redis {url} is away ({why}): delivering on this node only, holding up to {n} "
            "publications for other nodes, reconnecting", url=str(self.url), why=why,
            n=self.broker.settings.buffer)

    def _check_up(self, sent_held: int) -> None:
        if not self.up:
            return
        if self.outage_since is not None:
            self.broker.metrics.counters["broker_reconnects"] += 1
            self.broker.log.info(
                "Redis {url} is back after {seconds:.1f} s: {held} held publications sent, "
                "{dropped} dropped, subscribed again to {topics} topics", url=str(self.url),
                seconds=self.broker.reactor.seconds() - self.outage_since, held=sent_held,
                dropped=self.dropped_in_outage, topics=len(self.broker.channels_of(self.index)))
            self.outage_since = None
        elif not self.ever_up:
            self.broker.log.info("connected to Redis {url}", url=str(self.url))
        self.ever_up = True
        waiting, self._waiting_up = self._waiting_up, []
        for d in waiting:
            d.callback(self)


@implementer(IBroker)
class RedisBroker(BrokerBase, service.Service):
    """Deliver on this node and, through Redis, on every other node.

    A service: connects on start (clients are served meanwhile: local
    delivery needs no Redis), disconnects on stop.
    """

    log = Logger()
    #: This broker's key in /health (an :class:`~oro_sync.ops.health.IDependency`).
    name = "broker"
    #: :meth:`check` reads state the links keep, asking Redis nothing: /health
    #: need not cache its answer.
    live = True

    def __init__(self, registry: Any, settings: BrokerSettings, metrics: Metrics | None = None,
                 reactor: Any = None, outbox: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        if not settings.urls:
            raise ValueError("the Redis broker needs at least one Redis URL")
        self.registry = registry
        self.settings = settings
        self.reactor = reactor
        self.metrics = metrics if metrics is not None else Metrics()
        #: The hub's outbox: times sampled deliveries (publish-to-send latency).
        self.outbox = outbox
        self.node_id = settings.node_id
        self.prefix = settings.channel_prefix + "topic:"
        self.shards = ShardMap([_Shard(self, i, url) for i, url in enumerate(settings.urls)])
        self._echo = '{"v":%d,"origin":%s,' % (WIRE_VERSION, json.dumps(self.node_id))
        self._warn = RateLimitedWarning(self.log, reactor)
        registry.on_created.append(self._interest_gained)
        registry.on_removed.append(self._interest_lost)
        self.metrics.add_source("broker", self.figures)

    # -- the service ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.log.info("node {node} publishing through Redis {urls}", node=self.node_id,
                      urls=", ".join(str(s.url) for s in self.shards.shards))
        for shard in self.shards.shards:
            shard.start()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.DeferredList([s.stop() for s in self.shards.shards], consumeErrors=True)

    def when_up(self) -> defer.Deferred:
        """Fires when every Redis server of this broker is connected."""
        return defer.gatherResults([s.when_up() for s in self.shards.shards])

    def settled(self) -> defer.Deferred:
        """Fires once Redis confirmed every subscription change this node
        sent so far (for tests and for tools that must not race them)."""
        return defer.gatherResults([s.settled() for s in self.shards.shards])

    def check(self) -> defer.Deferred:
        """Up while every Redis server's two links are connected (the links
        notice a lost connection and reconnect by themselves, so their state
        is current without a query); fails naming the servers that are away."""
        away = [s for s in self.shards.shards if not s.up]
        if not away:
            return defer.succeed(len(self.shards.shards))
        why = "; ".join(f"{s.url} away ({s.pub.last_error or s.sub.last_error or 'connecting'})"
                        for s in away)
        return defer.fail(BrokerUnreachable(f"{len(away)} of {len(self.shards.shards)} Redis: {why}"))

    def figures(self) -> dict:
        """The broker's state now (also in /health's and /status' ``broker``)."""
        shards = self.shards.shards
        counters = self.metrics.counters
        return {"node": self.node_id, "redis_up": sum(s.up for s in shards),
                "redis_total": len(shards), "held": sum(len(s.held) for s in shards),
                "interest": len(self.registry.topics),
                "dropped": counters["broker_dropped"], "reconnects": counters["broker_reconnects"]}

    # -- interest ------------------------------------------------------------

    def channels_of(self, index: int) -> list[str]:
        """The channels of this node's current interest on shard ``index``."""
        shard_of = self.shards.index
        return [self.prefix + uri for uri in self.registry.topics if shard_of(uri) == index]

    def _interest_gained(self, topic: Any) -> None:
        proto = self.shards(topic.uri).sub.protocol
        if proto is not None:
            proto.send_subscribe("SUBSCRIBE", [self.prefix + topic.uri])

    def _interest_lost(self, topic: Any) -> None:
        proto = self.shards(topic.uri).sub.protocol
        if proto is not None:
            proto.send_subscribe("UNSUBSCRIBE", [self.prefix + topic.uri])

    # -- publishing ----------------------------------------------------------

    #: Depth of :meth:`local_only` blocks in progress.
    _local_depth = 0

    @contextmanager
    def local_only(self) -> Iterator[None]:
        """Publications made inside stay on this node: what every node
        receives anyway (a push on the Redis push channel) must not reach the
        other nodes a second time through the broker."""
        self._local_depth += 1
        try:
            yield
        finally:
            self._local_depth -= 1

    def publish(self, publication: Publication) -> int:
        n = self._deliver(publication)
        if not publication.origin and not self._local_depth:
            self._send(publication)
        return n

    def _deliver(self, publication: Publication) -> int:
        topic = self.registry.topics.get(publication.topic)
        if topic is None:
            return 0
        return self.deliver_here(topic, publication)

    def encode(self, publication: Publication) -> str:
        """The Redis message for ``publication`` published by this node."""
        wire = publication.to_wire()
        wire["origin"] = self.node_id
        return json.dumps({"v": wire["v"], "origin": self.node_id, **wire},
                          separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def _send(self, publication: Publication) -> None:
        try:
            message = self.encode(publication)
        except (TypeError, ValueError) as e:
            self.metrics.counters["broker_unserializable"] += 1
            self._warn("event on {topic} not sent to other nodes: not JSON ({why})",
                       topic=clip(publication.topic), why=str(e))
            return
        self.shards(publication.topic).send(self.prefix + publication.topic, message)

    # -- receiving -----------------------------------------------------------

    def received(self, channel: Any, message: Any) -> None:
        """A message on one of our channels, from Redis."""
        if isinstance(message, str) and message.startswith(self._echo):
            return  # our own, delivered when it was published
        try:
            if isinstance(message, bytes):
                message = message.decode("utf-8")
            if not isinstance(message, str):
                raise ValueError(f"not a text message ({type(message).__name__})")
            wire = json.loads(message)
            if not isinstance(wire, dict):
                raise ValueError("not a JSON object")
            publication = Publication.from_wire(wire)
            if channel != self.prefix + publication.topic:
                raise ValueError(f"topic {clip(publication.topic)!r} does not belong on this channel")
        except (ValueError, RecursionError, OverflowError, TypeError) as e:
            self.metrics.counters["broker_malformed"] += 1
            self._warn("ignored a message on Redis channel {channel}: {why}",
                       channel=clip(str(channel)), why=clip(str(e)))
            return
        if publication.origin == self.node_id:
            return
        self.metrics.counters["broker_received"] += 1
        try:
            self._deliver(publication)
        except Exception:  # never into txredisapi: it would drop the subscription
            self.metrics.counters["broker_malformed"] += 1
            log.failure("delivering a publication from another node on {topic} failed",
                        topic=clip(publication.topic))
