"""The operations endpoints of a node behind a Redis broker (issues 13 x 14):
/health, /metrics and /status follow the broker's links to a redis-server
the test starts, stops and starts again."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.admin import start_admin
from tests.support.oro_server import start_oro_server
from tests.support.redis_server import redis_server


def redis_node(testcase, url, **broker):
    def tweak(config):
        config.broker = {"url": url, **broker}
    return start_oro_server(testcase, tweak)


def redis_down(server):
    """Fires once every Redis link of ``server``'s broker noticed the outage."""
    return defer.gatherResults([s.when_down() for s in server.broker.shards.shards])


class HealthWithRedisTests(unittest.TestCase):
    timeout = 40

    @defer.inlineCallbacks
    def test_health_follows_the_redis_server(self):
        redis = redis_server(self)
        server = redis_node(self, redis.url())
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
