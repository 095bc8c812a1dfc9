"""The Redis channel pusher against a redis-server the test starts."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.support.push_services import PushRedis
from tests.support.pushing import LogCapture, start_pushing_server, subscriber, wait_for

CHANNEL = "oro-sync:push"


def message(topic, data) -> bytes:
    return json.dumps({"topic": topic, "data": data}).encode()


class RedisPusherTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> Any:
        self.redis = PushRedis.shared()
        self.logs = LogCapture(self)
        self.server = start_pushing_server(self, {
            "max_message_size": 4096, "log_interval": 3600,
            "reconnect_initial_delay": 0.05, "reconnect_max_delay": 0.3,
            "redis": {"url": f"redis://127.0.0.1:{self.redis.port}/0"}})
        (self.pusher,) = [p for p in self.server.pushers if type(p).__name__ == "RedisChannelPusher"]
        return self.pusher.when_subscribed()

    def publish(self, body: bytes) -> int:
        return self.redis.publish(CHANNEL, body)

    @defer.inlineCallbacks
    def test_push_reaches_a_wamp1_subscriber_through_the_route_handler(self):
        """oro/maintenance's BroadcastTopic has no onPush: it gets the push
        as the backend's PUBLISH and broadcasts it."""
        c = yield subscriber(self.server, self, "oro/maintenance")
        self.assertEqual(self.publish(message("oro/maintenance", {"isOn": True, "userId": None})), 1)
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", {"isOn": True, "userId": None}])
        self.assertEqual(self.server.factory.metrics["pushes_delivered"], 1)

    @defer.inlineCallbacks
    def test_onpush_is_called_for_a_pushable_handler(self):
        c = yield subscriber(self.server, self, "test/pushable/7")
        self.publish(message("test/pushable/7", [1, 2]))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "test/pushable/7", {"pushed": [1, 2], "via": "redis"}])
        handler = self.server.handlers["test.pushable"]
        self.assertEqual(handler.pushes, [("test/pushable/7", {"id": "7"}, [1, 2], "redis")])

    @defer.inlineCallbacks
    def test_bad_messages_are_dropped_and_a_good_one_follows(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        bad = [b"not json", b"[1, 2]", b'{"data": 1}', b'{"topic": 5, "data": 1}',
               b'{"topic": "", "data": 1}', b'{"topic": "oro/maintenance"}',
               message("no/such/route", 1), message("oro/maintenance", "x" * 5000),
               b'{"topic": "oro/maintenance", "data": NaN}', b"\xff\xfe"]
        for body in bad:
            self.publish(body)
        self.publish(message("oro/maintenance", "good"))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "good"])
        metrics = self.server.factory.metrics
        self.assertEqual(metrics["pushes_dropped"], len(bad))
        self.assertEqual(metrics["pushes_delivered"], 1)
        reasons = metrics.snapshot()["pushers"]["dropped_by_reason"]
        self.assertEqual(reasons, {"not JSON": 3, "not a JSON object": 1, "no topic": 1,
                                   "topic not a non-empty string": 2, "no data": 1,
                                   "unrouted topic": 1, "oversized": 1})
        # One line for the first drop; the rest wait for the interval's summary.
        self.assertEqual(len(self.logs.matching("dropped")), 1, self.logs.lines)
        self.assertTrue(c.is_open)

    @defer.inlineCallbacks
    def test_redis_killed_and_restarted(self):
        """The WebSocket client stays; the pusher reconnects with back-off,
        subscribes again, and the outage is logged once at each end."""
        c = yield subscriber(self.server, self, "oro/maintenance")
        self.redis.kill()
        yield wait_for(lambda: self.pusher.subscriber is None, what="the lost connection")
        # Let a few reconnection attempts fail while Redis is down.
        yield wait_for(lambda: len(self.logs.matching("unreachable")) == 1, what="outage start")
        self.redis.spawn()
        yield threads.deferToThread(self.redis.wait_ready)
        yield self.pusher.when_subscribed()
        self.publish(message("oro/maintenance", "after"))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "after"])
        self.assertEqual(len(self.logs.matching("unreachable")), 1, self.logs.lines)
        self.assertEqual(len(self.logs.matching("reconnected after")), 1, self.logs.lines)
        self.assertEqual(self.pusher.outage.count, 1)
        self.assertTrue(c.is_open)

    @defer.inlineCallbacks
    def test_stopped_pusher_unsubscribes(self):
        yield self.pusher.stopService()
        yield wait_for(lambda: self.publish(message("oro/maintenance", 1)) == 0,
                       what="the subscriber to leave the channel")


class RedisAuthTests(unittest.TestCase):
    """A Redis that requires a password: the URL's (percent-encoded) one works;
    a wrong one is one clear error line, no retry storm, the server goes on."""

    timeout = 30

    def setUp(self) -> None:
        self.redis = PushRedis(password="s3cr:et@")
        self.addCleanup(self.redis.destroy)
        self.redis.start()
        self.logs = LogCapture(self)

    def pusher(self, password: str) -> Any:
        server = start_pushing_server(self, {"redis": {
            "url": f"redis://:{password}@127.0.0.1:{self.redis.port}/0"}})
        (pusher,) = [p for p in server.pushers if type(p).__name__ == "RedisChannelPusher"]
        return server, pusher

    @defer.inlineCallbacks
    def test_password_from_the_url(self):
        server, pusher = self.pusher("s3cr%3Aet%40")
        yield pusher.when_subscribed()
        c = yield subscriber(server, self, "oro/maintenance")
        self.assertEqual(self.redis.publish(CHANNEL, message("oro/maintenance", "authed")), 1)
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "authed"])

    @defer.inlineCallbacks
    def test_wrong_password(self):
        server, pusher = self.pusher("wrong")
        yield wait_for(lambda: self.logs.matching("not retrying"), what="the AUTH error")
        self.assertEqual(len(self.logs.matching("not retrying")), 1, self.logs.lines)
        c = yield subscriber(server, self, "oro/maintenance")  # the WebSocket side is unaffected
        self.assertTrue(c.is_open)
        yield wait_for(lambda: not pusher.factory.pool and not any(
            slot.protocol for slot in pusher.factory.slots), what="the refused connection to close")
        self.assertEqual(self.logs.matching("unreachable"), [])
        self.assertIsNone(pusher.subscriber)
