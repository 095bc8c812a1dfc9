"""The AMQP pusher against a RabbitMQ node the test run starts (once)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, threads
from twisted.trial import unittest

from oro_sync.pushers.settings import DEFAULT_EXCHANGE, DEFAULT_QUEUE
from tests.support.push_services import PushRabbitMQ
from tests.support.pushing import LogCapture, start_pushing_server, subscriber, wait_for


def message(topic, data) -> bytes:
    return json.dumps({"topic": topic, "data": data}).encode()


class AmqpPusherTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> Any:
        self.rabbit = PushRabbitMQ.shared()
        self.logs = LogCapture(self)
        self.server = start_pushing_server(self, {
            "max_message_size": 4096, "log_interval": 3600,
            "reconnect_initial_delay": 0.1, "reconnect_max_delay": 0.5,
            "amqp": {"url": self.rabbit.url}})
        (self.pusher,) = [p for p in self.server.pushers if type(p).__name__ == "AmqpPusher"]
        return self.pusher.when_consuming()

    def publish(self, *bodies: bytes, exchange: str = DEFAULT_EXCHANGE, routing_key: str = "") -> None:
        """Publish as Gos's AMQP pusher does (its exchange, empty routing key)."""
        conn = self.rabbit.blocking()
        try:
            channel = conn.channel()
            for body in bodies:
                channel.basic_publish(exchange=exchange, routing_key=routing_key, body=body)
        finally:
            conn.close()

    def queued(self) -> int:
        return self.queue_state()[0]

    def queue_state(self) -> tuple[int, int]:
        """(ready messages, consumers) of the queue."""
        conn = self.rabbit.blocking()
        try:
            method = conn.channel().queue_declare(DEFAULT_QUEUE, passive=True).method
            return method.message_count, method.consumer_count
        finally:
            conn.close()

    @defer.inlineCallbacks
    def test_push_reaches_a_wamp1_subscriber(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        yield threads.deferToThread(self.publish, message("oro/maintenance", {"isOn": False}))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", {"isOn": False}])
        # Straight to the queue through the default exchange works too.
        yield threads.deferToThread(self.publish, message("oro/maintenance", 2),
                                    exchange="", routing_key=DEFAULT_QUEUE)
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", 2])
        yield wait_for(lambda: self.queued() == 0, what="the messages to be acknowledged")

    @defer.inlineCallbacks
    def test_onpush_is_called_for_a_pushable_handler(self):
        c = yield subscriber(self.server, self, "test/pushable/3")
        yield threads.deferToThread(self.publish, message("test/pushable/3", {"n": 1}))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "test/pushable/3", {"pushed": {"n": 1}, "via": "amqp"}])
        self.assertEqual(self.server.handlers["test.pushable"].pushes,
                         [("test/pushable/3", {"id": "3"}, {"n": 1}, "amqp")])

    @defer.inlineCallbacks
    def test_bad_messages_are_rejected_and_a_good_one_follows(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        bad = [b"{", b'"just a string"', b'{"topic": ["x"], "data": 1}',
               message("nowhere", 1), message("oro/maintenance", "y" * 5000)]
        yield threads.deferToThread(self.publish, *bad, message("oro/maintenance", "good"))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "good"])
        metrics = self.server.factory.metrics
        self.assertEqual((metrics["pushes_dropped"], metrics["pushes_delivered"]), (len(bad), 1))
        self.assertEqual(len(self.logs.matching("dropped")), 1, self.logs.lines)
        self.assertTrue(c.is_open)
        # Rejected without requeueing (and the good one acknowledged): once
        # the consumer is gone, nothing comes back to the queue, as messages
        # merely left unacknowledged would.
        yield self.pusher.stopService()
        yield wait_for(lambda: self.queue_state()[1] == 0, what="the consumer to leave")
        self.assertEqual(self.queued(), 0)

    @defer.inlineCallbacks
    def test_rabbitmq_killed_and_restarted(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        self.rabbit.kill()
        yield wait_for(lambda: self.pusher.consuming is None, what="the lost connection")
        yield wait_for(lambda: len(self.logs.matching("unreachable")) == 1, what="outage start")
        self.rabbit.spawn()
        yield threads.deferToThread(self.rabbit.wait_ready)
        yield self.pusher.when_consuming()
        yield threads.deferToThread(self.publish, message("oro/maintenance", "after"))
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "after"])
        self.assertEqual(len(self.logs.matching("unreachable")), 1, self.logs.lines)
        self.assertEqual(len(self.logs.matching("reconnected after")), 1, self.logs.lines)
        self.assertTrue(c.is_open)
