"""WAMP v2 routed RPC between clients, with real Autobahn|Python sessions."""

from __future__ import annotations

import json

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.wamp2 import messages as m
from oro_sync.wamp2.dealer import MAX_PENDING_CALLS, MAX_REGISTRATIONS, Dealer
from oro_sync.websocket.factory import WampServerFactory
from tests.support import wamp2
from tests.support.oro_server import start_oro_server
from tests.test_wamp1_server import PING, ServerTestCase

PROC = "com.example.add"


class DealerTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory(mayRegister=lambda identity: True)

    def join(self) -> defer.Deferred:
        return wamp2.join(self, self.factory.port)

    @defer.inlineCallbacks
    def test_call_reaches_the_callee_and_back(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        yield callee.register(lambda a, b, scale=1: (a + b) * scale, PROC)
        self.assertEqual((yield caller.call(PROC, 2, 3)), 5)
        self.assertEqual((yield caller.call(PROC, 2, 3, scale=10)), 50)

    @defer.inlineCallbacks
    def test_callee_errors_reach_the_caller(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()

        def fails() -> None:
            raise ApplicationError("com.example.error.bad", "bad input", code=7)

        yield callee.register(fails, PROC)
        e = yield self.assertFailure(caller.call(PROC), ApplicationError)
        self.assertEqual((e.error, e.args, e.kwargs), ("com.example.error.bad", ("bad input",), {"code": 7}))

    @defer.inlineCallbacks
    def test_one_callee_per_procedure_and_server_procedures_win(self) -> Any:
        first = yield self.join()
        second = yield self.join()
        yield first.register(lambda: 1, PROC)
        e = yield self.assertFailure(second.register(lambda: 2, PROC), ApplicationError)
        self.assertEqual(e.error, "wamp.error.procedure_already_exists")
        e = yield self.assertFailure(second.register(lambda: 2, PING), ApplicationError)
        self.assertEqual(e.error, "wamp.error.procedure_already_exists")
        self.assertEqual((yield second.call(PING)), "pong")

    @defer.inlineCallbacks
    def test_unregister(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        registration = yield callee.register(lambda: 1, PROC)
        yield registration.unregister()
        e = yield self.assertFailure(caller.call(PROC), ApplicationError)
        self.assertEqual(e.error, "wamp.error.no_such_procedure")
        yield callee.register(lambda: 2, PROC)  # free again
        self.assertEqual((yield caller.call(PROC)), 2)

    @defer.inlineCallbacks
    def test_callee_leaving_cancels_pending_calls_and_frees_the_name(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        yield callee.register(lambda: defer.Deferred(), PROC)  # never answers
        pending = caller.call(PROC)
        yield caller.call(PING)  # the CALL above was routed
        yield callee.leave()
        e = yield self.assertFailure(pending, ApplicationError)
        self.assertEqual(e.error, "wamp.error.canceled")
        e = yield self.assertFailure(caller.call(PROC), ApplicationError)
        self.assertEqual(e.error, "wamp.error.no_such_procedure")
        self.assertEqual(self.factory.wamp2.dealer.in_flight, 0)

    @defer.inlineCallbacks
    def test_caller_leaving_drops_its_calls(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        answer: defer.Deferred = defer.Deferred()
        yield callee.register(lambda: answer, PROC)
        caller.call(PROC).addErrback(lambda f: None)
        yield caller.call(PING)
        self.assertEqual(self.factory.wamp2.dealer.in_flight, 1)
        yield caller.leave()
        yield caller.gone
        self.assertEqual(self.factory.wamp2.dealer.in_flight, 0)
        answer.callback("late")  # the YIELD for a caller that left is ignored
        yield callee.call(PING)
        self.assertTrue(callee.is_attached())
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_calls_in_flight_are_bounded(self) -> Any:
        # Per caller (the per-callee bound is off here: see CalleeProtectionTests).
        self.factory.wamp2.dealer.max_callee_invocations = 0
        callee = yield self.join()
        caller = yield self.join()
        yield callee.register(lambda: defer.Deferred(), PROC)
        for _ in range(MAX_PENDING_CALLS):
            caller.call(PROC).addErrback(lambda f: None)
        e = yield self.assertFailure(caller.call(PROC), ApplicationError)
        self.assertEqual(e.error, "oro_sync.error.too_many_calls")
        self.assertEqual(self.factory.wamp2.dealer.in_flight, MAX_PENDING_CALLS)

    @defer.inlineCallbacks
    def test_cancel_reaches_caller_and_callee(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        running: defer.Deferred = defer.Deferred()
        interrupted: defer.Deferred = defer.Deferred()

        def slow() -> defer.Deferred:
            d: defer.Deferred = defer.Deferred(lambda _: interrupted.callback(None))
            running.callback(None)
            return d

        yield callee.register(slow, PROC)
        call = caller.call(PROC)
        yield running
        call.cancel()  # Autobahn sends CANCEL
        yield self.assertFailure(call, defer.CancelledError, ApplicationError)
        yield interrupted  # the callee got INTERRUPT and cancelled its work
        yield caller.call(PING)
        self.assertEqual(self.factory.wamp2.dealer.in_flight, 0)

    @defer.inlineCallbacks
    def test_registrations_are_bounded(self) -> Any:
        callee = yield self.join()
        e = yield self.assertFailure(callee.register(lambda: 1, "wamp.session.count"), ApplicationError)
        self.assertEqual(e.error, "wamp.error.invalid_uri")
        e = yield self.assertFailure(callee.register(lambda: 1, "x" * 600), ApplicationError)
        self.assertEqual(e.error, "wamp.error.invalid_uri")
        for i in range(MAX_REGISTRATIONS):
            yield callee.register(lambda: 1, f"com.example.p{i}")
        e = yield self.assertFailure(callee.register(lambda: 1, "com.example.one_more"), ApplicationError)
        self.assertEqual(e.error, "oro_sync.error.too_many_registrations")

    def test_unknown_rule_is_refused(self) -> None:
        from oro_sync.auth.rules import registration_permission

        with self.assertRaises(ValueError):
            registration_permission("sometimes")


class OroRegistrationRuleTests(unittest.TestCase):
    """The shipped rule: only backends (anonymous tickets signed with the
    application secret) register; users may call."""

    timeout = 30

    @defer.inlineCallbacks
    def test_backends_register_users_call(self) -> Any:
        server = start_oro_server(self)
        admin = yield wamp2.join(self, server.number, realm="oro", path=server.path("admin"))
        backend = yield wamp2.join(self, server.number, realm="oro", path=server.path())
        e = yield self.assertFailure(admin.register(lambda: "x", "com.example.user_proc"), ApplicationError)
        self.assertEqual(e.error, "wamp.error.not_authorized")
        from autobahn.wamp.types import RegisterOptions

        # A backend callee learns who called.
        yield backend.register(lambda name, details=None: f"hello {name} from {details.caller_authid}",
                               "com.example.greet", options=RegisterOptions(details_arg="details"))
        self.assertEqual((yield admin.call("com.example.greet", "you")), "hello you from admin")


class _Conn:
    def __init__(self, sid: str, backend: bool = False):
        from oro_sync.identity import Identity
        self.session_id = sid
        self.identity = Identity.anonymous_for(sid, backend=backend)


class _Session:
    """A dealer-side session whose send() may close another session, as a
    slow-consumer cutoff does in the middle of a write."""

    def __init__(self, dealer: Dealer, sid: str):
        self.dealer, self.conn = dealer, _Conn(sid)
        self.session_id, self.identity = sid, self.conn.identity
        self.registrations: set = set()
        self.calls: dict = {}
        self.invocations: dict = {}
        self.sent: list = []
        self.on_send: Any = None

    def encode(self, msg: list) -> str:
        return json.dumps(msg)

    def send_encoded(self, data: str) -> None:
        self.send(json.loads(data))

    def send(self, text: str) -> None:
        self.sent.append(text)
        if self.on_send is not None:
            hook, self.on_send = self.on_send, None
            hook()


class DealerReentryTests(unittest.TestCase):
    def test_a_cancel_that_closes_the_caller_does_not_break_the_callee_cleanup(self) -> None:
        ids = iter(range(1, 1000))
        dealer = Dealer(lambda: next(ids))
        callee, caller, other = (_Session(dealer, str(n)) for n in (101, 102, 103))
        dealer.register(callee, m.Register(1, {}, PROC))
        for req in (1, 2):
            self.assertTrue(dealer.call(caller, m.Call(req, {}, PROC, [], None)))
        self.assertTrue(dealer.call(other, m.Call(1, {}, PROC, [], None)))
        # The first "callee left" error pushes the caller over its output
        # limit: it is closed (and cleaned up) in the middle of the loop.
        caller.on_send = lambda: dealer.session_closed(caller)
        dealer.session_closed(callee)
        self.assertEqual(dealer.in_flight, 0)
        self.assertEqual((caller.calls, other.calls, callee.invocations), ({}, {}, {}))
        self.assertEqual(len(other.sent), 1)
        self.assertIn("wamp.error.canceled", other.sent[0])
        self.assertEqual(dealer.registrations, {})

    def test_a_caller_leaving_interrupts_its_callees(self) -> None:
        ids = iter(range(1, 1000))
        dealer = Dealer(lambda: next(ids))
        callee, caller = _Session(dealer, "111"), _Session(dealer, "112")
        dealer.register(callee, m.Register(1, {}, PROC))
        self.assertTrue(dealer.call(caller, m.Call(7, {}, PROC, [], None)))
        (invocation,) = [msg for msg in callee.sent if msg[0] == m.INVOCATION]
        dealer.session_closed(caller)
        self.assertEqual(callee.sent[-1], [m.INTERRUPT, invocation[1], {}])
        self.assertEqual((callee.invocations, dealer.in_flight), ({}, 0))


class DealerOptionsTests(unittest.TestCase):
    """Call timeout and progressive results, on a task.Clock (no socket)."""

    PROC = "com.example.p"

    def setUp(self) -> None:
        from twisted.internet import task
        ids = iter(range(1, 1000))
        self.clock = task.Clock()
        self.dealer = Dealer(lambda: next(ids), self.clock)
        self.callee, self.caller = _Session(self.dealer, "201"), _Session(self.dealer, "202")
        self.dealer.register(self.callee, m.Register(1, {}, self.PROC))

    def test_timeout_cancels_the_caller_and_interrupts_the_callee(self) -> None:
        self.dealer.call(self.caller, m.Call(5, {"timeout": 1500}, self.PROC, [], None))
        inv_id = self.callee.sent[0][1]
        self.assertEqual(self.callee.sent[0][3], {"timeout": 1500})
        self.clock.advance(1.4)
        self.assertEqual(self.caller.sent, [])
        self.clock.advance(0.2)
        self.assertEqual(self.callee.sent[1], m.interrupt(inv_id))
        self.assertEqual(self.caller.sent, [m.error(m.CALL, 5, "wamp.error.canceled", ["call timed out"])])
        self.dealer.yielded(self.callee, m.Yield(inv_id, {}, ["late"], None))  # ignored
        self.assertEqual(len(self.caller.sent), 1)
        self.assertEqual(self.dealer.in_flight, 0)

    def test_an_answer_in_time_stops_the_timer(self) -> None:
        self.dealer.call(self.caller, m.Call(5, {"timeout": 1000}, self.PROC, [], None))
        self.dealer.yielded(self.callee, m.Yield(self.callee.sent[0][1], {}, ["ok"], None))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.caller.sent, [m.result(5, ["ok"], None)])

    def test_progressive_results(self) -> None:
        self.dealer.call(self.caller, m.Call(5, {"receive_progress": True}, self.PROC, [], None))
        inv = self.callee.sent[0]
        self.assertEqual(inv[3], {"receive_progress": True})
        for i in range(3):
            self.dealer.yielded(self.callee, m.Yield(inv[1], {"progress": True}, [i], None))
        self.dealer.yielded(self.callee, m.Yield(inv[1], {}, ["done"], None))
        self.assertEqual(self.caller.sent, [m.progress(5, [0], None), m.progress(5, [1], None),
                                            m.progress(5, [2], None), m.result(5, ["done"], None)])
        # Without receive_progress, progressive yields are dropped.
        self.dealer.call(self.caller, m.Call(6, {}, self.PROC, [], None))
        inv = self.callee.sent[1]
        self.dealer.yielded(self.callee, m.Yield(inv[1], {"progress": True}, [0], None))
        self.dealer.yielded(self.callee, m.Yield(inv[1], {}, ["end"], None))
        self.assertEqual(self.caller.sent[4:], [m.result(6, ["end"], None)])

    def test_bad_options_are_refused(self) -> None:
        for options in ({"timeout": "1"}, {"timeout": -1}, {"receive_progress": 1}, {"disclose_me": "yes"}):
            self.caller.sent.clear()
            self.dealer.call(self.caller, m.Call(9, options, self.PROC, [], None))
            self.assertEqual(self.caller.sent[0][4], "wamp.error.invalid_argument", options)
        self.assertEqual(self.dealer.in_flight, 0)
