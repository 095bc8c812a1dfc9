"""The Oro topic layer without sockets: handlers, services, OroPubSub, timers."""

from __future__ import annotations

import os
import textwrap

from twisted.internet import task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from oro_sync.config import ConfigError, load_config, parse_config
from oro_sync.core.hub import Hub
from oro_sync.interfaces import IPubSubPolicy, IPushableTopic, ITopic
from oro_sync.oro.pubsub import OroPubSub
from oro_sync.oro.routing import Router, RoutingError, compile_route
from oro_sync.server import build_server
from oro_sync.oro.services import ServiceError, build_handlers, default_references, resolve_parameters
from oro_sync.oro.topics import (
    PING_MESSAGE, AbstractTopic, BroadcastTopic, SecuredTopic, SyncFailTopic, WebsocketPingTopic,
)
from oro_sync.wamp1.messages import Publish
from tests.support.fakes import FakeSession, V1FrontEnd, user_session


def make_layer(routes, handlers, **kw):
    hub = Hub()
    policy = OroPubSub(hub, Router(routes), {h.getName(): h for h in handlers}, **kw)
    return hub, V1FrontEnd(policy)


def r(name, channel, callback, requirements=None):
    spec = {"channel": channel, "handler": {"callback": callback}}
    if requirements:
        spec["requirements"] = requirements
    return compile_route(name, spec)


class Recorder(AbstractTopic):
    """Records calls; optionally fails, to test error isolation."""

    def __init__(self, name, fail_on=()):
        super().__init__(name)
        self.calls = []
        self.fail_on = set(fail_on)

    def _record(self, what, *args):
        self.calls.append((what,) + args)
        if what in self.fail_on:
            raise RuntimeError(f"{what} exploded")

    def onSubscribe(self, connection, topic, request):
        self._record("sub", connection.session_id, topic.uri, dict(request.attributes))

    def onUnSubscribe(self, connection, topic, request):
        self._record("unsub", connection.session_id, topic.uri)

    def onPublish(self, connection, topic, request, event, exclude, eligible):
        self._record("pub", connection.session_id, topic.uri, event, exclude, eligible)


class HandlerInterfaceTests(unittest.TestCase):
    def test_builtins_provide_itopic(self) -> None:
        for handler in [AbstractTopic("a"), BroadcastTopic("b"), SecuredTopic("c"),
                        SyncFailTopic("d"), WebsocketPingTopic("e", clock=task.Clock())]:
            self.assertTrue(verifyObject(ITopic, handler))

    def test_policy_provides_ipubsubpolicy(self) -> None:
        _, policy = make_layer([], [])
        self.assertTrue(verifyObject(IPubSubPolicy, policy.policy))


class BroadcastTests(unittest.TestCase):
    def setUp(self) -> None:
        self.hub, self.policy = make_layer([r("m", "oro/maintenance", "oro_sync.maintenance")],
                                           [BroadcastTopic("oro_sync.maintenance")])
        self.a, self.b, self.c = FakeSession("A"), FakeSession("B"), FakeSession("C")
        for s in (self.a, self.b):
            self.policy.subscribe(s, "oro/maintenance")

    def publish(self, session, *extra):
        """Publish as the parser would hand over ``[7, t, e, *extra]``."""
        if not extra:
            message = Publish("oro/maintenance", {"isOn": True})
        elif len(extra) == 2:
            message = Publish("oro/maintenance", {"isOn": True}, exclude=tuple(extra[0]),
                              eligible=tuple(extra[1]))
        elif isinstance(extra[0], list):
            message = Publish("oro/maintenance", {"isOn": True}, exclude=tuple(extra[0]))
        else:
            flag = extra[0]
            message = Publish("oro/maintenance", {"isOn": True},
                              exclude_me=flag if isinstance(flag, bool) else None, flag_truthy=bool(flag))
        self.policy.publish(session, "oro/maintenance", message)

    def receivers(self):
        return {s.session_id for s in (self.a, self.b, self.c) if s.events()}

    def test_backend_publish_reaches_every_subscriber(self) -> None:
        # The PHP backend: [7, uri, payload, [], []], publisher not subscribed.
        self.publish(self.c, [], [])
        self.assertEqual(self.receivers(), {"A", "B"})
        self.assertEqual(self.a.events(), [("oro/maintenance", {"isOn": True})])

    def test_ratchet_profile_table(self) -> None:
        table = [
            ((), {"A", "B"}),                  # no flag: nobody excluded
            ((True,), {"B"}),                  # excludeMe
            ((False,), {"A", "B"}),
            ((None,), {"A", "B"}),             # null is falsy
            ((1,), {"B"}),                     # any truthy value: exclude me
            ((["B"],), {"A"}),
            (([], ["B"]), {"B"}),
            ((["A"], ["A", "B"]), {"B"}),
            (([], []), {"A", "B"}),            # empty eligible: everyone
        ]
        for extra, expected in table:
            for s in (self.a, self.b, self.c):
                s.frames.clear()
            self.publish(self.a, *extra)
            self.assertEqual(self.receivers(), expected, extra)

    def test_publish_with_no_subscribers_is_harmless(self) -> None:
        hub, policy = make_layer([r("m", "x", "b")], [BroadcastTopic("b")])
        policy.publish(FakeSession("Z"), "x", Publish("x", 1))
        self.assertEqual(hub.topics.topics, {})


class SecuredTopicTests(unittest.TestCase):
    def setUp(self) -> None:
        self.handler = SecuredTopic("oro_email.event")
        self.hub, self.policy = make_layer(
            [r("oro_email.event", "oro/email_event/{user_id}/{organization_id}", "oro_email.event",
               {"user_id": {"pattern": r"\d+"}, "organization_id": {"pattern": r"\d+", "wildcard": True}})],
            [self.handler])
        self.logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_own_user_allowed(self) -> None:
        s = user_session("S1", 12)
        self.policy.subscribe(s, "oro/email_event/12/1")
        self.assertIn("oro/email_event/12/1", s.subscriptions)
        self.assertIn(s, self.hub.topics.get("oro/email_event/12/1"))

    def test_other_user_denied_and_logged(self) -> None:
        s = user_session("S2", 12)
        self.policy.subscribe(s, "oro/email_event/13/1")
        self.assertEqual(s.subscriptions, set())
        self.assertIsNone(self.hub.topics.get("oro/email_event/13/1"))
        self.assertTrue(any("may not subscribe" in (e.get("log_format") or "") for e in self.logged))
        self.assertEqual(s.frames, [])  # no Oro denial frame by default

    def test_anonymous_denied(self) -> None:
        s = FakeSession("S3")
        self.policy.subscribe(s, "oro/email_event/1/1")
        self.assertEqual(s.subscriptions, set())

    def test_zero_user_id_denied(self) -> None:
        s = user_session("S4", 0)
        self.policy.subscribe(s, "oro/email_event/0/1")
        self.assertEqual(s.subscriptions, set())

    def test_denial_frame_option(self) -> None:
        self.handler.denial_frame = True
        s = user_session("S5", 3)
        self.policy.subscribe(s, "oro/email_event/4/1")
        self.assertEqual(s.texts(), ['You are not allowed to subscribe on topic "oro/email_event/4/1".'])

    def test_denied_subscriber_gets_no_events(self) -> None:
        owner, intruder = user_session("O", 5), user_session("I", 6)
        self.policy.subscribe(owner, "oro/email_event/5/1")
        self.policy.subscribe(intruder, "oro/email_event/5/1")
        self.hub.topics.get("oro/email_event/5/1").broadcast({"new": 1})
        self.assertEqual(owner.events(), [("oro/email_event/5/1", {"new": 1})])
        self.assertEqual(intruder.events(), [])

    def test_sync_fail_star_is_open(self) -> None:
        handler = SyncFailTopic("oro_imap.sync_fail")
        hub, policy = make_layer([r("f", "oro/imap_sync_fail/{user_id}", "oro_imap.sync_fail",
                                    {"user_id": {"pattern": r"\d+", "wildcard": True}})], [handler])
        anon, user = FakeSession("A"), user_session("U", 2)
        policy.subscribe(anon, "oro/imap_sync_fail/*")
        policy.subscribe(user, "oro/imap_sync_fail/2")
        policy.subscribe(anon, "oro/imap_sync_fail/2")
        self.assertEqual(anon.subscriptions, {"oro/imap_sync_fail/*"})
        self.assertEqual(user.subscriptions, {"oro/imap_sync_fail/2"})


class PolicyTests(unittest.TestCase):
    def test_a_refusal_outside_onsubscribe_is_a_handler_error(self) -> None:
        from oro_sync.core.metrics import Metrics
        from oro_sync.core.policy import SubscriptionDenied

        class Refuser(Recorder):
            def onPublish(self, connection, topic, request, event, exclude, eligible):
                raise SubscriptionDenied("not here")

            def onUnSubscribe(self, connection, topic, request):
                raise SubscriptionDenied("nor here")

        metrics = Metrics()
        hub, policy = make_layer([r("x", "room/{id}", ["refuser", "after"])],
                                 [Refuser("refuser"), Recorder("after")], metrics=metrics)
        s = FakeSession("S")
        self.assertIsNone(policy.subscribe(s, "room/1"))
        self.assertTrue(policy.publish(s, "room/1", Publish("room/1", "hi")))
        policy.session_closed(s)  # onUnSubscribe refuses: logged, the session still leaves
        self.assertEqual(s.subscriptions, set())
        self.assertIsNone(hub.topics.get("room/1"))
        self.assertEqual(metrics["handler_errors"], 2)
        self.assertEqual(len(self.flushLoggedErrors(SubscriptionDenied)), 2)

    def test_handler_chain_in_order_and_errors_isolated(self) -> None:
        first, second = Recorder("first", fail_on={"sub", "pub"}), Recorder("second")
        hub, policy = make_layer([r("x", "room/{id}", ["first", "second"])], [first, second])
        s = FakeSession("S")
        policy.subscribe(s, "room/1")
        policy.publish(s, "room/1", Publish("room/1", "hi", exclude_me=True, flag_truthy=True))
        policy.unsubscribe(s, "room/1")
        self.assertEqual(second.calls, [
            ("sub", "S", "room/1", {"id": "1"}),
            ("pub", "S", "room/1", "hi", ["S"], []),
            ("unsub", "S", "room/1")])
        self.assertEqual([c[0] for c in first.calls], ["sub", "pub", "unsub"])
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len(errors), 2)
        self.assertIsNone(hub.topics.get("room/1"))

    def test_observer_hears_subscriptions(self) -> None:
        class Observer:
            def __init__(self):
                self.calls = []

            def onClientSubscribed(self, session, uri):
                self.calls.append(("sub", session.session_id, uri))

            def onClientUnsubscribed(self, session, uri):
                self.calls.append(("unsub", session.session_id, uri))

        observer = Observer()
        hub, policy = make_layer([r("x", "t/{n}", "h")], [SecuredTopic("h")], observer=observer)
        anonymous = FakeSession("A")
        policy.subscribe(anonymous, "t/1")  # refused by the handler: not reported
        user = user_session("U", 1)
        hub2, policy2 = make_layer([r("x", "t/{n}", "b")], [BroadcastTopic("b")], observer=observer)
        policy2.subscribe(user, "t/1")
        policy2.session_closed(user)
        self.assertEqual(observer.calls, [("sub", "U", "t/1"), ("unsub", "U", "t/1")])

    def test_unrouted_subscribe_and_publish_do_nothing(self) -> None:
        rec = Recorder("h")
        hub, policy = make_layer([r("x", "known", "h")], [rec])
        s = FakeSession("S")
        policy.subscribe(s, "unknown")
        policy.publish(s, "unknown", Publish("unknown", 1))
        self.assertEqual((rec.calls, s.subscriptions, hub.topics.topics), ([], set(), {}))

    def test_callback_naming_no_handler_is_a_startup_error(self) -> None:
        with self.assertRaises(RoutingError) as ctx:
            make_layer([r("x", "a", ["h", "missing"])], [Recorder("h")])
        self.assertIn("'missing'", str(ctx.exception))
        self.assertIn("'x'", str(ctx.exception))

    def test_disconnect_unsubscribes_everything(self) -> None:
        rec = Recorder("h")
        hub, policy = make_layer([r("x", "t/{n}", "h")], [rec])
        s, other = FakeSession("S"), FakeSession("O")
        for n in range(3):
            policy.subscribe(s, f"t/{n}")
        policy.subscribe(other, "t/0")
        policy.session_closed(s)
        self.assertEqual(sorted(c[2] for c in rec.calls if c[0] == "unsub"), ["t/0", "t/1", "t/2"])
        self.assertEqual(set(hub.topics.topics), {"t/0"})
        self.assertEqual(s.subscriptions, set())

    def test_publish_permission_hook(self) -> None:
        rec = Recorder("h")
        hub, policy = make_layer([r("x", "t", "h")], [rec], may_publish=lambda s, req: s.session_id == "B")
        policy.publish(FakeSession("A"), "t", Publish("t", 1))
        policy.publish(FakeSession("B"), "t", Publish("t", 2))
        self.assertEqual([c[3] for c in rec.calls], [2])

    def test_push_to_pushable_handlers(self) -> None:
        """onPush (with the provider, Gos's form) where a handler has it,
        onPublish from the backend session where not; route names work for
        routes without placeholders."""
        from oro_sync.core.publish import PublishRequest
        from oro_sync.pushers.dispatch import BackendSession

        @implementer(IPushableTopic)
        class Pushable(BroadcastTopic):
            def onPush(self, topic, request, data, provider):
                topic.broadcast({"pushed": data, "via": provider})

        rec = Recorder("r")
        hub, policy = make_layer([r("news", "news/{cat}", "p"), r("plain", "plain", "r")],
                                 [Pushable("p"), rec])
        s = FakeSession("S")
        policy.subscribe(s, "news/sport")
        backend = BackendSession("test")
        request = policy.push_request("news/sport")
        self.assertTrue(policy.push(backend, request, PublishRequest("news/sport", 1, "B", 7), "redis"))
        self.assertEqual(s.events(), [("news/sport", {"pushed": 1, "via": "redis"})])
        self.assertIsNone(policy.push_request("nowhere"))
        self.assertIsNone(policy.push_request("news"))  # a route name with placeholders
        request = policy.push_request("plain")  # by route name
        self.assertEqual(request.matched, "plain")
        self.assertTrue(policy.push(backend, request, PublishRequest("plain", 2, "B", 8), "http"))
        self.assertEqual(rec.calls, [("pub", backend.session_id, "plain", 2, [], [])])


class PingTimerTests(unittest.TestCase):
    """The ping topic's LoopingCall: one per topic, only while subscribed."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.ping = WebsocketPingTopic("oro_sync.ping", interval=50, clock=self.clock)
        self.hub, self.policy = make_layer([r("p", "oro/ping", "oro_sync.ping")], [self.ping])

    def test_cadence(self) -> None:
        s = FakeSession("S")
        self.policy.subscribe(s, "oro/ping")
        self.clock.advance(49)
        self.assertEqual(s.events(), [])
        self.clock.advance(1)
        self.assertEqual(s.events(), [("oro/ping", PING_MESSAGE)])
        self.clock.advance(50)
        self.clock.advance(50)
        self.assertEqual(len(s.events()), 3)
        self.assertEqual(s.texts()[0], '[8,"oro/ping","Connection keep alive"]')

    def test_no_leak_no_double(self) -> None:
        a, b = FakeSession("A"), FakeSession("B")
        self.policy.subscribe(a, "oro/ping")
        self.policy.subscribe(b, "oro/ping")
        self.assertEqual(len(self.ping.timers), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.policy.unsubscribe(a, "oro/ping")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.policy.session_closed(b)
        self.assertEqual(self.ping.timers, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Resubscribe several times: still exactly one timer, one ping per interval.
        for _ in range(3):
            self.policy.subscribe(a, "oro/ping")
            self.policy.unsubscribe(a, "oro/ping")
        self.policy.subscribe(a, "oro/ping")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        a.frames.clear()
        self.clock.advance(50)
        self.assertEqual(len(a.events()), 1)

    def test_client_publish_ignored(self) -> None:
        s = FakeSession("S")
        self.policy.subscribe(s, "oro/ping")
        self.policy.publish(s, "oro/ping", Publish("oro/ping", "x", exclude_me=False))
        self.assertEqual(s.frames, [])

    def test_bad_interval(self) -> None:
        self.assertRaises(ValueError, WebsocketPingTopic, "p", interval=0, clock=self.clock)


class ServiceTests(unittest.TestCase):
    def refs(self):
        return default_references(task.Clock(), Hub())

    def test_parameters(self) -> None:
        params = {"a": 5, "b": "x"}
        self.assertEqual(resolve_parameters(["%a%", "v%b%w", "100%%", {"k": "%a%"}], params),
                         [5, "vxw", "100%", {"k": 5}])
        self.assertRaises(ServiceError, resolve_parameters, "%nope%", params)

    def test_build_with_references(self) -> None:
        handlers = build_handlers({
            "svc.ping": {"class": "oro_sync.oro.topics.WebsocketPingTopic",
                         "arguments": ["oro_sync.ping", "@logger", "%interval%", "@clock"]},
            "svc.b": {"class": "oro_sync.oro.topics.BroadcastTopic", "arguments": {"name": "b"}},
        }, {"interval": 7}, self.refs())
        self.assertEqual(sorted(handlers), ["b", "oro_sync.ping"])
        self.assertEqual(handlers["oro_sync.ping"].interval, 7.0)
        self.assertEqual(handlers["oro_sync.ping"].log.namespace, "svc.ping")

    def test_errors(self) -> None:
        cases = [
            ({"s": {"class": "no.such.Class"}}, "cannot import"),
            ({"s": {"class": "oro_sync.oro.topics.BroadcastTopic", "arguments": ["@nope"]}}, "@nope"),
            ({"s": {"class": "builtins.dict"}}, "ITopic"),
            ({"s": {"class": "oro_sync.oro.topics.BroadcastTopic", "argument": []}}, "unknown key"),
            ({"s": {"class": "oro_sync.oro.topics.BroadcastTopic", "arguments": ["a", 1, 2, 3, 4]}},
             "could not be created"),
            ({"s1": {"class": "oro_sync.oro.topics.BroadcastTopic", "arguments": ["a"]},
              "s2": {"class": "oro_sync.oro.topics.BroadcastTopic", "arguments": ["a"]}}, "already named"),
        ]
        for services, fragment in cases:
            with self.assertRaises(ServiceError) as ctx:
                build_handlers(services, {}, self.refs())
            self.assertIn(fragment, str(ctx.exception))


class ConfigTests(unittest.TestCase):
    def test_shipped_config_builds_all_nine_channels(self) -> None:
        config = load_config()
        built = build_server(config, task.Clock())
        built.factory  # the factory builds too
        names = {route.name for route in built.router.routes}
        self.assertEqual(len(names), 9)
        self.assertEqual(set(built.handlers), {cb for route in built.router.routes for cb in route.callbacks})
        self.assertIsInstance(built.handlers["oro_sync.ping"], WebsocketPingTopic)
        self.assertEqual(built.handlers["oro_sync.ping"].interval, 50.0)
        self.assertIsInstance(built.handlers["oro_email.event"], SecuredTopic)

    def test_errors_name_the_setting(self) -> None:
        for data, fragment in [({"srever": {}}, "srever"),
                               ({"server": {"listen": 8080}}, "server.listen"),
                               ({"server": {"max_message_size": "big"}}, "server.max_message_size"),
                               ({"server": {"bogus": 1}}, "bogus"),
                               ({"routing": [1]}, "routing[0]"),
                               ({"limits": {"max_connections": float("inf")}}, "limits.max_connections"),
                               ({"limits": {"publish_rate": float("nan")}}, "limits.publish_rate"),
                               ({"auth": {"secret": "s", "ticket_ttl": float("nan")}}, "auth.ticket_ttl"),
                               ({"auth": {"secret": "s", "clock_leeway": float("inf")}}, "auth.clock_leeway"),
                               ({"auth": {"secret": "s", "one_time_tickets": "yes"}}, "auth.one_time_tickets"),
                               ({"origins": {"allow_missing": "false"}}, "origins.allow_missing"),
                               ({"server": {"wamp2_registrations": "sometimes"}}, "wamp2_registrations")]:
            with self.assertRaises(ConfigError) as ctx:
                parse_config(data, "/x/oro-sync.yml")
            self.assertIn(fragment, str(ctx.exception))

    def test_relative_routing_paths(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        path = os.path.join(base, "conf.yml")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""\
                routing: [routes/websocket_routing.yml]
                """))
        self.assertEqual(load_config(path).routing,
                         [os.path.join(os.path.abspath(base), "routes", "websocket_routing.yml")])
