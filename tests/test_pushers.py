"""The pushers' shared parts without sockets: messages, drop logging, outages, settings."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial import unittest

from oro_sync.config import ConfigError, parse_config
from oro_sync.pushers import build_pushers
from oro_sync.pushers.dispatch import BadPush, DropLog, parse_push
from oro_sync.pushers.outage import Outage
from oro_sync.pushers.settings import parse_pushers
from tests.support.pushing import LogCapture


class ParsePushTests(unittest.TestCase):
    def test_good_messages(self) -> None:
        m = parse_push(b'{"topic": "oro/maintenance", "data": {"isOn": true}, "extra": 1}', 100)
        self.assertEqual((m.topic, m.data), ("oro/maintenance", {"isOn": True}))
        self.assertEqual(parse_push('{"topic": "t", "data": ""}', 0).data, "")
        self.assertIsNone(parse_push(b'{"topic": "t", "data": null}', 0).data)

    def test_bad_messages(self) -> None:
        for body, reason in [(b"x", "not JSON"), (b"\xff", "not JSON"), (b"1e999", "not JSON"),
                             (b"null", "not a JSON object"), (b'{"data": 1}', "no topic"),
                             (b'{"topic": 1, "data": 1}', "topic not a non-empty string"),
                             (b'{"topic": "t"}', "no data"),
                             (b'{"topic": "t", "data": "' + b"x" * 100 + b'"}', "oversized")]:
            with self.assertRaises(BadPush) as caught:
                parse_push(body, 64)
            self.assertEqual(caught.exception.reason, reason, body)


class DropLogTests(unittest.TestCase):
    def test_first_drop_at_once_then_one_summary_per_interval(self) -> None:
        logs = LogCapture(self)
        clock = task.Clock()
        drops = DropLog(clock, interval=10)
        drops.dropped("redis", BadPush("not JSON", "invalid JSON: x"))
        self.assertEqual(len(logs.lines), 1)
        self.assertIn("(redis): not JSON (invalid JSON: x)", logs.lines[0])
        for _ in range(500):
            drops.dropped("redis", BadPush("not JSON"))
        drops.dropped("http", BadPush("bad secret"))
        self.assertEqual(len(logs.lines), 1)
        clock.advance(10)
        self.assertEqual(len(logs.lines), 2)
        self.assertIn("dropped 501 more pushed messages in 10 s (http: bad secret: 1, redis: not JSON: 500)",
                      logs.lines[1])
        clock.advance(10)  # a quiet interval: no line, and the next drop is logged at once
        self.assertEqual(len(logs.lines), 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        drops.dropped("amqp", BadPush("no topic"))
        self.assertEqual(len(logs.lines), 3)
        self.assertEqual(drops.totals, {"not JSON": 501, "bad secret": 1, "no topic": 1})
        drops.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class OutageTests(unittest.TestCase):
    def test_one_line_at_each_end(self) -> None:
        logs = LogCapture(self)
        clock = task.Clock()
        outage = Outage("Redis x", clock)
        outage.up()
        for _ in range(5):
            outage.down("refused")
            clock.advance(1)
        outage.up()
        outage.up()
        self.assertEqual([line.split(":", 1)[1].strip() for line in logs.lines],
                         ["connected", "unreachable (refused); reconnecting with back-off",
                          "reconnected after 5.0 s"])
        self.assertEqual(outage.count, 1)


class SettingsTests(unittest.TestCase):
    def test_defaults_and_urls(self) -> None:
        self.assertFalse(parse_pushers(None).any)
        s = parse_pushers({"redis": {"url": "rediss://:p%40ss@cache:6380/2"},
                           "amqp": {"url": "amqp://guest:guest@127.0.0.1:5672/%2F"},
                           "http": {"listen": "tcp:8081"}}, auth_secret="S")
        self.assertEqual((s.redis.url.host, s.redis.url.port, s.redis.url.password, s.redis.url.db,
                          s.redis.url.tls, s.redis.channel), ("cache", 6380, "p@ss", 2, True, "oro-sync:push"))
        self.assertEqual((s.amqp.exchange, s.amqp.queue, s.amqp.routing_key),
                         ("gos_websocket_exchange", "gos_websocket", ""))
        self.assertEqual((s.http.path, s.http.secret), ("/publish", "S"))

    def test_errors_name_the_setting(self) -> None:
        for section, words in [
            ({"nope": 1}, "unknown pushers setting(s) nope"),
            ({"redis": {"url": "http://x"}}, "pushers.redis.url must be redis://"),
            ({"redis": {"url": "redis://x/abc"}}, "database must be a number"),
            ({"redis": {}}, "pushers.redis.url must be a non-empty string"),
            ({"amqp": {"url": "redis://x"}}, "pushers.amqp.url must be amqp://"),
            ({"amqp": {"url": "amqp://x", "prefetch": 0}}, "pushers.amqp.prefetch"),
            ({"http": {"listen": "tcp:1"}}, "pushers.http needs a secret"),
            ({"http": {"listen": "tcp:1", "secret": "s", "path": "publish"}}, "pushers.http.path"),
            ({"max_message_size": -1}, "pushers.max_message_size"),
            ({"reconnect_initial_delay": 5, "reconnect_max_delay": 1}, "reconnect_max_delay"),
            ({"log_interval": float("nan")}, "pushers.log_interval"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_pushers(section)
            self.assertIn(words, str(caught.exception))

    def test_config_file_section(self) -> None:
        cfg = parse_config({"auth": {"secret": "S"}, "pushers": {"http": {"listen": "tcp:0"}}})
        self.assertEqual(cfg.pushers, {"http": {"listen": "tcp:0"}})
        with self.assertRaises(ConfigError):
            parse_config({"pushers": {"http": {"listen": "tcp:0"}}})  # no secret anywhere
        with self.assertRaises(ConfigError):
            parse_config({"pushers": 5})

    def test_no_services_unless_asked(self) -> None:
        self.assertEqual(build_pushers(parse_pushers({}), None, None, task.Clock()), [])


class DispatcherTests(unittest.TestCase):
    """The dispatcher on a real hub and policy, without sockets."""

    def make(self):
        from contextlib import contextmanager

        from oro_sync.core.broker import LocalBroker
        from oro_sync.core.hub import Hub
        from oro_sync.oro.pubsub import OroPubSub
        from oro_sync.oro.routing import Router, compile_route
        from oro_sync.oro.topics import BroadcastTopic
        from oro_sync.pushers.dispatch import PushDispatcher
        from tests.support.fakes import FakeSession

        class ScopeRecordingBroker(LocalBroker):
            """A local broker that notes whether each publication was made
            under local_only (what a broker spanning nodes must honour)."""

            local = False
            seen: list = []

            @contextmanager
            def local_only(self):
                self.local = True
                try:
                    yield
                finally:
                    self.local = False

            def publish(self, publication):
                self.seen.append((publication.event, self.local, publication.publication_id))
                return super().publish(publication)

        hub = Hub(broker=lambda topics: ScopeRecordingBroker(topics), clock=task.Clock())
        route = compile_route("m", {"channel": "oro/maintenance", "handler": {"callback": "m"}})
        policy = OroPubSub(hub, Router([route]), {"m": BroadcastTopic("m")})
        s = FakeSession("S")
        policy.subscribe(s, "oro/maintenance")
        return hub, PushDispatcher(policy, DropLog(task.Clock())), s

    def test_channel_pushes_stay_on_this_node_others_go_through_the_broker(self) -> None:
        hub, dispatcher, s = self.make()
        a = dispatcher.dispatch(b'{"topic": "oro/maintenance", "data": 1}', "redis", everywhere=True)
        b = dispatcher.dispatch(b'{"topic": "oro/maintenance", "data": 2}', "amqp")
        self.assertEqual(s.events(), [("oro/maintenance", 1), ("oro/maintenance", 2)])
        self.assertEqual(hub.broker.seen, [(1, True, a.publication_id), (2, False, b.publication_id)])
        self.assertNotEqual(a.publication_id, b.publication_id)
        # One backend session per provider, with a backend identity.
        session = dispatcher.session("redis")
        self.assertTrue(session.identity.backend)
        self.assertIs(dispatcher.session("redis"), session)
        self.assertIsNot(dispatcher.session("amqp"), session)

    def test_a_bug_is_contained(self) -> None:
        hub, dispatcher, s = self.make()

        def explode(name):
            raise RuntimeError("bug")

        dispatcher.policy.push_request = explode
        result = dispatcher.dispatch(b'{"topic": "oro/maintenance", "data": 1}', "http")
        self.assertFalse(result.delivered)
        self.assertEqual(result.error.reason, "internal error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
