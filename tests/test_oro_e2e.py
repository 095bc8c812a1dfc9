"""The Oro topic layer end to end: WAMP v1 clients over real sockets."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from oro_sync.oro.topics import PING_MESSAGE, AbstractTopic
from tests.support.client import connect, round_trip
from tests.support.oro_server import start_oro_server

NINE_CHANNELS = [
    "oro/ping", "oro/data/update", "oro/maintenance", "oro/email_event/1/1",
    "oro/attribute_import/1/42", "oro/imap_sync_fail/1", "oro/message_queue_heartbeat",
    "oro/reminder_remind/1", "oro/outdated_user_page",
]
MARKER = "oro/maintenance"


class ExplodingTopic(AbstractTopic):
    """A handler that fails on every callback (to test error isolation)."""

    def onSubscribe(self, connection, topic, request):
        raise RuntimeError("onSubscribe exploded")

    def onPublish(self, connection, topic, request, event, exclude, eligible):
        raise RuntimeError("onPublish exploded")


class OroEndToEndTests(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.server = start_oro_server(self)

    @defer.inlineCallbacks
    def client(self, user: str = ""):
        c = yield connect(self.server.number, path=self.server.path(user))
        self.addCleanup(c.abort)
        defer.returnValue(c)

    @defer.inlineCallbacks
    def round_trip(self, c):
        """CALL an unknown procedure and wait for its CALLERROR: everything the
        client sent before has then been processed (events that arrive
        meanwhile are kept in ``c.seen``)."""
        seen = yield round_trip(c)
        if seen:
            c.seen.extend(seen)

    @defer.inlineCallbacks
    def settle(self, backend, *clients):
        """Wait until everything sent so far by ``clients`` and ``backend``
        was processed and delivered: round trips on every connection, then a
        marker event the clients wait for (the backend's earlier publications
        reach them first, by per-connection ordering)."""
        for c in clients:
            if not hasattr(c, "seen"):
                c.seen = []
            c.subscribe(MARKER)
            yield self.round_trip(c)
        if not hasattr(backend, "seen"):
            backend.seen = []
        yield self.round_trip(backend)
        backend.publish(MARKER, "marker", [], [])
        for c in clients:
            msg = yield c.next_message()
            while msg != [8, MARKER, "marker"]:
                c.seen.append(msg)
                msg = yield c.next_message()

    @defer.inlineCallbacks
    def test_welcome_and_identity(self):
        c = yield self.client("admin")
        self.assertEqual(c.subprotocol, "wamp")
        self.assertEqual(c.welcome[0], 0)
        session = self.server.factory.hub.sessions[c.session_id]
        self.assertEqual((session.identity.user_id, session.identity.username), (1, "admin"))
        backend = yield self.client()
        identity = self.server.factory.hub.sessions[backend.session_id].identity
        self.assertTrue(identity.backend)
        self.assertEqual(identity.username, f"anonymous-{backend.session_id}")

    @defer.inlineCallbacks
    def test_nine_oro_channels_backend_publish(self):
        self.server.handlers["oro_sync.ping"].clock = task.Clock()
        user = yield self.client("admin")
        user.seen = []
        backend = yield self.client()
        for uri in NINE_CHANNELS:
            user.subscribe(uri)
        yield self.settle(backend, user)
        self.assertEqual(set(self.server.topics()), set(NINE_CHANNELS))
        # The PHP backend's form: [7, uri, payload, [], []] reaches every subscriber.
        for i, uri in enumerate(NINE_CHANNELS):
            backend.publish(uri, {"n": i}, [], [])
        yield self.settle(backend, user)
        expected = [[8, uri, {"n": i}] for i, uri in enumerate(NINE_CHANNELS) if uri != "oro/ping"]
        self.assertEqual(user.seen, expected)  # the ping topic ignores client publishes

    @defer.inlineCallbacks
    def test_backend_publish_reaches_all_subscribers_not_only_one(self):
        a = yield self.client("admin")
        b = yield self.client("jane")
        backend = yield self.client()
        for c in (a, b):
            c.seen = []
            c.subscribe("oro/maintenance")
        yield self.settle(backend, a, b)
        backend.publish("oro/maintenance", {"isOn": True, "userId": None}, [], [])
        for c in (a, b):
            msg = yield c.next_message()
            self.assertEqual(msg, [8, "oro/maintenance", {"isOn": True, "userId": None}])

    @defer.inlineCallbacks
    def test_parameterized_route_requirements(self):
        user = yield self.client("admin")
        user.seen = []
        backend = yield self.client()
        for uri in ["oro/email_event/1/*", "oro/email_event/1/all", "oro/email_event/1/7",
                    "oro/email_event/1/abc", "oro/email_event/1x/7", "oro/email_event/1"]:
            user.subscribe(uri)
        yield self.settle(backend, user)
        self.assertEqual(set(self.server.topics()) - {MARKER},
                         {"oro/email_event/1/*", "oro/email_event/1/all", "oro/email_event/1/7"})
        for uri in ["oro/email_event/1/abc", "oro/email_event/1/7"]:
            backend.publish(uri, "mail", [], [])
        yield self.settle(backend, user)
        self.assertEqual(user.seen, [[8, "oro/email_event/1/7", "mail"]])

    @defer.inlineCallbacks
    def test_compression_offer_is_declined_not_fatal(self):
        # Browsers (and node's `ws`) offer permessage-deflate by default: the
        # server declines it and the session opens.  A regression: the accept
        # hook, made a class attribute of the factory's protocol class to save
        # memory, was called as a method and failed every such handshake.
        from autobahn.websocket.compress import PerMessageDeflateOffer

        c = yield connect(self.server.number, path=self.server.path("admin"),
                          options={"perMessageCompressionOffers": [PerMessageDeflateOffer()]})
        self.addCleanup(c.abort)
        self.assertEqual(c.welcome[0], 0)
        self.assertNotIn("sec-websocket-extensions", c.response_headers)

    @defer.inlineCallbacks
    def test_secured_topic_allow_and_deny(self):
        admin = yield self.client("admin")
        jane = yield self.client("jane")
        anonymous_browser = yield self.client()
        backend = yield self.client()
        for c in (admin, jane, anonymous_browser):
            c.seen = []
            c.subscribe("oro/reminder_remind/1")
        yield self.settle(backend, admin, jane, anonymous_browser)
        topic = self.server.topics()["oro/reminder_remind/1"]
        self.assertEqual(set(topic.subscribers), {admin.session_id})
        backend.publish("oro/reminder_remind/1", {"reminder": 5}, [], [])
        yield self.settle(backend, admin, jane, anonymous_browser)
        self.assertEqual(admin.seen, [[8, "oro/reminder_remind/1", {"reminder": 5}]])
        self.assertEqual((jane.seen, anonymous_browser.seen), ([], []))
        self.assertTrue(jane.is_open)  # a refusal does not disconnect

    @defer.inlineCallbacks
    def test_ping_cadence(self):
        clock = task.Clock()
        self.server.handlers["oro_sync.ping"].clock = clock
        user = yield self.client("admin")
        user.seen = []
        backend = yield self.client()
        user.subscribe("oro/ping")
        yield self.settle(backend, user)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(50)
        msg = yield user.next_message()
        self.assertEqual(msg, [8, "oro/ping", PING_MESSAGE])
        clock.advance(50)
        msg = yield user.next_message()
        self.assertEqual(msg, [8, "oro/ping", PING_MESSAGE])
        closed = self.server.session_closed(user.session_id)
        yield user.disconnect()
        yield closed
        self.assertEqual(clock.getDelayedCalls(), [])  # released with the last subscriber
        self.assertNotIn("oro/ping", self.server.topics())

    @defer.inlineCallbacks
    def test_unrouted_topic_keeps_connection(self):
        user = yield self.client("admin")
        user.seen = []
        backend = yield self.client()
        user.subscribe("no/such/route")
        yield self.round_trip(user)
        backend.publish("no/such/route", 1, [], [])
        yield self.settle(backend, user)
        self.assertEqual(user.seen, [])
        self.assertNotIn("no/such/route", self.server.topics())
        self.assertTrue(user.is_open)

    @defer.inlineCallbacks
    def test_disconnect_leaves_all_topics(self):
        user = yield self.client("admin")
        backend = yield self.client()
        user.seen = []
        for uri in NINE_CHANNELS[1:4]:
            user.subscribe(uri)
        yield self.settle(backend, user)
        closed = self.server.session_closed(user.session_id)
        yield user.abort()
        yield closed
        self.assertEqual(set(self.server.topics()) - {MARKER}, set())
        self.assertNotIn(user.session_id, self.server.factory.hub.sessions)

    @defer.inlineCallbacks
    def test_users_may_not_publish_by_default(self):
        user = yield self.client("admin")
        other = yield self.client("jane")
        backend = yield self.client()
        other.seen = []
        other.subscribe("oro/maintenance")
        yield self.settle(backend, other)
        user.publish("oro/maintenance", {"isOn": True}, [], [])  # fake maintenance mode
        yield self.round_trip(user)
        yield self.settle(backend, other)
        self.assertEqual(other.seen, [])

    @defer.inlineCallbacks
    def test_route_opting_in_to_user_publishing(self):
        self.server.router.get("oro_sync.data_update").publishers = "users"
        user = yield self.client("admin")
        other = yield self.client("jane")
        backend = yield self.client()
        other.seen = []
        other.subscribe("oro/data/update")
        yield self.settle(backend, other)
        user.publish("oro/data/update", [{"username": "admin", "tagname": "x"}], [], [])
        yield self.round_trip(user)
        yield self.settle(backend, other)
        self.assertEqual(other.seen, [[8, "oro/data/update", [{"username": "admin", "tagname": "x"}]]])


class HandlerErrorTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_handler_error_logged_connection_stays_open(self):
        def tweak(config):
            config.services["test.exploding"] = {"class": "tests.test_oro_e2e.ExplodingTopic",
                                                 "arguments": ["test.exploding"]}
            config.services["oro_sync.topic.maintenance"]["arguments"] = ["oro_sync.maintenance"]

        server = start_oro_server(self, tweak)
        route = server.router.get("oro_sync.maintenance")
        route.callbacks = ("test.exploding", "oro_sync.maintenance")  # exploding first
        user = yield connect(server.number, path=server.path("admin"))
        backend = yield connect(server.number, path=server.path())
        self.addCleanup(user.abort)
        self.addCleanup(backend.abort)
        user.subscribe("oro/maintenance")
        backend.subscribe("oro/maintenance")
        yield user.rpc("urn:round-trip")  # the subscription is processed
        backend.publish("oro/maintenance", {"isOn": False}, [], [])
        msg = yield user.next_message()
        # The second handler still ran, and the connection is open.
        self.assertEqual(msg, [8, "oro/maintenance", {"isOn": False}])
        self.assertTrue(user.is_open and backend.is_open)
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(sorted(str(e.value) for e in errors),
                         ["onPublish exploded", "onSubscribe exploded", "onSubscribe exploded"])
