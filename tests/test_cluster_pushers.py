"""Backend pushers on a cluster (issue 13's pushers x its Redis broker):
two in-process nodes on one test-started Redis, each with the Redis channel
pusher.  A message on the push channel reaches every node and must reach
each subscriber once; a push that reaches one node (HTTP, AMQP) must reach
the other node's subscribers through the broker, once."""

from __future__ import annotations

import json

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.support.oro_server import SECRET
from tests.support.pushing import start_pushing_server, subscriber
from tests.support.redis_server import redis_server
from tests.test_cluster import next_event  # events of oro/maintenance

TOPIC = "oro/maintenance"
PUSH_CHANNEL = "oro-sync:push"


class ClusterPushTests(unittest.TestCase):
    timeout = 40

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = redis = redis_server(self)
        pushers = {"log_interval": 3600, "redis": {"url": redis.url()}}
        self.a = start_pushing_server(self, {**pushers, "http": {"listen": "tcp:0:interface=127.0.0.1"}},
                                      broker={"url": redis.url()})
        self.b = start_pushing_server(self, pushers, broker={"url": redis.url()})
        for node in (self.a, self.b):
            yield node.broker.when_up()
            for pusher in node.pushers:
                if type(pusher).__name__ == "RedisChannelPusher":
                    yield pusher.when_subscribed()
        (http,) = [p for p in self.a.pushers if type(p).__name__ == "HttpPusher"]
        port = yield http.when_listening()
        self.http_url = f"http://127.0.0.1:{port.getHost().port}/publish"
        self.here = yield subscriber(self.a, self, TOPIC)
        self.there = yield subscriber(self.b, self, TOPIC, user="jane")
        for node in (self.a, self.b):
            yield node.broker.settled()

    @defer.inlineCallbacks
    def nothing_more_from_the_other_nodes(self):
        """Each node publishes a marker through the broker.  A duplicate of
        what was pushed would have gone to Redis on the same connection
        before the marker, so it would arrive before it: the next event on
        the other node must be the marker itself."""
        for sender, receiver, local in ((self.a, self.there, self.here), (self.b, self.here, self.there)):
            marker = f"marker from {sender.broker.node_id}"
            sender.broker.publish_event(TOPIC, marker)
            self.assertEqual((yield next_event(local)), marker)
            self.assertEqual((yield next_event(receiver)), marker)

    @defer.inlineCallbacks
    def test_a_push_on_the_redis_channel_reaches_each_subscriber_once(self):
        body = json.dumps({"topic": TOPIC, "data": {"isOn": True}})
        self.assertEqual(self.redis.command("PUBLISH", PUSH_CHANNEL, body), ["2"])  # both nodes
        self.assertEqual((yield next_event(self.here)), {"isOn": True})
        self.assertEqual((yield next_event(self.there)), {"isOn": True})
        # Handled on each node, published on that node only.
        self.assertEqual((self.a.metrics["pushes_delivered"], self.b.metrics["pushes_delivered"]), (1, 1))
        self.assertEqual((self.a.metrics["broker_sent"], self.b.metrics["broker_sent"]), (0, 0))
        yield self.nothing_more_from_the_other_nodes()
        self.assertEqual((self.a.metrics["broker_received"], self.b.metrics["broker_received"]), (1, 1))

    @defer.inlineCallbacks
    def test_an_http_push_reaches_the_other_node_through_the_broker_once(self):
        body = json.dumps({"topic": TOPIC, "data": {"isOn": False}}).encode()
        response = yield treq.post(self.http_url, data=body, persistent=False,
                                   headers={b"Authorization": [f"Bearer {SECRET}".encode()]})
        self.assertEqual(response.code, 200, (yield response.content()))
        self.assertEqual((yield next_event(self.here)), {"isOn": False})
        self.assertEqual((yield next_event(self.there)), {"isOn": False})
        # Handled on a only; the broker carried it to b.
        self.assertEqual((self.a.metrics["pushes_delivered"], self.b.metrics["pushes_delivered"]), (1, 0))
        self.assertEqual((self.a.metrics["broker_sent"], self.b.metrics["broker_received"]), (1, 1))
        yield self.nothing_more_from_the_other_nodes()
