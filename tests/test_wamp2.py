"""WAMP v2 on the WAMP v1 port: Autobahn|Python v2 clients, v1 clients beside
them, and raw messages for what a real client would never send."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, task
from twisted.trial import unittest

from oro_sync.core.payload import Payload, from_v2, to_v2
from oro_sync.core.hub import Hub
from oro_sync.wamp1.pubsub import AutobahnPubSub, PubSubRegistry
from tests.support import wamp2
from tests.support.client import ConnectionClosed, HandshakeFailed, connect
from tests.support.oro_server import start_oro_server
from tests.test_wamp1_server import PING, TOPIC, ServerTestCase

OTHER = "http://oro-sync.test/unregistered"


class PayloadMappingTests(unittest.TestCase):
    def test_single_argument_is_the_event(self) -> None:
        self.assertEqual(from_v2(["x"], None), "x")
        self.assertEqual(from_v2([{"a": 1}], {}), {"a": 1})
        self.assertEqual(to_v2("x"), (["x"], None))

    def test_other_shapes_round_trip(self) -> None:
        for args, kwargs, v1 in (([1, 2], None, [1, 2]), (None, {"k": 1}, {"k": 1}),
                                 ([1], {"k": 1}, {"args": [1], "kwargs": {"k": 1}}),
                                 ([], None, None), (None, None, None)):
            event = from_v2(args, kwargs)
            self.assertIsInstance(event, Payload)
            self.assertEqual(to_v2(event), (args or [], kwargs or None))
            self.assertEqual(event.v1_value(), v1)


class Wamp2Tests(ServerTestCase):
    """The WAMP v1 reference policy (AutobahnPubSub): TOPIC is registered."""

    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory()

    def join(self, **kwargs: Any) -> defer.Deferred:
        return wamp2.join(self, self.factory.port, **kwargs)

    @defer.inlineCallbacks
    def test_join_gets_a_session_in_the_hub(self) -> Any:
        s = yield self.join(realm="any.realm")
        d = s.welcome_details
        self.assertEqual(d.realm, "any.realm")
        self.assertTrue(d.authid.startswith("anonymous-"))
        self.assertEqual(d.authrole, "anonymous")
        self.assertIn("broker", d.router_roles if hasattr(d, "router_roles") else {"broker": 1})
        self.assertIn(str(d.session), self.factory.hub.sessions)
        self.assertEqual(self.factory.hub.sessions[str(d.session)].session_id, str(d.session))

    @defer.inlineCallbacks
    def test_publish_subscribe_with_acknowledgement(self) -> Any:
        sub = yield self.join()
        pub = yield self.join()
        queue, _ = yield wamp2.events(sub, TOPIC)
        publication = yield pub.publish(TOPIC, "hello", 42, options=PublishOptions(acknowledge=True))
        args, kwargs, details = yield queue.next()
        self.assertEqual((args, kwargs), (["hello", 42], {}))
        self.assertEqual(details.publication, publication.id)

    @defer.inlineCallbacks
    def test_publisher_is_excluded_unless_it_asks(self) -> Any:
        s = yield self.join()
        queue, _ = yield wamp2.events(s, TOPIC)
        yield s.publish(TOPIC, "not me", options=PublishOptions(acknowledge=True))
        yield s.publish(TOPIC, "me too", options=PublishOptions(acknowledge=True, exclude_me=False))
        args, _, _ = yield queue.next()
        self.assertEqual(args, ["me too"])

    @defer.inlineCallbacks
    def test_eligible_and_exclude_name_v2_sessions(self) -> Any:
        a, b, c = yield defer.gatherResults([self.join() for _ in range(3)])
        queues = []
        for s in (a, b, c):
            q, _ = yield wamp2.events(s, TOPIC)
            queues.append(q)
        pub = yield self.join()
        ack = PublishOptions(acknowledge=True, eligible=[a.session_id])
        yield pub.publish(TOPIC, "only a", options=ack)
        yield pub.publish(TOPIC, "not a", options=PublishOptions(acknowledge=True, exclude=[a.session_id]))
        self.assertEqual((yield queues[0].next())[0], ["only a"])
        for q in queues[1:]:
            self.assertEqual((yield q.next())[0], ["not a"])
        yield pub.publish(TOPIC, "end", options=PublishOptions(acknowledge=True))
        self.assertEqual((yield queues[0].next())[0], ["end"])  # a never got "not a"

    @defer.inlineCallbacks
    def test_v1_and_v2_clients_share_topics(self) -> Any:
        v1 = yield self.connect(self.factory)
        yield self.subscribed(TOPIC, v1)
        v2 = yield self.join()
        other_v2 = yield self.join()
        queue, _ = yield wamp2.events(v2, TOPIC)
        other_queue, _ = yield wamp2.events(other_v2, TOPIC)
        v1.publish(TOPIC, {"from": "v1"})  # excludeMe by default (Autobahn profile)
        for q in (queue, other_queue):
            self.assertEqual((yield q.next())[:2], ([{"from": "v1"}], {}))
        yield v2.publish(TOPIC, "one value", options=PublishOptions(acknowledge=True))
        yield self.assertNext(v1, [8, TOPIC, "one value"])
        self.assertEqual((yield other_queue.next())[:2], (["one value"], {}))
        yield v2.publish(TOPIC, 1, 2, k="v", options=PublishOptions(acknowledge=True))
        yield self.assertNext(v1, [8, TOPIC, {"args": [1, 2], "kwargs": {"k": "v"}}])
        self.assertEqual((yield other_queue.next())[:2], ([1, 2], {"k": "v"}))

    @defer.inlineCallbacks
    def test_subscribers_of_a_topic_share_one_subscription_id(self) -> Any:
        a = yield self.join()
        b = yield self.join()
        _, sa = yield wamp2.events(a, TOPIC)
        _, sb = yield wamp2.events(b, TOPIC)
        self.assertEqual(sa.id, sb.id)

    @defer.inlineCallbacks
    def test_unsubscribe_stops_events(self) -> Any:
        s = yield self.join()
        pub = yield self.join()
        queue, subscription = yield wamp2.events(s, TOPIC)
        yield subscription.unsubscribe()
        self.assertNotIn(TOPIC, self.factory.hub.topics.topics)
        yield pub.publish(TOPIC, "after", options=PublishOptions(acknowledge=True))
        yield s.call(PING)  # everything before it was delivered
        self.assertEqual(queue.items, [])

    @defer.inlineCallbacks
    def test_refusals_are_errors(self) -> Any:
        s = yield self.join()
        e = yield self.assertFailure(s.subscribe(lambda *a: None, OTHER), ApplicationError)
        self.assertEqual(e.error, "wamp.error.not_authorized")
        self.assertEqual(self.factory.hub.topics.topics, {})
        e = yield self.assertFailure(s.publish(OTHER, 1, options=PublishOptions(acknowledge=True)),
                                     ApplicationError)
        self.assertEqual(e.error, "wamp.error.not_authorized")
        self.assertTrue(s.is_attached())

    @defer.inlineCallbacks
    def test_calls_and_the_default_registration_rule(self) -> Any:
        s = yield self.join()
        self.assertEqual((yield s.call(PING)), "pong")
        e = yield self.assertFailure(s.call("no.such.proc"), ApplicationError)
        self.assertEqual(e.error, "wamp.error.no_such_procedure")
        # By default only backends register (this client is anonymous).
        e = yield self.assertFailure(s.register(lambda: 1, "my.proc"), ApplicationError)
        self.assertEqual(e.error, "wamp.error.not_authorized")

    @defer.inlineCallbacks
    def test_goodbye_leaves_every_topic(self) -> Any:
        s = yield self.join()
        yield wamp2.events(s, TOPIC)
        sid = str(s.session_id)
        self.assertIn(sid, self.factory.hub.sessions)
        yield s.leave()
        yield s.gone
        self.assertEqual(s.leave_details.reason, "wamp.close.goodbye_and_out")
        self.assertNotIn(sid, self.factory.hub.sessions)
        self.assertEqual(self.factory.hub.topics.topics, {})

    @defer.inlineCallbacks
    def test_autobahn_default_serializers(self) -> Any:
        # A client offering every serializer it has gets its first choice.
        s = yield self.join(serializers="default")
        offered = s._transport.factory.protocols
        self.assertGreater(len(offered), 1, offered)
        spoken = [p for p in offered if p in ("wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor")]
        self.assertEqual(s._transport.websocket_protocol_in_use, spoken[0])
        self.assertNotEqual(spoken[0], "wamp.2.json")
        self.assertEqual((yield s.call(PING)), "pong")

    @defer.inlineCallbacks
    def test_client_order_picks_the_protocol(self) -> Any:
        c = yield connect(self.factory.port, protocols=["wamp.2.json", "wamp"], wait_welcome=False)
        self.clients.append(c)
        self.assertEqual(c.subprotocol, "wamp.2.json")
        c = yield connect(self.factory.port, protocols=["wamp", "wamp.2.json"])
        self.clients.append(c)
        self.assertEqual(c.subprotocol, "wamp")
        self.assertEqual(c.welcome[0], 0)  # a v1 WELCOME


class Wamp2RawTests(ServerTestCase):
    """What an Autobahn client would never send."""

    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory()

    @defer.inlineCallbacks
    def raw(self, hello: bool = True) -> Any:
        c = yield connect(self.factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        if hello:
            c.send([1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}])
            welcome = yield c.next_message()
            self.assertEqual(welcome[0], 2)
            c.session = welcome[1]
        return c

    @defer.inlineCallbacks
    def assertAborted(self, c: Any, code: int = 1002) -> Any:
        msg = yield c.next_message()
        self.assertEqual((msg[0], msg[2]), (3, "wamp.error.protocol_violation"))
        _, close_code, _ = yield c.closed
        self.assertEqual(close_code, code)

    @defer.inlineCallbacks
    def test_messages_before_hello_abort(self) -> Any:
        c = yield self.raw(hello=False)
        c.send([32, 1, {}, TOPIC])
        yield self.assertAborted(c)

    @defer.inlineCallbacks
    def test_hello_without_roles_aborts(self) -> Any:
        c = yield self.raw(hello=False)
        c.send([1, "realm1", {}])
        yield self.assertAborted(c)

    @defer.inlineCallbacks
    def test_bad_input_aborts(self) -> Any:
        for bad in (b"not json", b"[]", b'{"a": 1}', b'[16, 1, {}, "t", "not a list"][', b"[999]",
                    b'[36, 1, 2, {}]', b"[1e400]", b'[6, {}, "x"'):
            c = yield self.raw()
            c.send(bad)
            yield self.assertAborted(c)

    @defer.inlineCallbacks
    def test_binary_message_aborts(self) -> Any:
        c = yield self.raw()
        c.send(b"\x93\x01", isBinary=True)
        yield self.assertAborted(c, 1003)

    @defer.inlineCallbacks
    def test_bad_request_gets_an_error_and_the_session_goes_on(self) -> Any:
        c = yield self.raw()
        c.send([32, 7, {}, "bad..uri"])
        self.assertEqual((yield c.next_message())[:5], [8, 32, 7, {}, "wamp.error.invalid_uri"])
        c.send([32, 8, {"match": "prefix"}, TOPIC])
        self.assertEqual((yield c.next_message())[:5], [8, 32, 8, {}, "wamp.error.invalid_argument"])
        c.send([16, 9, {"exclude": ["not an id"]}, TOPIC, []])
        self.assertEqual((yield c.next_message())[:5], [8, 16, 9, {}, "wamp.error.invalid_argument"])
        c.send([34, 10, 12345])
        self.assertEqual((yield c.next_message())[:5], [8, 34, 10, {}, "wamp.error.no_such_subscription"])
        c.send([48, 11, {}, PING, []])
        self.assertEqual((yield c.next_message()), [50, 11, {}, ["pong"]])

    @defer.inlineCallbacks
    def test_unknown_realm_is_refused_when_realms_are_set(self) -> Any:
        self.factory.wamp2.realms = frozenset({"oro"})
        c = yield self.raw(hello=False)
        c.send([1, "elsewhere", {"roles": {"subscriber": {}}}])
        msg = yield c.next_message()
        self.assertEqual((msg[0], msg[2]), (3, "wamp.error.no_such_realm"))
        yield c.closed

    @defer.inlineCallbacks
    def test_no_hello_is_dropped_after_the_handshake_timeout(self) -> Any:
        clock = task.Clock()
        self.factory.clock = clock
        c = yield self.raw(hello=False)
        self.assert_hello_timer_armed(clock)
        clock.advance(self.factory.limits.handshake_timeout + 1)
        _, code, _ = yield c.closed
        self.assertEqual(code, 1000)

    def assert_hello_timer_armed(self, clock: task.Clock) -> None:
        """The server armed its HELLO timer: no need to wait for it, since
        Autobahn runs the server's onOpen (which arms it) in the very call
        that queues the 101 response, before any byte of it reaches the
        client; so once the client is open, the timer is there."""
        armed = [call.getTime() for call in clock.getDelayedCalls() if call.active()]
        self.assertEqual(armed, [self.factory.limits.handshake_timeout])


class OroWamp2Tests(unittest.TestCase):
    """v2 clients against the shipped Oro configuration: tickets, routes, handlers."""

    timeout = 30

    def setUp(self) -> None:
        self.server = start_oro_server(self)

    def join(self, user: str = "") -> defer.Deferred:
        return wamp2.join(self, self.server.number, realm="oro", path=self.server.path(user))

    @defer.inlineCallbacks
    def test_user_ticket_and_backend_publish(self) -> Any:
        admin = yield self.join("admin")
        self.assertEqual(admin.welcome_details.authid, "admin")
        self.assertEqual(admin.welcome_details.authrole, "user")
        queue, _ = yield wamp2.events(admin, "oro/maintenance")
        backend = yield self.server.client(self)
        backend.publish("oro/maintenance", {"isOn": True, "userId": None}, [], [])
        args, _, _ = yield queue.next()
        self.assertEqual(args, [{"isOn": True, "userId": None}])

    @defer.inlineCallbacks
    def test_secured_topic_refuses_other_users(self) -> Any:
        jane = yield self.join("jane")
        e = yield self.assertFailure(wamp2.events(jane, "oro/reminder_remind/1"), ApplicationError)
        self.assertEqual(e.error, "wamp.error.not_authorized")
        admin = yield self.join("admin")
        yield wamp2.events(admin, "oro/reminder_remind/1")
        self.assertEqual(list(self.server.topics()["oro/reminder_remind/1"].subscribers),
                         [str(admin.session_id)])

    @defer.inlineCallbacks
    def test_users_may_not_publish(self) -> Any:
        admin = yield self.join("admin")
        e = yield self.assertFailure(
            admin.publish("oro/maintenance", {"isOn": True}, options=PublishOptions(acknowledge=True)),
            ApplicationError)
        self.assertEqual(e.error, "wamp.error.not_authorized")

    @defer.inlineCallbacks
    def test_no_ticket_no_session(self) -> Any:
        d = wamp2.join(self, self.server.number, realm="oro", path="/")  # refused with HTTP 403
        yield self.assertFailure(d, ConnectionError)
        self.assertEqual(self.server.factory.hub.sessions, {})



class Wamp2ConfigTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_wamp2_can_be_switched_off(self) -> Any:
        server = start_oro_server(self, lambda c: setattr(c.server, "wamp2", False))
        # Offering only v2 is refused (HTTP 400 naming "wamp"), not served as v1.
        with self.assertRaises(HandshakeFailed) as caught:
            yield connect(server.number, protocols=["wamp.2.json"], path=server.path())
        self.assertIn('[400]', str(caught.exception))
        self.assertIn('"wamp"', str(caught.exception))
        c = yield connect(server.number, protocols=["wamp.2.json", "wamp"], path=server.path())
        self.addCleanup(c.abort)
        self.assertEqual(c.subprotocol, "wamp")
        self.assertEqual(c.welcome[0], 0)

    @defer.inlineCallbacks
    def test_realms_from_config(self) -> Any:
        server = start_oro_server(self, lambda c: setattr(c.server, "wamp2_realms", ["oro"]))
        s = yield wamp2.join(self, server.number, realm="oro", path=server.path("admin"))
        self.assertEqual(s.welcome_details.realm, "oro")
        yield self.assertFailure(wamp2.join(self, server.number, realm="other", path=server.path("admin")),
                                 ConnectionError)

    def test_bad_realms_setting(self) -> None:
        from oro_sync.config import ConfigError, load_config

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("server:\n  wamp2_realms: oro\n")
        with self.assertRaises(ConfigError):
            load_config(path)


class StateOnSubscribe(AutobahnPubSub):
    """A policy whose subscribe delivers at once (like an Oro handler sending
    the current state to a new subscriber); subscribers of REFUSED are let in
    for that delivery and then removed again (a handler that refuses late)."""

    REFUSED = TOPIC + ".refused"

    def subscribe(self, session: Any, topic_uri: str) -> None:
        if topic_uri == self.REFUSED:
            topic = self.hub.topics.subscribe(session, topic_uri)
            self.hub.publish(topic_uri, "not for you")
            self.hub.topics.forget(session, topic)
            return
        super().subscribe(session, topic_uri)
        if topic_uri in session.subscriptions:
            self.hub.publish(topic_uri, "state")


def with_policy(policy_class: type) -> dict:
    """Factory arguments for a policy of ``policy_class`` on its own hub and registry."""
    hub, registry = Hub(), PubSubRegistry()
    return {"hub": hub, "policy": policy_class(hub, registry), "pubsubRegistry": registry}


class HandlerDeliveryOrderTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory(**with_policy(StateOnSubscribe))

    @defer.inlineCallbacks
    def test_subscribed_precedes_the_events_it_announces(self) -> Any:
        c = yield connect(self.factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        c.send([1, "realm1", {"roles": {"subscriber": {}}}])
        self.assertEqual((yield c.next_message())[0], 2)
        c.send([32, 1, {}, TOPIC])
        subscribed = yield c.next_message()
        event = yield c.next_message()
        self.assertEqual(subscribed[:2], [33, 1])
        self.assertEqual(event[:2], [36, subscribed[2]])
        self.assertEqual(event[4], ["state"])

    @defer.inlineCallbacks
    def test_autobahn_client_gets_the_state(self) -> Any:
        s = yield wamp2.join(self, self.factory.port)
        queue, _ = yield wamp2.events(s, TOPIC)
        self.assertEqual((yield queue.next())[0], ["state"])
        self.assertTrue(s.is_attached())

    @defer.inlineCallbacks
    def test_refused_subscription_drops_its_events(self) -> Any:
        c = yield connect(self.factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        c.send([1, "realm1", {"roles": {"subscriber": {}}}])
        self.assertEqual((yield c.next_message())[0], 2)
        c.send([32, 1, {}, StateOnSubscribe.REFUSED])
        c.send([48, 2, {}, PING, []])
        refusal = yield c.next_message()
        self.assertEqual(refusal[:5], [8, 32, 1, {}, "wamp.error.not_authorized"])
        self.assertEqual((yield c.next_message()), [50, 2, {}, ["pong"]])  # no EVENT in between


class StateDirectState(AutobahnPubSub):
    """subscribe: an event, a direct write to the peer, another event."""

    def subscribe(self, session: Any, topic_uri: str) -> None:
        super().subscribe(session, topic_uri)
        if topic_uri in session.subscriptions:
            self.hub.publish(topic_uri, "state1")
            session.connection.send_message(b'[8, 48, 999, {}, "x.direct.write"]')
            self.hub.publish(topic_uri, "state2")


class DuplicateSubscribeTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_a_second_subscribe_gets_the_same_subscription_without_the_policy(self) -> Any:
        calls: list = []
        factory = self.make_factory()
        factory.registerHandlerForSub(None, TOPIC, lambda prefix, suffix: calls.append(prefix) or len(calls) == 1)
        c = yield connect(factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        c.send([1, "realm1", {"roles": {"subscriber": {}}}])
        self.assertEqual((yield c.next_message())[0], 2)
        c.send([32, 1, {}, TOPIC])
        first = yield c.next_message()
        c.send([32, 2, {}, TOPIC])  # the handler would refuse a second time
        second = yield c.next_message()
        self.assertEqual((first[:2], second[:2]), ([33, 1], [33, 2]))
        self.assertEqual(second[2], first[2])
        self.assertEqual(len(calls), 1)


class HeldOutputTests(ServerTestCase):
    """Everything a subscribe's handlers write waits behind SUBSCRIBED, in
    order, whatever the transport."""

    @defer.inlineCallbacks
    def v2(self, port: int) -> Any:
        c = yield connect(port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        c.send([1, "realm1", {"roles": {"subscriber": {}, "caller": {}}}])
        self.assertEqual((yield c.next_message())[0], 2)
        return c

    @defer.inlineCallbacks
    def test_direct_writes_and_events_keep_their_order(self) -> Any:
        factory = self.make_factory(**with_policy(StateDirectState))
        c = yield self.v2(factory.port)
        c.send([32, 1, {}, TOPIC])
        got = []
        for _ in range(4):
            got.append((yield c.next_message()))
        self.assertEqual([m[0] for m in got], [33, 36, 8, 36])
        self.assertEqual((got[1][4], got[3][4]), (["state1"], ["state2"]))

    @defer.inlineCallbacks
    def test_transport_without_an_outbox_queue(self) -> Any:
        # A wrapped transport (a PROXY-protocol endpoint, say) writes at once.
        from twisted.internet import reactor
        from twisted.protocols import policies

        factory = self.make_factory(**with_policy(StateOnSubscribe))
        port = reactor.listenTCP(0, policies.WrappingFactory(factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        c = yield self.v2(port.getHost().port)
        self.assertIsNone(factory.connections[-1]._queue)
        c.send([32, 1, {}, TOPIC])
        self.assertEqual((yield c.next_message())[0], 33)
        self.assertEqual((yield c.next_message())[4], ["state"])
        c.send([32, 2, {}, StateOnSubscribe.REFUSED])
        c.send([48, 3, {}, PING, []])
        self.assertEqual((yield c.next_message())[:2], [8, 32])
        self.assertEqual((yield c.next_message()), [50, 3, {}, ["pong"]])  # its event was dropped


class OroPolicyV2OptionsTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_empty_eligible_means_nobody(self) -> Any:
        server = start_oro_server(self)
        admin = yield wamp2.join(self, server.number, realm="oro", path=server.path("admin"))
        queue, _ = yield wamp2.events(admin, "oro/maintenance")
        backend = yield wamp2.join(self, server.number, realm="oro", path=server.path())
        yield backend.publish("oro/maintenance", "nobody", options=PublishOptions(acknowledge=True, eligible=[]))
        yield backend.publish("oro/maintenance", "everyone", options=PublishOptions(acknowledge=True))
        self.assertEqual((yield queue.next())[0], ["everyone"])

    @defer.inlineCallbacks
    def test_denial_frame_goes_to_v1_clients_only(self) -> Any:
        server = start_oro_server(
            self, lambda c: c.parameters.__setitem__("oro_sync.security.denial_frame", True))
        v2 = yield connect(server.number, protocols=["wamp.2.json"], wait_welcome=False, path=server.path("jane"))
        self.addCleanup(v2.abort)
        v2.send([1, "oro", {"roles": {"subscriber": {}}}])
        self.assertEqual((yield v2.next_message())[0], 2)
        v2.send([32, 1, {}, "oro/reminder_remind/1"])
        self.assertEqual((yield v2.next_message())[:5], [8, 32, 1, {}, "wamp.error.not_authorized"])
        v1 = yield connect(server.number, path=server.path("jane"))
        self.addCleanup(v1.abort)
        v1.subscribe("oro/reminder_remind/1")
        self.assertEqual((yield v1.next_message()),
                         b'You are not allowed to subscribe on topic "oro/reminder_remind/1".')


class Wamp2SessionFuzzTests(ServerTestCase):
    """Random WAMP v2 messages after HELLO never cost more than the sender's
    own session: no internal error (1011), nothing logged as a failure, and
    the server keeps serving."""

    timeout = 120

    @defer.inlineCallbacks
    def test_random_messages(self) -> Any:
        import random

        factory = self.make_factory()
        rng = random.Random(20261128)  # deterministic: the same messages every run
        junk = [None, True, 0, -1, 1.5, 2 ** 53, 2 ** 53 + 1, "", "x", "a..b", [], [1], {}, {"k": []},
                TOPIC, OTHER, PING, "wamp.error.x"]

        def an_id() -> Any:
            return rng.choice([rng.randrange(1, 1000), 0, -5, 2 ** 53, "7", None])

        def shaped() -> list:
            kind = rng.choice([1, 2, 3, 6, 8, 16, 16, 16, 32, 32, 34, 36, 48, 48, 64, 66, 70, 99])
            if kind == 16:
                options = {k: rng.choice([True, False, [an_id()], [], "x"])
                           for k in rng.sample(["acknowledge", "exclude_me", "exclude", "eligible"], rng.randrange(4))}
                return [16, an_id(), options, rng.choice([TOPIC, OTHER, "a..b", 5]), [rng.randrange(9)]]
            if kind == 32:
                return [32, an_id(), rng.choice([{}, {"match": "prefix"}, []]), rng.choice([TOPIC, OTHER, ""])]
            if kind == 34:
                return [34, an_id(), an_id()]
            if kind == 48:
                return [48, an_id(), {}, rng.choice([PING, "no.such", "#"]), rng.choice([[], [1], {}, None])]
            return [kind] + [rng.choice(junk) for _ in range(rng.randrange(5))]

        closes: list = []
        answered = sessions = 0
        c: Any = None
        for _ in range(300):
            if c is None or not c.is_open:
                if c is not None:
                    closes.append((yield c.closed)[1])
                c = yield connect(factory.port, protocols=["wamp.2.json"], wait_welcome=False)
                self.clients.append(c)
                c.send([1, "realm1", {"roles": {"subscriber": {}, "publisher": {}, "caller": {}}}])
                self.assertEqual((yield c.next_message())[0], 2)
                sessions += 1
            c.send(shaped())
            c.send([48, 424242, {}, PING, []])  # then a round trip: processed, or the session ended
            for _ in range(10):  # the answer to shaped(), if any, then the pong
                try:
                    msg = yield c.next_message(timeout=5)
                except ConnectionClosed:  # closed (ABORT for a protocol violation)
                    break  # a MessageTimeout is neither: it fails the test
                if isinstance(msg, list) and msg[:2] == [50, 424242]:
                    answered += 1
                    break
            else:
                self.fail(f"no pong and no close after {msg!r}")
        # Both kinds happened: requests answered and sessions aborted.
        self.assertGreater(answered, 50)
        self.assertGreater(sessions, 10)
        self.assertNotIn(1011, closes)  # no internal error
        self.assertEqual(self.flushLoggedErrors(), [])
        fresh = yield connect(factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(fresh)
        fresh.send([1, "realm1", {"roles": {"caller": {}}}])
        self.assertEqual((yield fresh.next_message())[0], 2)
        fresh.send([48, 1, {}, PING, []])
        self.assertEqual((yield fresh.next_message()), [50, 1, {}, ["pong"]])


class HardenedConfigTests(unittest.TestCase):
    def test_hardened_example_builds_with_its_realm(self) -> None:
        import os

        from oro_sync.config import load_config
        from oro_sync.server import build_factory

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "oro_sync", "etc", "oro-sync.hardened.yml")
        factory = build_factory(load_config(path), task.Clock())
        self.assertEqual(factory.wamp2.realms, frozenset({"oro"}))
        from oro_sync.identity import Identity

        backend = Identity.anonymous_for("1", backend=True)
        self.assertFalse(factory.wamp2.may_register(backend))  # the rule is "nobody"
        self.assertIn("wamp.2.json", factory.subprotocols)
