"""Topic handlers asking the cluster who is connected (``@cluster_presence``,
the server's IClusterPresence) beside this node's facts (``@presence``): two
in-process nodes on one test-started Redis."""

from __future__ import annotations

import os

import yaml
from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.brokers.presence import HubPresence, IClusterPresence, RedisPresence
from oro_sync.oro.services import default_references
from tests.support.oro_server import start_oro_server
from tests.support.pushing import round_trip
from tests.support.redis_server import redis_server
from tests.test_cluster import next_event

TOPIC = "test/who"


def presence_node(testcase, url):
    """A node with a Redis broker and the WhoIsConnectedTopic route."""
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    routing = os.path.join(base, "websocket_routing.yml")
    with open(routing, "w") as f:
        yaml.safe_dump({"test.who": {"channel": TOPIC, "handler": {"callback": "test.who"}}}, f)

    def tweak(config):
        config.broker = {"url": url}
        config.routing.append(routing)
        config.services["test.topic.who"] = {
            "class": "tests.support.presence_topic.WhoIsConnectedTopic",
            "arguments": ["test.who", "@cluster_presence", "@presence"]}
    return start_oro_server(testcase, tweak)


class ClusterPresenceForHandlersTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_a_handler_sees_a_user_connected_on_another_node(self):
        redis = redis_server(self)
        a = presence_node(self, redis.url())
        b = presence_node(self, redis.url())
        handler = a.handlers["test.who"]
        # The server's registry itself, not a copy or a stand-in.
        self.assertIs(handler.cluster_presence, a.built.presence)
        self.assertIsInstance(handler.cluster_presence, RedisPresence)
        self.assertIs(handler.presence, a.factory.hub.presence)

        jane = yield b.client(self, "jane")
        yield round_trip(jane)  # jane's session is open on b
        registry = b.built.presence
        yield registry.when_up()
        registry.update()
        yield registry.flushed()  # b's entries are in Redis

        watcher = yield a.client(self, "admin")
        watcher.subscribe(TOPIC)
        yield round_trip(watcher)
        backend = yield a.client(self)
        backend.publish(TOPIC, "jane", [], [])
        self.assertEqual((yield next_event(watcher, TOPIC)), {"user": "jane", "here": False, "anywhere": True})
        backend.publish(TOPIC, "gone", [], [])
        self.assertEqual((yield next_event(watcher, TOPIC)), {"user": "gone", "here": False, "anywhere": False})
        yield a.built.presence.when_up()
        a.built.presence.update()
        yield a.built.presence.flushed()
        backend.publish(TOPIC, "admin", [], [])
        self.assertEqual((yield next_event(watcher, TOPIC)), {"user": "admin", "here": True, "anywhere": True})

    def test_without_a_broker_it_is_this_process(self):
        from twisted.internet import task
        from oro_sync.core.hub import Hub

        hub = Hub(clock=task.Clock())
        refs = default_references(task.Clock(), hub)
        presence = refs["cluster_presence"]("my.handler")
        self.assertIsInstance(presence, HubPresence)
        self.assertTrue(IClusterPresence.providedBy(presence))
        registry = object()
        self.assertIs(default_references(task.Clock(), hub, registry)["cluster_presence"]("x"), registry)
