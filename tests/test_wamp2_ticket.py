"""WAMP-Ticket and RPC details with Autobahn|Python 26 against the shipped Oro configuration.

HELLO ``authmethods: ["ticket"]`` → CHALLENGE → AUTHENTICATE with an Oro sync
ticket (the same verifier as URL tickets), for every serializer; wrong
secret, expired ticket, and no ticket at all; then call timeout
(``wamp.error.canceled`` + INTERRUPT) and progressive results.
"""

from __future__ import annotations

import time
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions
from twisted.internet import defer, task
from twisted.trial import unittest

from oro_sync.auth.ticket_signing import issue_ticket
from tests.support import wamp2
from tests.support.client import connect
from tests.support.oro_server import SECRET, USERS, start_oro_server


class WampTicketTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.log_events: list[dict] = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)
        self.server = start_oro_server(self)

    def join(self, ticket: str, serializers: str = "json", authid: str | None = None) -> defer.Deferred:
        # No ?ticket= in the URL: the upgrade lets a v2 client through.
        return wamp2.join(self, self.server.number, realm="oro", serializers=serializers,
                          ticket=ticket, authid=authid)

    def _lines(self, text: str) -> list[dict]:
        return [e for e in self.log_events if text in str(e.get("why", ""))]

    @defer.inlineCallbacks
    def test_user_ticket_in_band_for_each_serializer(self) -> Any:
        for serializers in ("json", "msgpack", "cbor"):
            s = yield self.join(self.server.ticket("admin"), serializers, authid="admin")
            d = s.welcome_details
            self.assertEqual((d.authid, d.authrole, d.authmethod), ("admin", "user", "ticket"))
            self.assertEqual(s.challenge.method, "ticket")
            session = self.server.factory.hub.sessions[str(d.session)]
            self.assertEqual(session.identity.username, "admin")
            queue, _ = yield wamp2.events(s, "oro/maintenance")
            backend = yield self.server.client(self)
            backend.publish("oro/maintenance", {"isOn": True, "userId": None}, [], [])
            self.assertEqual((yield queue.next())[0], [{"isOn": True, "userId": None}])

    @defer.inlineCallbacks
    def test_backend_ticket_in_band(self) -> Any:
        s = yield self.join(self.server.ticket())
        session = self.server.factory.hub.sessions[str(s.session_id)]
        self.assertTrue(session.identity.backend)
        self.assertEqual(s.welcome_details.authmethod, "ticket")
        # The connection knows too: backends are exempt from the message
        # budget, and log lines name who it is.
        self.assertTrue(session.conn.identity.backend)
        self.assertIsNone(session.conn._message_budget)

    @defer.inlineCallbacks
    def test_user_ticket_in_band_names_the_connection_and_keeps_its_budget(self) -> Any:
        s = yield self.join(self.server.ticket("admin"), authid="admin")
        conn = self.server.factory.hub.sessions[str(s.session_id)].conn
        self.assertEqual(conn.identity.username, "admin")
        self.assertIsNotNone(conn._message_budget)
        connects = [e for e in self.log_events if e.get("log_event") == "connect"]
        self.assertEqual(connects[-1]["user"], "admin")

    @defer.inlineCallbacks
    def _refused(self, ticket: str, reason: str) -> Any:
        e = yield self.assertFailure(self.join(ticket, "msgpack"), ConnectionError)
        self.assertIn("wamp.error.not_authorized", str(e))
        self.assertEqual(self.server.factory.hub.sessions, {})
        lines = self._lines(f"ticket {reason}")
        self.assertEqual(len(lines), 1, [e.get("why") for e in self.log_events if e.get("why")])
        self.assertNotIn(ticket, repr(self.log_events))  # never the ticket
        self.assertEqual(self.server.factory.metrics.snapshot()["refusals"].get("ticket"), 1)

    def test_wrong_secret(self) -> Any:
        admin = USERS[0]
        return self._refused(issue_ticket("AnotherSecretEntirely", "admin", admin["password"]), "bad-digest")

    def test_expired_ticket(self) -> Any:
        admin = USERS[0]
        return self._refused(issue_ticket(SECRET, "admin", admin["password"], now=time.time() - 3600),
                             "expired")

    @defer.inlineCallbacks
    def test_no_ticket_at_all_is_refused_in_hello(self) -> Any:
        e = yield self.assertFailure(wamp2.join(self, self.server.number, realm="oro"), ConnectionError)
        self.assertIn("wamp.error.not_authorized", str(e))

    @defer.inlineCallbacks
    def test_v1_still_needs_the_url_ticket(self) -> Any:
        from tests.support.client import HandshakeFailed
        with self.assertRaises(HandshakeFailed) as caught:
            yield connect(self.server.number, protocols=["wamp"])
        self.assertIn("403", str(caught.exception))

    @defer.inlineCallbacks
    def test_must_authenticate_within_the_handshake_timeout(self) -> Any:
        clock = task.Clock()
        self.server.factory.clock = clock  # the HELLO/AUTHENTICATE timer
        c = yield connect(self.server.number, protocols=["wamp.2.json"], wait_welcome=False)
        self.addCleanup(c.abort)
        c.send([1, "oro", {"roles": {"subscriber": {}}, "authmethods": ["ticket"]}])
        challenge = yield c.next_message()
        self.assertEqual(challenge, [4, "ticket", {}])
        clock.advance(self.server.factory.limits.handshake_timeout + 1)
        _, code, reason = yield c.closed
        self.assertEqual((code, reason), (1000, "no AUTHENTICATE"))
        self.assertEqual(self.server.factory.hub.sessions, {})


class TicketModesTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_tickets_optional_still_challenges(self) -> Any:
        server = start_oro_server(self, lambda c: c.auth.__setitem__("require_ticket", False))
        s = yield wamp2.join(self, server.number, realm="oro", ticket=server.ticket("jane"))
        self.assertEqual((s.welcome_details.authid, s.welcome_details.authmethod), ("jane", "ticket"))
        anonymous = yield wamp2.join(self, server.number, realm="oro")
        self.assertEqual(anonymous.welcome_details.authmethod, "anonymous")

    @defer.inlineCallbacks
    def test_a_server_without_tickets_says_so(self) -> Any:
        server = start_oro_server(self, lambda c: setattr(c, "auth", {}))
        e = yield self.assertFailure(wamp2.join(self, server.number, realm="oro", ticket="x"), ConnectionError)
        self.assertIn("wamp.error.no_auth_method", str(e))


class RpcDetailsTests(unittest.TestCase):
    timeout = 30

    def join(self, user: str = "", serializers: str = "json") -> defer.Deferred:
        return wamp2.join(self, self.server.number, realm="oro", serializers=serializers,
                          path=self.server.path(user))

    def setUp(self) -> None:
        self.server = start_oro_server(self, lambda c: setattr(c.server, "wamp2_registrations", "anyone"))

    @defer.inlineCallbacks
    def test_call_timeout_cancels_and_interrupts(self) -> Any:
        callee = yield self.join()  # a backend may register
        interrupted: defer.Deferred = defer.Deferred()

        def slow() -> defer.Deferred:
            d: defer.Deferred = defer.Deferred(lambda _: interrupted.callback("interrupted"))
            return d

        yield callee.register(slow, "com.example.slow")
        caller = yield self.join("admin", "msgpack")
        e = yield self.assertFailure(caller.call("com.example.slow", options=CallOptions(timeout=100)),
                                     ApplicationError)
        self.assertEqual(e.error, "wamp.error.canceled")
        self.assertEqual((yield interrupted), "interrupted")
        self.assertEqual(self.server.factory.wamp2.dealer.in_flight, 0)

    @defer.inlineCallbacks
    def test_progressive_results(self) -> Any:
        callee = yield self.join(serializers="cbor")

        def counting(n: int, details: Any = None) -> int:
            for i in range(n):
                if details.progress:
                    details.progress(i)
            return n

        yield callee.register(counting, "com.example.count", options=RegisterOptions(details_arg="details"))
        caller = yield self.join("admin")
        seen: list = []
        result = yield caller.call("com.example.count", 3, options=CallOptions(on_progress=seen.append))
        self.assertEqual((seen, result), ([0, 1, 2], 3))
        # A caller that did not ask gets only the final result.
        self.assertEqual((yield caller.call("com.example.count", 2)), 2)

    @defer.inlineCallbacks
    def test_disclose_me_only_for_backends(self) -> Any:
        # Autobahn|Python 26 no longer sends disclose_me: callers speak raw JSON.
        callee = yield self.join("jane")  # a user callee (registrations: anyone here)
        seen: list = []

        def who(details: Any = None) -> str:
            seen.append(details.caller_authid)
            return "ok"

        yield callee.register(who, "com.example.who", options=RegisterOptions(details_arg="details"))
        hello = [1, "oro", {"roles": {"caller": {}}}]
        for user, request in (("admin", 1), ("", 2)):
            c = yield connect(self.server.number, protocols=["wamp.2.json"], path=self.server.path(user),
                              wait_welcome=False)
            self.addCleanup(c.abort)
            c.send(hello)
            self.assertEqual((yield c.next_message())[0], 2)
            c.send([48, request, {"disclose_me": True}, "com.example.who"])
            self.assertEqual((yield c.next_message()), [50, request, {}, ["ok"]])
        self.assertEqual(seen[0], None)  # a user is never shown to a user
        self.assertTrue(seen[1].startswith("anonymous-"))  # a backend that asked
