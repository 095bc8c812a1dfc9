"""The core contract: publications a broker can carry, one publication id
from PUBLISHED to every EVENT, and one Metrics object that sees the server."""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp.types import PublishOptions
from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.core.payload import Payload
from oro_sync.core.publish import Publication, PublishRequest
from tests.support import wamp2
from tests.test_protection import ServerTestCase


class PublicationWireTests(unittest.TestCase):
    def test_round_trip_through_json(self) -> None:
        for event in ({"isOn": True}, None, [1, "a"], Payload([1, 2], {"k": "v"}), Payload([], {})):
            pub = Publication.of("oro/x", event, exclude=["a"], eligible=["b", "c"],
                                 publication_id=42, origin="node-1")
            back = Publication.from_wire(json.loads(json.dumps(pub.to_wire())))
            self.assertEqual(back, pub)
        everyone = Publication.of("t", 1)
        self.assertIsNone(Publication.from_wire(everyone.to_wire()).eligible)
        self.assertGreater(everyone.publication_id, 0)  # assigned once, before any broker

    def test_malformed_and_unknown_versions_are_value_errors(self) -> None:
        good = Publication.of("t", 1).to_wire()
        for bad in ({**good, "v": 99}, {k: v for k, v in good.items() if k != "topic"},
                    {**good, "exclude": 5}, {}):
            with self.assertRaises(ValueError):
                Publication.from_wire(bad)

    def test_request_carries_no_wire_types(self) -> None:
        request = PublishRequest("t", {"a": 1}, "s1", 7, exclude_me=True, exclude_flag=True)
        self.assertEqual((request.topic, request.publisher, request.publication_id), ("t", "s1", 7))


class PublicationIdTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_published_and_event_share_the_id(self) -> Any:
        self.start(lambda c: c.auth.update(publishers="anyone"))
        server = self.server
        sub = yield wamp2.join(self, server.number, path=server.path("admin"))
        pub = yield wamp2.join(self, server.number, path=server.path())
        queue, _ = yield wamp2.events(sub, "oro/maintenance")
        published = yield pub.publish("oro/maintenance", {"isOn": True},
                                      options=PublishOptions(acknowledge=True))
        args, _kwargs, details = yield queue.next()
        self.assertEqual(args, [{"isOn": True}])
        self.assertEqual(details.publication, published.id)


class MetricsTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_one_object_sees_sessions_refusals_messages_and_deliveries(self) -> Any:
        self.start(lambda c: c.origins.update(allowed=["oro.example"], allow_missing=True))
        metrics = self.server.factory.metrics
        c = yield self.client("admin")
        c.subscribe("oro/maintenance")
        yield self.round_trip(c)
        v2 = yield wamp2.join(self, self.server.number, path=self.server.path())
        self.assertEqual(metrics.sessions, {"wamp": 1, "wamp.2.json": 1})
        yield self.refused(path=self.server.path("admin"), headers={"Origin": "http://evil.example"})
        yield self.refused(path="/?ticket=not-a-ticket")
        self.assertEqual(metrics.refusals["origin"], 1)
        self.assertEqual(metrics.refusals["ticket"], 1)
        self.assertEqual(self.server.factory.hub.publish("oro/maintenance", {"isOn": False}), 1)
        self.assertEqual((yield c.next_message()), [8, "oro/maintenance", {"isOn": False}])
        snap = metrics.snapshot()
        self.assertGreaterEqual(snap["counters"]["messages_in"], 2)   # SUBSCRIBE, CALL (+ HELLO)
        self.assertGreaterEqual(snap["counters"]["messages_out"], 2)  # WELCOMEs, CALLERROR
        self.assertEqual(snap["counters"]["events_delivered"], 1)
        self.assertIn("tickets", snap)
        yield v2.leave()
        c.abort()
        yield self.server.session_closed(c.session_id)
        self.assertEqual(metrics.sessions, {})
