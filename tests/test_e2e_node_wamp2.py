"""Autobahn|JS (npm ``autobahn``, WAMP v2) against oro-sync, beside WAMP v1 peers.

The client library runs unchanged in node, with its default serializers,
over a real socket, against the shipped Oro configuration with tickets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.node import NodeWamp2Client
from tests.support.client import round_trip as client_round_trip
from tests.support.oro_server import start_oro_server


class AutobahnJsTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = start_oro_server(self)

    @defer.inlineCallbacks
    def js(self, user: str = "admin", realm: str = "oro") -> Any:
        url = f"ws://127.0.0.1:{self.server.number}{self.server.path(user)}"
        client = NodeWamp2Client.spawn(reactor, url, f"js-{user or 'anon'}", realm)
        self.addCleanup(client.close)
        welcome = yield client.welcomed()
        return client, welcome

    @defer.inlineCallbacks
    def test_join_with_a_user_ticket(self) -> Any:
        js, welcome = yield self.js("admin")
        self.assertEqual((welcome["realm"], welcome["authid"], welcome["authrole"]), ("oro", "admin", "user"))
        self.assertIsInstance(welcome["sessionId"], int)
        self.assertIn(str(welcome["sessionId"]), self.server.factory.hub.sessions)

    @defer.inlineCallbacks
    def test_backend_v1_publish_reaches_js_and_v1_browsers(self) -> Any:
        js, _ = yield self.js("admin")
        sub = yield js.subscribe("oro/maintenance")
        self.assertEqual(sub["type"], "subscribed")
        browser = yield self.server.client(self, "jane")
        browser.subscribe("oro/maintenance")
        yield round_trip(browser)  # its SUBSCRIBE is processed
        backend = yield self.server.client(self)
        backend.publish("oro/maintenance", {"isOn": True, "userId": None}, [], [])
        event = yield js.wait_for(lambda r: r["type"] == "event", "EVENT on oro/maintenance")
        self.assertEqual(event["args"], [{"isOn": True, "userId": None}])
        self.assertEqual(event["kwargs"], {})
        msg = yield browser.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", {"isOn": True, "userId": None}])

    @defer.inlineCallbacks
    def test_secured_topic_and_publish_rules(self) -> Any:
        js, _ = yield self.js("jane")
        refused = yield js.subscribe("oro/reminder_remind/1")  # admin's reminders
        self.assertEqual((refused["type"], refused["error"]), ("error", "wamp.error.not_authorized"))
        answer = yield js.publish_v2("oro/maintenance", [{"isOn": True}], options={"acknowledge": True})
        self.assertEqual((answer["type"], answer["error"]), ("error", "wamp.error.not_authorized"))

    @defer.inlineCallbacks
    def test_js_publish_reaches_v1_on_a_route_open_to_users(self) -> Any:
        self.server.router.get("oro_sync.data_update").publishers = "users"
        browser = yield self.server.client(self, "jane")
        browser.subscribe("oro/data/update")
        yield round_trip(browser)
        js, _ = yield self.js("admin")
        yield js.subscribe("oro/data/update")
        payload = [{"username": "admin", "tagname": "x"}]
        published = yield js.publish_v2("oro/data/update", [payload], options={"acknowledge": True})
        self.assertEqual(published["type"], "published")
        msg = yield browser.next_message()
        self.assertEqual(msg, [8, "oro/data/update", payload])
        # exclude_me is the default: the publisher did not get its own event.
        self.assertEqual(js.events(), [])


@defer.inlineCallbacks
def round_trip(c: Any) -> Any:
    """CALL an unknown procedure and wait for its CALLERROR: everything the
    v1 client sent before it has then been processed."""
    seen = yield client_round_trip(c)
    assert not seen, seen


class AutobahnJsSerializerTests(unittest.TestCase):
    """Autobahn|JS told to use one serializer (``serializers: [new
    MsgpackSerializer()]`` and so on), and WAMP-Ticket from Autobahn|JS."""

    timeout = 60
    serializer = "json"

    def setUp(self) -> None:
        self.server = start_oro_server(self)
        self.server.router.get("oro_sync.data_update").publishers = "users"

    @defer.inlineCallbacks
    def js(self, user: str = "admin", serializer: str | None = None, in_band: bool = False,
           ticket: str = "") -> Any:
        path = "/" if in_band else self.server.path(user)
        client = NodeWamp2Client.spawn_v2(reactor, f"ws://127.0.0.1:{self.server.number}{path}",
                                          f"js-{user or 'backend'}", "oro", serializer or self.serializer,
                                          ticket or (self.server.ticket(user) if in_band else ""))
        self.addCleanup(client.close)
        welcome = yield client.welcomed()
        return client, welcome

    @defer.inlineCallbacks
    def test_pubsub_rpc_and_v1_both_ways(self) -> Any:
        js, welcome = yield self.js("admin")
        self.assertEqual(welcome["protocol"], f"wamp.2.{self.serializer}")
        session = self.server.factory.hub.sessions[str(welcome["sessionId"])]
        self.assertEqual(session.serializer.name, self.serializer)
        other, _ = yield self.js("jane")
        browser = yield self.server.client(self, "jane")
        browser.subscribe("oro/data/update")
        yield round_trip(browser)
        for c in (js, other):
            self.assertEqual((yield c.subscribe("oro/data/update"))["type"], "subscribed")
        # v2 -> v1 and v2, acknowledged
        payload = {"username": "admin", "tagname": "é"}
        published = yield js.publish_v2("oro/data/update", [payload], options={"acknowledge": True})
        self.assertEqual(published["type"], "published")
        self.assertEqual((yield browser.next_message()), [8, "oro/data/update", payload])
        event = yield other.wait_for(lambda r: r["type"] == "event", "EVENT from js")
        self.assertEqual((event["args"], event["publication"]), ([payload], published["id"]))
        # v1 -> v2
        browser.publish("oro/data/update", {"from": "v1"})
        event = yield js.wait_for(lambda r: r["type"] == "event", "EVENT from v1")
        self.assertEqual(event["args"], [{"from": "v1"}])
        # RPC through the dealer: a backend callee in JS, this serializer's caller.
        callee, _ = yield self.js("", serializer="json" if self.serializer != "json" else "cbor")
        self.assertEqual((yield callee.register("com.example.double"))["type"], "registered")
        self.assertEqual((yield callee.register("com.example.fail", "fail"))["type"], "registered")
        self.assertEqual((yield js.call("com.example.double", 21))["result"], 42)
        answer = yield js.call("com.example.fail")
        self.assertEqual((answer["type"], answer["error"], answer["args"]), ("error", "com.example.refused", ["no"]))

    @defer.inlineCallbacks
    def test_wamp_ticket(self) -> Any:
        js, welcome = yield self.js("admin", in_band=True)
        self.assertEqual((welcome["authid"], welcome["authrole"]), ("admin", "user"))
        challenge = [r for r in js.reports if r["type"] == "challenge"]
        self.assertEqual([r["method"] for r in challenge], ["ticket"])

    @defer.inlineCallbacks
    def test_wamp_ticket_refused(self) -> Any:
        from oro_sync.auth.ticket_signing import issue_ticket
        from tests.support.oro_server import USERS
        password = USERS[0]["password"]
        for bad in (issue_ticket("NotTheSecretAtAll", "admin", password),
                    issue_ticket("TestSecretForOroSyncE2E", "admin", password, now=0)):
            client = NodeWamp2Client.spawn_v2(reactor, f"ws://127.0.0.1:{self.server.number}/", "js-bad",
                                              "oro", self.serializer, bad)
            self.addCleanup(client.close)
            closed = yield client.wait_for(lambda r: r["type"] == "closed", "the refusal")
            self.assertEqual(closed["details"], "wamp.error.not_authorized")
        self.assertEqual(self.server.factory.hub.sessions, {})


class AutobahnJsMsgPackTests(AutobahnJsSerializerTests):
    serializer = "msgpack"


class AutobahnJsCborTests(AutobahnJsSerializerTests):
    serializer = "cbor"
