"""WAMP v2 routed RPC between clients, with real Autobahn|Python sessions."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.wamp2.dealer import MAX_PENDING_CALLS
from oro_sync.wamp1.factory import WampServerFactory
from tests.support import wamp2
from tests.support.oro_server import start_oro_server
from tests.test_wamp1_server import PING, ServerTestCase

PROC = "com.example.add"


class DealerTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory(wamp2Registrations="everyone")

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
        self.assertEqual(self.factory.wamp2.dealer.invocations, {})

    @defer.inlineCallbacks
    def test_caller_leaving_drops_its_calls(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        answer: defer.Deferred = defer.Deferred()
        yield callee.register(lambda: answer, PROC)
        caller.call(PROC).addErrback(lambda f: None)
        yield caller.call(PING)
        self.assertEqual(len(self.factory.wamp2.dealer.invocations), 1)
        yield caller.leave()
        yield caller.gone
        self.assertEqual(self.factory.wamp2.dealer.invocations, {})
        answer.callback("late")  # the YIELD for a caller that left is ignored
        yield callee.call(PING)
        self.assertTrue(callee.is_attached())
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_calls_in_flight_are_bounded(self) -> Any:
        callee = yield self.join()
        caller = yield self.join()
        yield callee.register(lambda: defer.Deferred(), PROC)
        for _ in range(MAX_PENDING_CALLS):
            caller.call(PROC).addErrback(lambda f: None)
        e = yield self.assertFailure(caller.call(PROC), ApplicationError)
        self.assertEqual(e.error, "wamp.error.canceled")
        self.assertEqual(len(self.factory.wamp2.dealer.invocations), MAX_PENDING_CALLS)

    def test_unknown_rule_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            WampServerFactory(None, wamp2Registrations="anyone")


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
        yield backend.register(lambda name: f"hello {name}", "com.example.greet")
        self.assertEqual((yield admin.call("com.example.greet", "admin")), "hello admin")
