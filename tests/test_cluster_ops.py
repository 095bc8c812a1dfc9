"""The operations endpoints of a node behind a Redis broker (issues 13 x 14):
/health, /metrics and /status follow the broker's links to a redis-server
the test starts, stops and starts again."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.admin import start_admin
from tests.support.redis_server import redis_server
from tests.test_cluster import next_event, node, subscribed


def redis_down(server):
    """Fires once every Redis link of ``server``'s broker noticed the outage."""
    return defer.gatherResults([s.when_down() for s in server.broker.shards.shards])


class HealthWithRedisTests(unittest.TestCase):
    timeout = 40

    @defer.inlineCallbacks
    def test_health_follows_the_redis_server(self):
        redis = redis_server(self)
        server = node(self, redis.url())
        admin = start_admin(self, server.built)
        yield server.broker.when_up()

        code, body = yield admin.health_report()
        self.assertEqual((code, body["status"]), (200, "ok"), body)
        self.assertEqual(body["broker"]["kind"], "RedisBroker")
        self.assertIs(body["broker"]["up"], True)
        self.assertIs(body["dependencies"]["broker"]["up"], True)

        down = redis_down(server)
        redis.kill()
        yield down
        code, body = yield admin.health_report()
        self.assertEqual((code, body["status"]), (503, "degraded"), body)
        self.assertIs(body["broker"]["up"], False)
        self.assertIn(str(redis.port), body["broker"]["detail"])

        redis.start()
        yield server.broker.when_up()
        code, body = yield admin.health_report()
        self.assertEqual((code, body["status"]), (200, "ok"), body)
        self.assertIs(body["broker"]["up"], True)


def sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), -1)


class BrokerFiguresTests(unittest.TestCase):
    timeout = 40

    @defer.inlineCallbacks
    def test_metrics_health_and_status_move_when_redis_stops(self):
        from tests.test_ops import first_event

        redis = redis_server(self)
        server = node(self, redis.url(), buffer=1)
        admin = start_admin(self, server.built)
        yield server.broker.when_up()
        yield admin.health_report()  # a first check: the broker's dependency gauge
        samples = yield admin.metrics()
        for name in ("oro_sync_broker_reconnects_total", "oro_sync_broker_publications_dropped_total",
                     "oro_sync_broker_publications_held_total", "oro_sync_broker_publications_sent_total"):
            self.assertEqual(sample(samples, name), 0, name)
        self.assertEqual(sample(samples, "oro_sync_dependency_up", dependency="broker"), 1)

        server.broker.publish_event("oro/maintenance", "while up")
        down = redis_down(server)
        redis.kill()
        yield down
        for i in range(3):  # one is held (buffer: 1), two are dropped
            server.broker.publish_event("oro/maintenance", f"during {i}")
        code, body = yield admin.health_report()
        self.assertEqual(code, 503)
        broker = body["broker"]
        self.assertEqual((broker["up"], broker["redis_up"], broker["redis_total"]), (False, 0, 1))
        self.assertEqual((broker["held"], broker["dropped"], broker["reconnects"]), (1, 2, 0))
        self.assertEqual(broker["node"], server.broker.node_id)
        samples = yield admin.metrics()
        self.assertEqual(sample(samples, "oro_sync_broker_publications_sent_total"), 1)
        self.assertEqual(sample(samples, "oro_sync_broker_publications_held_total"), 1)
        self.assertEqual(sample(samples, "oro_sync_broker_publications_dropped_total"), 2)
        self.assertEqual(sample(samples, "oro_sync_dependency_up", dependency="broker"), 0)
        snap = yield first_event(admin.url + "/status/events")
        self.assertEqual((snap["broker"]["up"], snap["broker"]["dropped"]), (False, 2))
        code, page = yield admin.get("/status")
        self.assertIn('"broker":{"kind":"RedisBroker","node":', page)

        redis.start()
        yield server.broker.when_up()
        code, body = yield admin.health_report()
        self.assertEqual((code, body["broker"]["reconnects"], body["broker"]["held"]), (200, 1, 0))
        samples = yield admin.metrics()
        self.assertEqual(sample(samples, "oro_sync_broker_reconnects_total"), 1)
        self.assertEqual(sample(samples, "oro_sync_broker_publications_sent_total"), 2)  # the held one
        self.assertEqual(sample(samples, "oro_sync_dependency_up", dependency="broker"), 1)


class LatencyWithRedisTests(unittest.TestCase):
    timeout = 40

    @defer.inlineCallbacks
    def test_local_and_received_deliveries_are_sampled(self):
        from oro_sync.core.metrics import LATENCY_SAMPLE

        redis = redis_server(self)
        a = node(self, redis.url())
        b = node(self, redis.url())
        yield a.broker.when_up()
        yield b.broker.when_up()
        here = yield a.client(self, "admin")
        there = yield b.client(self, "jane")
        yield subscribed(a, here, "oro/maintenance")
        yield subscribed(b, there, "oro/maintenance")
        n = LATENCY_SAMPLE * 2
        for i in range(n):
            a.broker.publish_event("oro/maintenance", i)
        for i in range(n):
            self.assertEqual((yield next_event(here)), i)
            self.assertEqual((yield next_event(there)), i)
        # Delivered on a (published there) and on b (received from Redis):
        # one in LATENCY_SAMPLE timed on each node, event bytes counted on both.
        self.assertEqual(a.metrics.latency_count, n // LATENCY_SAMPLE)
        self.assertEqual(b.metrics.latency_count, n // LATENCY_SAMPLE)
        self.assertGreater(b.metrics["event_bytes"], 0)
        self.assertEqual(b.metrics["broker_received"], n)
