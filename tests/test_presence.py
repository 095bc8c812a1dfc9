"""Presence: the WAMP session meta API for backends (Autobahn|Python 26 against
the shipped Oro configuration, with WAMP v1 and v2 users), its refusal for
users, and the same facts for Python topic handlers (LocalPresence)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.core.hub import Hub
from oro_sync.core.presence import IPresence, LocalPresence, ObservedPolicy
from oro_sync.oro.services import default_references
from oro_sync.wamp1.pubsub import AutobahnPubSub, PubSubRegistry
from tests.support import wamp2
from tests.support.fakes import FakeSession, user_session
from tests.support.oro_server import start_oro_server

MAINTENANCE = "oro/maintenance"


class MetaApiTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.server = start_oro_server(self)

    def join(self, user: str = "", serializers: str = "json") -> defer.Deferred:
        return wamp2.join(self, self.server.number, realm="oro", serializers=serializers,
                          path=self.server.path(user))

    @defer.inlineCallbacks
    def test_backend_sees_v1_and_v2_sessions(self) -> Any:
        backend = yield self.join(serializers="msgpack")
        joins, _ = yield wamp2.events(backend, "wamp.session.on_join")
        leaves, _ = yield wamp2.events(backend, "wamp.session.on_leave")
        subs, _ = yield wamp2.events(backend, "wamp.subscription.on_subscribe")
        unsubs, _ = yield wamp2.events(backend, "wamp.subscription.on_unsubscribe")

        v1 = yield self.server.client(self, "jane")  # a WAMP v1 user
        joined = (yield joins.next())[0][0]
        self.assertEqual((joined["session"], joined["authid"], joined["authrole"]),
                         (v1.session_id, "jane", "user"))
        v2 = yield self.join("admin", serializers="cbor")
        joined = (yield joins.next())[0][0]
        self.assertEqual((joined["session"], joined["authid"]), (v2.session_id, "admin"))
        self.assertEqual(joined["transport"], {"protocol": "wamp.2.cbor"})

        self.assertEqual((yield backend.call("wamp.session.count")), 3)
        self.assertEqual((yield backend.call("wamp.session.count", ["user"])), 2)
        self.assertEqual(sorted(map(str, (yield backend.call("wamp.session.list", ["user"])))),
                         sorted([v1.session_id, str(v2.session_id)]))
        got = yield backend.call("wamp.session.get", v1.session_id)
        self.assertEqual((got["authid"], got["transport"]["protocol"]), ("jane", "wamp"))
        e = yield self.assertFailure(backend.call("wamp.session.get", 12345), ApplicationError)
        self.assertEqual(e.error, "wamp.error.no_such_session")

        # Subscriptions, v1 and v2 alike.
        v1.subscribe(MAINTENANCE)
        args = (yield subs.next())[0]
        self.assertEqual(args[0], v1.session_id)
        sub_id = args[1]
        yield wamp2.events(v2, MAINTENANCE)
        self.assertEqual((yield subs.next())[0], [v2.session_id, sub_id])
        self.assertEqual((yield backend.call("wamp.subscription.lookup", MAINTENANCE)), sub_id)
        self.assertIsNone((yield backend.call("wamp.subscription.lookup", "oro/nobody/here")))
        self.assertEqual((yield backend.call("wamp.subscription.count_subscribers", sub_id)), 2)
        self.assertEqual(sorted(map(str, (yield backend.call("wamp.subscription.list_subscribers", sub_id)))),
                         sorted([v1.session_id, str(v2.session_id)]))
        e = yield self.assertFailure(backend.call("wamp.subscription.count_subscribers", 1), ApplicationError)
        self.assertEqual(e.error, "wamp.error.no_such_subscription")

        # Leaving: the v1 user's connection drops.
        yield v1.abort()
        self.assertEqual((yield unsubs.next())[0], [v1.session_id, sub_id])
        self.assertEqual((yield leaves.next())[0], [v1.session_id, "jane", "user"])
        self.assertEqual((yield backend.call("wamp.session.count", ["user"])), 1)

    @defer.inlineCallbacks
    def test_users_may_not_use_it(self) -> Any:
        jane = yield self.join("jane")
        for uri in ("wamp.session.count", "wamp.session.list", "wamp.subscription.lookup"):
            e = yield self.assertFailure(jane.call(uri, MAINTENANCE), ApplicationError)
            self.assertEqual(e.error, "wamp.error.not_authorized", uri)
        for uri in ("wamp.session.on_join", "wamp.subscription.on_subscribe", "wamp.anything"):
            e = yield self.assertFailure(wamp2.events(jane, uri), ApplicationError)
            self.assertEqual(e.error, "wamp.error.not_authorized", uri)
        e = yield self.assertFailure(jane.call("wamp.session.kill", 1), ApplicationError)
        self.assertEqual(e.error, "wamp.error.no_such_procedure")
        # And a user's joining is not shown to other users.
        self.assertEqual(self.server.topics().get("wamp.session.on_join"), None)


class OpenHubMetaTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_without_tickets_anyone_is_trusted(self) -> Any:
        server = start_oro_server(self, lambda c: setattr(c, "auth", {}))
        s = yield wamp2.join(self, server.number, realm="oro")
        self.assertEqual((yield s.call("wamp.session.count")), 1)


class LocalPresenceTests(unittest.TestCase):
    """The facts topic handlers read, as Gos's ClientManipulator offers them."""

    def setUp(self) -> None:
        self.hub = Hub()
        registry = PubSubRegistry()
        registry.registerForPubSub("t")
        self.policy = ObservedPolicy(AutobahnPubSub(self.hub, registry), self.hub.presence)
        self.events: list = []

        class Observer:
            def joined(_, info): self.events.append(("joined", info.username))
            def left(_, info): self.events.append(("left", info.username))
            def subscribed(_, info, uri): self.events.append(("subscribed", info.username, uri))
            def unsubscribed(_, info, uri): self.events.append(("unsubscribed", info.username, uri))

        self.hub.presence.add_observer(Observer())

    def connect(self, session: FakeSession) -> FakeSession:
        self.hub.attach(session)
        self.hub.presence.sessionOpened(session)
        return session

    def test_find_by_username_get_all_is_connected(self) -> None:
        presence = self.hub.presence
        self.assertTrue(IPresence.providedBy(presence))
        admin = self.connect(user_session("1", 1, "admin"))
        admin_again = self.connect(user_session("2", 1, "admin"))
        anon = self.connect(FakeSession("3"))
        for s in (admin, anon):
            self.policy.subscribe(s, "t")
        self.assertEqual(len(presence.find_by_username("admin")), 2)
        self.assertEqual([i.session_id for i in presence.findByUsername("admin", "t")], ["1"])
        self.assertEqual([i.session_id for i in presence.getAll("t")], ["1"])
        self.assertEqual(sorted(i.session_id for i in presence.get_all("t", anonymous=True)), ["1", "3"])
        self.assertTrue(presence.is_connected("admin"))
        self.assertFalse(presence.is_connected("jane"))
        self.assertEqual(presence.count(), 3)
        self.assertEqual(presence.count(["user"]), 2)
        self.assertEqual(presence.get("3").authrole, "anonymous")
        self.assertIsNone(presence.get("nope"))
        self.policy.session_closed(admin)
        self.hub.detach(admin)
        presence.sessionClosed(admin)
        self.assertEqual([i.session_id for i in presence.subscribers("t")], ["3"])
        self.assertEqual(self.events, [("joined", "admin"), ("joined", "admin"), ("joined", "anonymous-3"),
                                       ("subscribed", "admin", "t"), ("subscribed", "anonymous-3", "t"),
                                       ("unsubscribed", "admin", "t"), ("left", "admin")])
        del admin_again

    def test_a_refused_subscription_is_not_reported(self) -> None:
        s = self.connect(FakeSession("1"))
        from oro_sync.core.policy import SubscriptionDenied
        with self.assertRaises(SubscriptionDenied):
            self.policy.subscribe(s, "unregistered")
        self.assertEqual(self.events, [("joined", "anonymous-1")])

    def test_handlers_get_it_as_a_reference(self) -> None:
        from twisted.internet import task
        refs = default_references(task.Clock(), self.hub)
        self.assertIsInstance(refs["presence"]("my.handler"), LocalPresence)
