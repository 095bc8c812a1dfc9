"""Nodes behind one Redis: several Oro servers in this process, each with its
own RedisBroker, meeting in a redis-server the test starts itself."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.oro_server import start_oro_server
from tests.support.redis_server import redis_server
from tests.support import wamp2
from tests.support.client import round_trip as client_round_trip

TOPIC = "oro/maintenance"
CHANNEL = "oro-sync:topic:" + TOPIC


def node(testcase, urls, **broker):
    def tweak(config):
        config.broker = {"url": urls, **broker}
    return start_oro_server(testcase, tweak)


@defer.inlineCallbacks
def round_trip(c):
    """All the client sent before was processed by its server (events that
    arrived meanwhile are kept in ``c.seen``)."""
    seen = yield client_round_trip(c)
    if seen:
        c.seen.extend(seen)


@defer.inlineCallbacks
def subscribed(server, client, *topics):
    """Subscribe a v1 client and wait until Redis has its node's subscriptions."""
    client.seen = getattr(client, "seen", [])
    for t in topics:
        client.subscribe(t)
    yield round_trip(client)
    yield server.broker.settled()


@defer.inlineCallbacks
def next_event(c, topic=TOPIC):
    msg = yield c.next_message()
    while not (isinstance(msg, list) and msg[:2] == [8, topic]):
        msg = yield c.next_message()
    return msg[2]


class CrossNodeTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.redis = redis_server(self)

    @defer.inlineCallbacks
    def nodes(self, n, **broker):
        servers = [node(self, self.redis.url(), **broker) for _ in range(n)]
        for s in servers:
            yield s.broker.when_up()
        return servers

    @defer.inlineCallbacks
    def test_two_nodes_v1(self):
        a, b = yield self.nodes(2)
        backend = yield a.client(self)
        local = yield a.client(self, "admin")
        remote = yield b.client(self, "jane")
        yield subscribed(a, local, TOPIC)
        yield subscribed(b, remote, TOPIC)
        backend.publish(TOPIC, {"isOn": True}, [], [])
        self.assertEqual((yield next_event(local)), {"isOn": True})
        self.assertEqual((yield next_event(remote)), {"isOn": True})
        # Sent once to Redis, received once by the other node; the echo is
        # recognised without counting as received.
        self.assertEqual(a.metrics["broker_sent"], 1)
        self.assertEqual(b.metrics["broker_received"], 1)
        self.assertEqual(a.metrics["broker_received"], 0)

    @defer.inlineCallbacks
    def test_three_nodes_v1_and_v2_share_publication_id(self):
        a, b, c = yield self.nodes(3)
        publisher = yield wamp2.join(self, a.number, path=a.path())
        v1 = yield b.client(self, "admin")
        yield subscribed(b, v1, TOPIC)
        v2 = yield wamp2.join(self, c.number, path=c.path("jane"))
        queue, _ = yield wamp2.events(v2, TOPIC)
        yield c.broker.settled()
        from autobahn.wamp.types import PublishOptions
        pub = yield publisher.publish(TOPIC, {"isOn": False}, options=PublishOptions(acknowledge=True))
        self.assertEqual((yield next_event(v1)), {"isOn": False})
        args, kwargs, details = yield queue.next()
        self.assertEqual(args, [{"isOn": False}])
        self.assertEqual(details.publication, pub.id)

    @defer.inlineCallbacks
    def test_exclude_and_eligible_across_nodes(self):
        a, b, c = yield self.nodes(3)
        backend = yield a.client(self)
        admin = yield b.client(self, "admin")
        jane = yield c.client(self, "jane")
        yield subscribed(b, admin, TOPIC)
        yield subscribed(c, jane, TOPIC)
        backend.publish(TOPIC, "only admin", [], [admin.session_id])
        backend.publish(TOPIC, "not jane", [jane.session_id], [])
        backend.publish(TOPIC, "everyone", [], [])
        self.assertEqual((yield next_event(admin)), "only admin")
        self.assertEqual((yield next_event(admin)), "not jane")
        self.assertEqual((yield next_event(admin)), "everyone")
        self.assertEqual((yield next_event(jane)), "everyone")

    @defer.inlineCallbacks
    def test_interest_follows_local_subscribers(self):
        a, b = yield self.nodes(2)
        self.assertEqual(self.redis.command("PUBSUB", "CHANNELS"), [])
        one = yield b.client(self, "admin")
        two = yield b.client(self, "jane")
        yield subscribed(b, one, TOPIC, "oro/data/update")
        yield subscribed(b, two, TOPIC)
        self.assertEqual(sorted(self.redis.command("PUBSUB", "CHANNELS")),
                         ["oro-sync:topic:oro/data/update", CHANNEL])
        # One Redis subscription per node and topic, however many local subscribers.
        self.assertEqual(self.redis.command("PUBSUB", "NUMSUB", CHANNEL), [CHANNEL, "1"])
        one.unsubscribe(TOPIC)
        one.unsubscribe("oro/data/update")
        yield round_trip(one)
        yield b.broker.settled()
        self.assertEqual(self.redis.command("PUBSUB", "CHANNELS"), [CHANNEL])
        yield two.disconnect()
        yield b.session_closed(two.session_id)
        yield b.broker.settled()
        self.assertEqual(self.redis.command("PUBSUB", "CHANNELS"), [])

    @defer.inlineCallbacks
    def test_malformed_and_foreign_messages_are_ignored(self):
        a, b = yield self.nodes(2)
        backend = yield a.client(self)
        user = yield b.client(self, "admin")
        yield subscribed(b, user, TOPIC)
        for junk in ["not json", "[1,2]", '{"v":99,"topic":"oro/maintenance"}',
                     '{"v":1,"origin":"x","topic":"other/topic","id":1,"exclude":[],'
                     '"eligible":null,"event":1}', '{"v":1,"topic":5}', "[" * 100000,
                     # an id json reads as an infinite float (it used to
                     # escape into txredisapi and drop the subscription)
                     '{"v":1,"origin":"x","topic":"oro/maintenance","id":1e400,"exclude":[],'
                     '"eligible":null,"event":1}',
                     '{"v":1,"origin":"x","topic":"oro/maintenance","id":"7","exclude":[],'
                     '"eligible":null,"event":1}']:
            self.redis.command("PUBLISH", CHANNEL, junk)
        backend.publish(TOPIC, "after the junk", [], [])
        self.assertEqual((yield next_event(user)), "after the junk")
        self.assertEqual(b.metrics["broker_malformed"], 8)
        self.assertEqual(b.metrics["broker_received"], 1)
        # A well-formed message from a node that is not an oro-sync server
        # in this process (e.g. another tool) is delivered like any other.
        self.redis.command("PUBLISH", CHANNEL, '{"v":1,"origin":"tool","topic":"oro/maintenance",'
                           '"id":7,"exclude":[],"eligible":null,"event":"from a tool"}')
        self.assertEqual((yield next_event(user)), "from a tool")

    @defer.inlineCallbacks
    def test_keep_alive_ping_stays_on_its_node(self):
        from twisted.internet import task

        from oro_sync.oro.topics import PING_MESSAGE

        a, b = yield self.nodes(2)
        clock = task.Clock()
        a.handlers["oro_sync.ping"].clock = clock
        here = yield a.client(self, "admin")
        there = yield b.client(self, "jane")
        yield subscribed(a, here, "oro/ping")
        yield subscribed(b, there, "oro/ping")
        clock.advance(a.handlers["oro_sync.ping"].interval)
        self.assertEqual((yield next_event(here, "oro/ping")), PING_MESSAGE)
        self.assertEqual(a.metrics["broker_sent"], 0)
        # A publication through the broker on the same topic does travel.
        a.broker.publish_event("oro/ping", "through the broker")
        self.assertEqual((yield next_event(there, "oro/ping")), "through the broker")
        self.assertEqual(b.metrics["broker_received"], 1)


class PasswordTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_password_in_the_url(self):
        redis = redis_server(self, password="s3cret")
        a, b = node(self, redis.url()), node(self, redis.url())
        yield a.broker.when_up()
        yield b.broker.when_up()
        backend = yield a.client(self)
        user = yield b.client(self, "admin")
        yield subscribed(b, user, TOPIC)
        backend.publish(TOPIC, "with a password", [], [])
        self.assertEqual((yield next_event(user)), "with a password")

    @defer.inlineCallbacks
    def test_wrong_password_is_an_outage_with_the_reason_and_local_delivery_goes_on(self):
        from twisted.logger import globalLogPublisher

        redis = redis_server(self, password="s3cret")
        away = defer.Deferred()

        def observe(event):
            if "is away" in event.get("log_format", "") and not away.called:
                away.callback(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        url = redis.url().replace("s3cret", "wrong")
        a = node(self, url)
        event = yield away
        self.assertIn("auth", event["why"].lower())
        self.assertFalse(a.broker.shards.shards[0].up)
        backend = yield a.client(self)
        user = yield a.client(self, "admin")
        yield subscribed_locally(user, TOPIC)
        backend.publish(TOPIC, "local only", [], [])
        self.assertEqual((yield next_event(user)), "local only")

    @defer.inlineCallbacks
    def test_rediss_with_the_servers_authority(self):
        import os

        from tests.test_tls import self_signed

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert, _ = self_signed(directory)
        redis = redis_server(self, password="s3cret", tls=(key, cert))
        a, b = node(self, redis.url(), tls_ca=cert), node(self, redis.url(), tls_ca=cert)
        yield a.broker.when_up()
        yield b.broker.when_up()
        backend = yield a.client(self)
        user = yield b.client(self, "admin")
        yield subscribed(b, user, TOPIC)
        self.assertEqual(redis.command("PUBSUB", "CHANNELS"), [CHANNEL])
        backend.publish(TOPIC, "over TLS", [], [])
        self.assertEqual((yield next_event(user)), "over TLS")


@defer.inlineCallbacks
def subscribed_locally(client, *topics):
    client.seen = getattr(client, "seen", [])
    for t in topics:
        client.subscribe(t)
    yield round_trip(client)


class SettingsTests(unittest.TestCase):
    def test_urls_and_errors(self):
        from oro_sync.brokers.settings import parse_broker
        from oro_sync.config import ConfigError

        s = parse_broker({"url": "rediss://user:p%40ss@example.org:6380/3"})
        (url,) = s.urls
        self.assertEqual((url.host, url.port, url.db, url.username, url.password, url.tls),
                         ("example.org", 6380, 3, "user", "p@ss", True))
        self.assertNotIn("p@ss", str(url))
        self.assertFalse(parse_broker({}).enabled)
        self.assertFalse(parse_broker(None, "memory").enabled)
        self.assertEqual(len(parse_broker({}, "redis://a:1/0,redis://b:2/0").urls), 2)
        self.assertEqual(parse_broker({"url": ["redis://a", "redis://b"]}).urls[1].port, 6379)
        for bad, words in [({"url": "http://x"}, "redis://"), ({"url": "redis://h/x"}, "number"),
                           ({"url": ["redis://a", "redis://a"]}, "same Redis"),
                           ({"buffer": -1}, "buffer"), ({"presence_ttl": 0.5}, "presence_ttl"),
                           ({"nope": 1}, "unknown broker"), ({"url": 5}, "redis://"),
                           ({"reconnect_max_delay": float("nan")}, "reconnect_max_delay")]:
            with self.assertRaises(ConfigError) as e:
                parse_broker(bad)
            self.assertIn(words, str(e.exception))

    def test_config_file_section_is_checked(self):
        from oro_sync.config import ConfigError, parse_config

        self.assertEqual(parse_config({"broker": {"url": "redis://h:1/2"}}).broker["url"], "redis://h:1/2")
        with self.assertRaises(ConfigError):
            parse_config({"broker": {"url": "redis//h"}})


class ShardingTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_topics_spread_over_two_redis_servers(self):
        from oro_sync.brokers.shards import ShardMap

        r1, r2 = redis_server(self), redis_server(self)
        urls = [r1.url(), r2.url()]
        shard = ShardMap([0, 1])
        topics = ["oro/email_event/1/%d" % i for i in range(12)]
        by_shard = {0: [t for t in topics if shard(t) == 0], 1: [t for t in topics if shard(t) == 1]}
        self.assertTrue(by_shard[0] and by_shard[1])
        a = node(self, urls)
        b = node(self, urls)
        yield a.broker.when_up()
        yield b.broker.when_up()
        backend = yield a.client(self)
        user = yield b.client(self, "admin")
        yield subscribed(b, user, *topics)
        self.assertEqual(sorted(r1.command("PUBSUB", "CHANNELS")),
                         sorted("oro-sync:topic:" + t for t in by_shard[0]))
        self.assertEqual(sorted(r2.command("PUBSUB", "CHANNELS")),
                         sorted("oro-sync:topic:" + t for t in by_shard[1]))
        for t in topics:
            backend.publish(t, t, [], [])
        got = []
        for _ in topics:
            msg = yield user.next_message()
            while not (isinstance(msg, list) and msg[0] == 8):
                msg = yield user.next_message()
            got.append(msg[2])
        self.assertEqual(sorted(got), sorted(topics))


class SteppedReactor:
    """The real reactor for sockets, a task.Clock for timers: the test
    decides when this node's broker tries to reconnect."""

    def __init__(self, clock):
        self._clock = clock
        self.callLater = clock.callLater
        self.seconds = clock.seconds

    def __getattr__(self, name):
        from twisted.internet import reactor
        return getattr(reactor, name)


class OutageTests(unittest.TestCase):
    timeout = 40

    @defer.inlineCallbacks
    def test_redis_killed_and_restarted_mid_stream(self):
        from twisted.internet import reactor, task
        from twisted.logger import globalLogPublisher

        from oro_sync.brokers.redis import RedisBroker
        from oro_sync.brokers.settings import parse_broker
        from oro_sync.core.hub import Hub
        from oro_sync.websocket.kernel_write import KernelWriter

        redis = redis_server(self)
        clock = task.Clock()
        settings = parse_broker({"url": redis.url(), "buffer": 2})
        hub = Hub(broker=lambda registry: RedisBroker(registry, settings, None, SteppedReactor(clock)),
                  clock=reactor, writer=KernelWriter)
        a = start_oro_server(self, hub=hub)
        b = node(self, redis.url())
        lines = []

        def observe(event):
            if event.get("log_source") is a.broker:
                lines.append(event.get("log_format", ""))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        yield a.broker.when_up()
        yield b.broker.when_up()

        backend = yield a.client(self)
        local = yield a.client(self, "admin")
        remote = yield b.client(self, "jane")
        leaving = yield b.client(self, "jane")
        yield subscribed(a, local, TOPIC)
        yield subscribed(b, remote, TOPIC)
        yield subscribed(b, leaving, "oro/email_event/1/1")
        backend.publish(TOPIC, "before", [], [])
        self.assertEqual((yield next_event(local)), "before")
        self.assertEqual((yield next_event(remote)), "before")

        down = [a.broker.shards.shards[0].when_down(), b.broker.shards.shards[0].when_down()]
        redis.kill()
        yield defer.gatherResults(down)
        # Interest changes while Redis is away.
        remote.subscribe("oro/data/update")
        yield round_trip(remote)
        leaving.unsubscribe("oro/email_event/1/1")
        yield round_trip(leaving)
        for i in range(5):
            backend.publish(TOPIC, f"during {i}", [], [])
        for i in range(5):  # local delivery goes on
            self.assertEqual((yield next_event(local)), f"during {i}")
        self.assertEqual(a.broker.metrics["broker_held"], 2)
        self.assertEqual(a.broker.metrics["broker_dropped"], 3)

        redis.start()
        yield b.broker.when_up()
        yield b.broker.settled()
        # Exactly the current interest, the change made during the outage included.
        self.assertEqual(sorted(redis.command("PUBSUB", "CHANNELS")),
                         ["oro-sync:topic:oro/data/update", CHANNEL])
        self.assertEqual(redis.command("PUBSUB", "NUMSUB", CHANNEL), [CHANNEL, "1"])
        clock.advance(60)  # node a's reconnection attempt
        yield a.broker.when_up()
        yield a.broker.settled()
        self.assertEqual(redis.command("PUBSUB", "NUMSUB", CHANNEL), [CHANNEL, "2"])
        # The held publications reach the other node, in order, then new ones.
        self.assertEqual((yield next_event(remote)), "during 0")
        self.assertEqual((yield next_event(remote)), "during 1")
        backend.publish(TOPIC, "after", [], [])
        self.assertEqual((yield next_event(remote)), "after")
        self.assertEqual((yield next_event(local)), "after")
        self.assertEqual(len([f for f in lines if "is away" in f]), 1, lines)
        self.assertEqual(len([f for f in lines if "is back" in f]), 1, lines)
        # No WebSocket client was dropped.
        self.assertEqual(len(a.factory.hub.sessions), 2)
        self.assertEqual(len(b.factory.hub.sessions), 2)


class PresenceTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_registry_over_nodes_and_a_dead_node_drops_out(self):
        from twisted.internet import reactor, task

        import dataclasses

        from oro_sync.brokers.presence import RedisPresence

        redis = redis_server(self)
        servers, registries, clocks = [], [], []
        for _ in range(2):
            s = node(self, redis.url())
            yield s.broker.when_up()
            clock = task.Clock()
            clock.advance(reactor.seconds())
            # The node's own registry, with its updates on the test's clock.
            yield s.built.presence.stopService()
            settings = dataclasses.replace(s.broker.settings, presence_interval=1, presence_ttl=3)
            registry = RedisPresence(s.factory.hub, settings, reactor, clock)
            registry.startService()
            self.addCleanup(registry.stopService)
            servers.append(s)
            registries.append(registry)
            clocks.append(clock)
        a, b = servers
        admin_a = yield a.client(self, "admin")
        admin_b = yield b.client(self, "admin")
        jane = yield b.client(self, "jane")
        yield a.client(self)  # a backend: counted as a session, not as a user
        yield subscribed(a, admin_a, TOPIC)
        yield subscribed(b, admin_b, TOPIC, "oro/data/update")
        yield subscribed(b, jane, TOPIC)

        @defer.inlineCallbacks
        def tick(*which):
            for i in which:
                clocks[i].advance(1)
                yield registries[i].flushed()
        yield tick(0, 1)
        ra, rb = registries
        self.assertEqual(sorted((yield ra.nodes())), sorted([ra.node_id, rb.node_id]))
        self.assertEqual((yield ra.connected_users()), {"admin": 2, "jane": 1})
        self.assertTrue((yield rb.is_connected("jane")))
        self.assertFalse((yield ra.is_connected("gone")))
        self.assertEqual((yield ra.session_count()), 4)
        self.assertEqual((yield ra.subscriber_count(TOPIC)), 3)
        self.assertEqual((yield rb.subscriber_counts()), {TOPIC: 3, "oro/data/update": 1})
        # Only what changed is sent: jane leaves.
        yield jane.disconnect()
        yield b.session_closed(jane.session_id)
        yield tick(1)
        self.assertEqual((yield ra.connected_users()), {"admin": 2})
        self.assertEqual((yield ra.subscriber_count(TOPIC)), 2)
        # b's entries vanish while b lives (it stalled past the ttl): with
        # only changes sent they would never come back; the next updates
        # notice the missing key and send everything again.
        redis.command("DEL", f"oro-sync:presence:{rb.node_id}:users", f"oro-sync:presence:{rb.node_id}:topics")
        yield tick(0, 1)  # (both: the nodes' clocks stay together)
        yield tick(0, 1)
        self.assertEqual((yield ra.connected_users()), {"admin": 2})
        self.assertEqual((yield ra.subscriber_count(TOPIC)), 2)
        # Node b dies (stops renewing): within presence_ttl it is gone, and
        # Redis has an expiry on its keys.
        self.assertGreater(int(redis.command("PTTL", f"oro-sync:presence:{rb.node_id}:users")[0]), 0)
        rb._loop.stop()
        for _ in range(5):  # presence_ttl (3 s) and more since b's last update
            yield tick(0)
        self.assertEqual((yield ra.nodes()), [ra.node_id])
        self.assertEqual((yield ra.connected_users()), {"admin": 1})
        self.assertEqual((yield ra.subscriber_count(TOPIC)), 1)
        # A clean stop leaves at once.
        yield ra.stopService()
        self.assertEqual(redis.command("EXISTS", f"oro-sync:presence:{ra.node_id}:users"), ["0"])

    @defer.inlineCallbacks
    def test_built_server_has_presence_over_redis(self):
        from oro_sync.brokers.presence import HubPresence, RedisPresence

        redis = redis_server(self)
        s = node(self, redis.url(), presence_interval=0.05)
        self.assertIsInstance(s.built.presence, RedisPresence)
        yield s.broker.when_up()
        local = start_oro_server(self)
        self.assertIsInstance(local.built.presence, HubPresence)
        self.assertEqual((yield local.built.presence.session_count()), 0)


class RateLimitedWarningTests(unittest.TestCase):
    def test_one_line_per_interval_with_a_count_of_the_rest(self):
        from twisted.internet import task
        from twisted.logger import LogLevel

        from oro_sync.brokers.ratelog import RateLimitedWarning
        from oro_sync.logs import Logger

        events = []
        clock = task.Clock()
        warn = RateLimitedWarning(Logger(observer=events.append), clock, interval=10)
        self.assertTrue(warn("bad {what}", what=1))
        for i in range(5):
            self.assertFalse(warn("bad {what}", what=i))
        clock.advance(10)
        self.assertTrue(warn("bad {what}", what=9))
        self.assertEqual([(e["log_level"], e["what"], e["suppressed"]) for e in events],
                         [(LogLevel.warn, 1, 0), (LogLevel.warn, 9, 5)])


class LargeInterestTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_resubscribing_thousands_of_topics_after_an_outage(self):
        """More channels than one SUBSCRIBE carries: all are back after a restart."""
        redis = redis_server(self)
        b = node(self, redis.url())
        yield b.broker.when_up()
        topics = ["oro/email_event/1/%d" % i for i in range(2500)]
        for i in range(0, 2500, 1000):  # limits.max_subscriptions is 1000 per connection
            user = yield b.client(self, "admin")
            yield subscribed(b, user, *topics[i:i + 1000])
        self.assertEqual(redis.command("PUBSUB", "NUMPAT"), ["0"])
        self.assertEqual(len(redis.command("PUBSUB", "CHANNELS")), 2500)
        down = b.broker.shards.shards[0].when_down()
        redis.kill()
        yield down
        redis.start()
        yield b.broker.when_up()
        yield b.broker.settled()
        self.assertEqual(sorted(redis.command("PUBSUB", "CHANNELS")),
                         sorted("oro-sync:topic:" + t for t in topics))


class LinkKeepAliveTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_broker_links_probe_a_silent_redis(self):
        # Without keep-alive a Redis that vanished without closing (a host
        # gone) would leave the subscriber link deaf, with no outage line.
        import socket

        redis = redis_server(self)
        s = node(self, redis.url())
        yield s.broker.when_up()
        (shard,) = s.broker.shards.shards
        for link in (shard.pub, shard.sub):
            handle = link.protocol.transport.socket
            self.assertEqual(handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 30)


class HeldBytesTests(unittest.TestCase):
    def test_held_publications_are_bounded_in_bytes_too(self):
        from twisted.internet import reactor

        from oro_sync.brokers.redis import RedisBroker
        from oro_sync.brokers.settings import parse_broker
        from oro_sync.core.metrics import Metrics

        settings = parse_broker({"url": "redis://127.0.0.1:1/0", "buffer": 100, "buffer_bytes": 100})
        metrics = Metrics()
        from oro_sync.core.topic import TopicRegistry

        broker = RedisBroker(TopicRegistry(), settings, metrics, reactor)  # never started: Redis is "away"
        (shard,) = broker.shards.shards
        for _ in range(3):
            shard.send("oro-sync:topic:t", "x" * 40)
        self.assertEqual(len(shard.held), 2)
        self.assertEqual((metrics.counters["broker_held"], metrics.counters["broker_dropped"]), (2, 1))
        self.assertEqual(shard.held_bytes, 80)
