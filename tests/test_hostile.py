"""Hostile clients (issue 11), each attack over real sockets.

The memory attacks run the server as a child process (``twistd -n
oro-sync`` on the source tree) and read its RSS from /proc; a well-behaved
client on the same server must keep receiving events meanwhile (that it
receives them is asserted here; how fast is the benchmark's business,
``bench/attacks.py``).  The other attacks run against an in-process server,
where the refusal and the server's state can be inspected directly.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import LogLevel
from twisted.trial import unittest
from zope.interface import implementer

from oro_sync.auth.ticket_signing import issue_ticket
from tests.support import wamp2
from tests.support.client import connect, round_trip
from tests.support.hostile import (
    LISTENING, Raw, open_raw, rss_kib, server_config, shipped_secret, shipped_user, text_frames,
    upgrade_request)
from tests.test_plugin import NEW_GROUP_EXEC, SOURCE_TREE, TWISTD, ChildProcess, ProcessTestCase, clean_env
from tests.test_protection import LogCapture, ServerTestCase

MiB = 1024


# -- the server in a child process ---------------------------------------------

class ChildServerTestCase(ProcessTestCase):
    """A child ``twistd -n oro-sync`` (the source tree's) with a well-behaved
    user subscribed to ``oro/maintenance`` and a backend publishing to it."""

    timeout = 120

    @defer.inlineCallbacks
    def start_child(self, **limits: Any) -> Any:
        cfg = server_config(self.workdir, limits)
        args = [TWISTD, "-n", "--pidfile=", "oro-sync", "--config", cfg, "--admin", "none"]
        child = ChildProcess(self.reactor, args)
        env = clean_env()
        env["PYTHONPATH"] = SOURCE_TREE
        wrapped = [sys.executable, "-c", NEW_GROUP_EXEC, *args]
        self.reactor.spawnProcess(child, wrapped[0], wrapped, env=env, path=self.workdir)
        self.addCleanup(self._reap, child)
        match = yield child.wait_for(LISTENING)
        self.child = child
        self.port = int(match.group(1))
        self.pid = child.transport.pid
        self.secret = shipped_secret()
        self.listener = yield self.connect_user("admin", patience=40)
        self.listener.subscribe("oro/maintenance")
        yield self.round_trip(self.listener)
        self.backend = yield self.connect_user("")
        self.sent = 0
        yield self.delivered(3)  # warmed up: every code path used once
        self.baseline = rss_kib(self.pid)

    def ticket_path(self, username: str) -> str:
        if username:
            name, password = shipped_user(username)
            ticket = issue_ticket(self.secret, name, password)
        else:
            ticket = issue_ticket(self.secret)
        return "/?ticket=" + quote(ticket, safe="")

    @defer.inlineCallbacks
    def connect_user(self, username: str, patience: float = 0.0) -> Any:
        """A v1 client; the first one may wait for the digest workers to start."""
        deadline = self.reactor.seconds() + patience
        while True:
            try:
                c = yield connect(self.port, path=self.ticket_path(username), timeout=10)
                break
            except Exception as e:
                if self.reactor.seconds() >= deadline or not self.child.running:
                    self.fail(f"cannot connect: {e!r}{self.child.report()}")
        self.addCleanup(c.abort)
        return c

    def round_trip(self, c: Any) -> Any:
        return round_trip(c, timeout=20)

    @defer.inlineCallbacks
    def delivered(self, n: int) -> Any:
        """The backend publishes ``n`` events, one after the other; the
        well-behaved listener must receive each of them."""
        for _ in range(n):
            self.sent += 1
            event = {"isOn": False, "n": self.sent}
            self.backend.send([7, "oro/maintenance", event, [], []])
            while True:
                try:
                    msg = yield self.listener.next_message(timeout=20)
                except Exception as e:
                    self.fail(f"the well-behaved client got no event: {e!r}{self.child.report()}")
                if msg == [8, "oro/maintenance", event]:
                    break

    def growth_kib(self) -> int:
        return rss_kib(self.pid) - self.baseline

    @defer.inlineCallbacks
    def raw_websocket(self, username: str, source: str = "127.0.0.1") -> Any:
        """A raw socket that completed the upgrade (and got WELCOME)."""
        raw = yield open_raw(self.reactor, self.port, source)
        self.addCleanup(lambda: raw.transport.abortConnection() if not raw.is_lost else None)
        raw.transport.write(upgrade_request(self.ticket_path(username)))
        head = yield raw.response
        self.assertIn(b" 101 ", head, f"{head!r}{self.child.report()}")
        return raw


def pause(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class SubscriptionMemoryTests(ChildServerTestCase):
    """Issue 11.1: 1,000 subscriptions to megabyte topics took ~1 GB."""

    @defer.inlineCallbacks
    def test_huge_topic_uris_close_the_connection_and_memory_stays_put(self):
        yield self.start_child()
        attacker = yield self.connect_user("admin")
        # 200 topics of 100,000 digits each (a placeholder accepted any
        # length): ~20 MB on the wire, several times that once kept.
        for i in range(200):
            attacker.send([5, f"oro/email_event/1/{i}{'1' * 100_000}"])
        was_clean, code, reason = yield attacker.closed
        self.assertEqual(code, 1008, reason)
        self.assertIn("at most 512 characters", reason)
        # Under the URI bound but over the placeholder bound: unrouted, not kept.
        second = yield self.connect_user("admin")
        for i in range(150):
            second.send([5, f"oro/email_event/1/{i}{'1' * 400}"])
        yield self.round_trip(second)
        self.assertTrue(second.is_open)
        yield self.delivered(3)
        self.assertLess(self.growth_kib(), 15 * MiB, self.child.report())


@implementer(IHalfCloseableProtocol)
class Trickler(Raw):
    """Sends an upgrade request that never ends, ``step`` bytes at a time."""

    def __init__(self, step: int, every: float, total: int, first: int = 0):
        super().__init__()
        self.step, self.every, self.left, self.first = step, every, total, first
        self.loop = task.LoopingCall(self.tick)

    def connectionMade(self) -> None:
        self.transport.write(b"GET /?ticket=x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * self.first)
        self.loop.start(self.every)

    def tick(self) -> None:
        if self.left <= 0 or self.is_lost:
            return
        self.left -= self.step
        self.transport.write(b"a" * self.step)

    def readConnectionLost(self) -> None:
        pass  # keep sending after the server's response, as an attacker would

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if self.loop.running:
            self.loop.stop()
        super().connectionLost(reason)


class SlowHeaderTests(ChildServerTestCase):
    """Issue 11.2: upgrade requests whose header never ends (no ticket needed)."""

    @defer.inlineCallbacks
    def test_slow_and_endless_headers_are_cut_and_memory_is_bounded(self):
        yield self.start_child(header_timeout=3, handshake_timeout=10)
        from twisted.internet.protocol import ClientCreator

        def attack(n: int, step: int, every: float, total: int, first: int = 0) -> list:
            out = []
            for _ in range(n):
                out.append(ClientCreator(self.reactor, Trickler, step, every, total, first).connectTCP(
                    "127.0.0.1", self.port, bindAddress=("127.0.0.2", 0), timeout=10))
            return out

        # 150 connections sending 6 KiB, then 1 KiB every 0.1 s (64 KiB in
        # all): HTTP 431 past 8 KiB (well within the 3 s deadline, even on a
        # loaded machine).  150 sending 50 bytes every 0.5 s: dropped after 3 s.
        big = yield defer.gatherResults(attack(150, 1024, 0.1, 64 * 1024, first=6 * 1024))
        slow = yield defer.gatherResults(attack(150, 50, 0.5, 64 * 1024))
        peak = 0
        for _ in range(6):  # the well-behaved client is served during the attack
            yield self.delivered(2)
            peak = max(peak, self.growth_kib())
            yield pause(0.2)
        yield defer.gatherResults([r.lost for r in big + slow])
        statuses = {r.status.split(" ", 2)[1] if r.status else "dropped" for r in big}
        self.assertEqual(statuses, {"431"}, self.child.report())
        self.assertEqual({r.status for r in slow}, {""})  # no response: dropped at the deadline
        yield self.delivered(3)
        self.assertLess(peak, 30 * MiB, self.child.report())
        self.assertLess(self.growth_kib(), 30 * MiB, self.child.report())
        # One log line per reason and client address and 10 s (the attack
        # lasts a few seconds), not one per connection.
        text = self.child.text()
        self.assertLessEqual(text.count("no complete upgrade request"), 2, text[-3000:])
        self.assertLessEqual(text.count("upgrade request over"), 2, text[-3000:])


class SubscribeFloodTests(ChildServerTestCase):
    """Issue 11.3: ~28,000 SUBSCRIBEs/s from one user connection."""

    @defer.inlineCallbacks
    def test_flood_is_slowed_down_logged_once_and_others_keep_their_events(self):
        yield self.start_child()
        raw = yield self.raw_websocket("admin", source="127.0.0.3")
        messages = []
        for i in range(28_000):
            kind = i % 3
            if kind == 0:
                messages.append([5, f"unrouted/topic/{i}"])  # unrouted
            elif kind == 1:
                messages.append([5, f"oro/email_event/2/{i}"])  # another user's: refused
            else:
                messages.append([1, f"p{i % 200}", "oro/"])  # PREFIX
        raw.transport.write(text_frames(messages))
        yield self.delivered(10)
        yield pause(1.0)
        yield self.delivered(5)
        text = self.child.text()
        # One line per reason and client per 10 s (the test takes a few
        # seconds; 2 allows for a slow machine), not ~9,000 of each.
        self.assertIn("messages/s: slowed down", text)
        self.assertLessEqual(text.count("messages/s: slowed down"), 2)
        self.assertLessEqual(text.count("unrouted topic"), 2, text[-3000:])
        self.assertLessEqual(text.count("may not subscribe to"), 2, text[-3000:])
        self.assertLess(self.growth_kib(), 20 * MiB, self.child.report())
        self.assertFalse(raw.is_lost)  # slowed down, not cut off


# -- in-process attacks ----------------------------------------------------------

class RefusedAtAcceptTests(ServerTestCase):
    """Connection limits apply at accept: a socket that sent nothing counts."""

    def limits(self, **kw):
        def tweak(config):
            config.limits.update(kw)
        return tweak

    def counted(self, factory, n: int) -> defer.Deferred:
        """Fires once the factory counts ``n`` connections."""
        d: defer.Deferred = defer.Deferred()
        original = factory.connectionCounted

        def counting(host, delta):
            original(host, delta)
            if factory._connections == n and not d.called:
                d.callback(None)
        factory.connectionCounted = counting
        self.addCleanup(setattr, factory, "connectionCounted", original)
        if factory._connections == n:
            d.callback(None)
        return d

    @defer.inlineCallbacks
    def test_half_open_connections_count_and_the_next_gets_503_at_once(self):
        self.start(self.limits(max_connections_per_address=2))
        factory = self.server.factory
        idle = []
        counted = self.counted(factory, 2)
        for _ in range(2):
            raw = yield open_raw(reactor, self.server.number)
            self.addCleanup(lambda r=raw: r.is_lost or r.transport.abortConnection())
            idle.append(raw)
        yield counted
        extra = yield open_raw(reactor, self.server.number)  # sends nothing at all
        head = yield extra.response
        self.assertTrue(head.startswith(b"HTTP/1.1 503"), head)
        yield extra.lost
        self.assertEqual(factory.metrics.refusals["max_connections_per_address"], 1)
        # Another address is not affected.
        other = yield open_raw(reactor, self.server.number, source="127.0.0.7")
        self.addCleanup(lambda: other.is_lost or other.transport.abortConnection())
        other.transport.write(upgrade_request(self.server.path("admin")))
        head = yield other.response
        self.assertIn(b" 101 ", head)
        other.transport.abortConnection()
        yield other.lost
        for raw in idle:
            raw.transport.abortConnection()
            yield raw.lost

    @defer.inlineCallbacks
    def test_total_limit_at_accept(self):
        self.start(self.limits(max_connections=1))
        factory = self.server.factory
        counted = self.counted(factory, 1)
        idle = yield open_raw(reactor, self.server.number)
        self.addCleanup(lambda: idle.is_lost or idle.transport.abortConnection())
        yield counted
        extra = yield open_raw(reactor, self.server.number, source="127.0.0.5")
        head = yield extra.response
        self.assertTrue(head.startswith(b"HTTP/1.1 503"), head)
        idle.transport.abortConnection()
        yield idle.lost

    @defer.inlineCallbacks
    def test_request_header_over_the_limit_gets_431(self):
        self.start(self.limits(max_request_header=4096))
        raw = yield open_raw(reactor, self.server.number)
        raw.transport.write(upgrade_request(self.server.path("admin"), extra=b"X-Pad: " + b"a" * 5000 + b"\r\n"))
        head = yield raw.response
        self.assertTrue(head.startswith(b"HTTP/1.1 431"), head)
        yield raw.lost
        # A header that never ends is cut at the same size.
        raw = yield open_raw(reactor, self.server.number)
        raw.transport.write(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 5000)
        head = yield raw.response
        self.assertTrue(head.startswith(b"HTTP/1.1 431"), head)
        self.assertEqual(self.server.factory.metrics.refusals["header_too_large"], 2)
        # A normal request still passes.
        c = yield self.client("admin")
        self.assertEqual(c.welcome[0], 0)

    @defer.inlineCallbacks
    def test_header_deadline_shorter_than_the_handshake_timeout(self):
        self.start(self.limits(header_timeout=0.3, handshake_timeout=30))
        raw = yield open_raw(reactor, self.server.number)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... never finished
        yield raw.lost  # well before the 30 s handshake timeout (test timeout: 30 s)
        self.assertEqual(raw.received, b"")
        self.assertEqual(self.server.factory.metrics.refusals["header_timeout"], 1)


class MessageBudgetTests(ServerTestCase):
    """Every kind of client message costs from one budget; a connection out
    of it is not read until the budget refills (nothing is dropped)."""

    @defer.inlineCallbacks
    def test_flood_waits_for_the_budget_and_others_are_served(self):
        def tweak(config):
            config.limits.update(message_rate=50, message_burst=5)
        self.start(tweak)
        flooder = yield self.client("admin")
        other = yield self.client("admin")
        flooder.prefix("p", "urn:")  # PREFIX, SUBSCRIBE, CALL: all from the one budget
        flooder.subscribe("unrouted/one")
        ids = [flooder.call("p:oro-sync-test:n") for _ in range(30)]
        yield self.round_trip(other)  # served while the flooder waits
        answered = []
        for _ in ids:  # every CALL is answered (nothing dropped), in order
            msg = yield flooder.next_message()
            answered.append(msg[1])
        self.assertEqual(answered, ids)
        self.assertGreaterEqual(self.server.factory.metrics["messages_throttled"], 1)
        self.assertTrue(flooder.is_open)

    @defer.inlineCallbacks
    def test_backends_are_exempt(self):
        def tweak(config):
            config.limits.update(message_rate=1, message_burst=1)
        self.start(tweak)
        backend = yield self.client()
        ids = [backend.call("urn:oro-sync-test:n") for _ in range(20)]
        for call_id in ids:
            msg = yield backend.next_message()
            self.assertEqual(msg[1], call_id)
        self.assertEqual(self.server.factory.metrics["messages_throttled"], 0)


class StrictTextTests(ServerTestCase):
    """Issue 11.4: lone surrogates are refused at parse time, never a traceback."""

    def setUp(self):
        self.start()
        self.log = LogCapture(self)

    def assertNothingCritical(self):
        critical = [e for e in self.log.events if e.get("log_level") is LogLevel.critical]
        self.assertEqual(critical, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_v1_call_with_a_lone_surrogate_closes_1007(self):
        for message in ('[2, "\\ud800", "urn:x"]', '[2, "id", "urn:\\udfff"]', '[5, "oro/\\ud800"]'):
            c = yield self.client("admin")
            c.proto.sendMessage(message.encode("ascii"))
            was_clean, code, reason = yield c.closed
            self.assertEqual(code, 1007, message)
            self.assertIn("surrogate", reason)
        self.assertNothingCritical()

    @defer.inlineCallbacks
    def test_backend_publish_with_a_lone_surrogate_is_refused_and_others_still_get_events(self):
        listener = yield self.client("admin")
        listener.subscribe("oro/maintenance")
        yield self.round_trip(listener)
        bad = yield self.client()
        bad.proto.sendMessage(b'[7, "oro/maintenance", {"text": "\\ud800"}, [], []]')
        was_clean, code, reason = yield bad.closed
        self.assertEqual(code, 1007)  # the publisher is told
        backend = yield self.client()
        backend.publish("oro/maintenance", {"text": "\U0001F600 ok"}, [], [])
        msg = yield listener.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", {"text": "\U0001F600 ok"}])
        self.assertNothingCritical()

    @defer.inlineCallbacks
    def test_v2_lone_surrogates_abort_with_protocol_violation(self):
        for message in ('[1, "realm\\ud800", {"roles": {"subscriber": {}}}]',):
            c = yield connect(self.server.number, protocols=["wamp.2.json"],
                              path=self.server.path("admin"), wait_welcome=False)
            self.addCleanup(c.abort)
            c.proto.sendMessage(message.encode("ascii"))
            abort = yield c.next_message()
            self.assertEqual(abort[0], 3)
            self.assertEqual(abort[2], "wamp.error.protocol_violation")
            yield c.closed
        # Established session: SUBSCRIBE and CALL with a surrogate.
        for message in ('[32, 1, {}, "oro.\\ud800"]', '[48, 2, {}, "com.x", ["\\udc00"]]'):
            c = yield connect(self.server.number, protocols=["wamp.2.json"],
                              path=self.server.path("admin"), wait_welcome=False)
            self.addCleanup(c.abort)
            c.send([1, "realm1", {"roles": {"subscriber": {}, "caller": {}}}])
            welcome = yield c.next_message()
            self.assertEqual(welcome[0], 2)
            c.proto.sendMessage(message.encode("ascii"))
            abort = yield c.next_message()
            self.assertEqual((abort[0], abort[2]), (3, "wamp.error.protocol_violation"), message)
            yield c.closed
        self.assertNothingCritical()


class UriBoundTests(ServerTestCase):
    def setUp(self):
        self.start()

    @defer.inlineCallbacks
    def test_v2_long_uris_get_an_error_and_the_session_goes_on(self):
        session = yield wamp2.join(self, self.server.number, path=self.server.path("admin"))
        from autobahn.wamp.exception import ApplicationError
        e = yield self.assertFailure(session.subscribe(lambda *a: None, "oro." + "a" * 600),
                                     ApplicationError)
        self.assertEqual(e.error, "wamp.error.invalid_uri")
        self.assertTrue(session.is_attached())

    @defer.inlineCallbacks
    def test_placeholder_values_are_bounded(self):
        c = yield self.client("admin")
        c.subscribe("oro/email_event/1/" + "1" * 129)  # 129 digits: over the bound
        c.subscribe("oro/email_event/1/" + "1" * 128)
        yield self.round_trip(c)
        session = self.server.factory.hub.sessions[c.session_id]
        self.assertEqual(session.subscriptions, {"oro/email_event/1/" + "1" * 128})

    @defer.inlineCallbacks
    def test_v1_curie_expanded_uri_over_the_bound_closes_1008(self):
        c = yield self.client("admin")
        c.prefix("p", "oro/" + "x" * 500)
        c.subscribe("p:" + "y" * 20)
        was_clean, code, reason = yield c.closed
        self.assertEqual(code, 1008)


class ConstantTimeRefusalTests(ServerTestCase):
    """Issue 11.5: an unknown user costs the same digest as a known one."""

    def setUp(self):
        self.start()

    @defer.inlineCallbacks
    def test_unknown_and_known_users_cost_one_digest_each(self):
        from tests.support.oro_server import SECRET
        verifier = self.server.factory.authenticator.verifier
        before = verifier.computations
        for ticket in (issue_ticket(SECRET, "nobody-here", "whatever"),
                       issue_ticket(SECRET, "admin", "a wrong password hash")):
            reason = yield self.refused(path="/?ticket=" + quote(ticket, safe=""))
            self.assertIn("403", reason)
        self.assertEqual(verifier.computations - before, 2)


class RpcFairnessTests(ServerTestCase):
    """Issue 11.6: callers cannot get a backend callee cut off."""

    def setUp(self):
        self.start()

    @defer.inlineCallbacks
    def test_callers_beyond_the_callee_budget_get_errors_and_the_callee_stays(self):
        from autobahn.wamp.exception import ApplicationError
        callee = yield wamp2.join(self, self.server.number, path=self.server.path())  # a backend
        held: list = []
        yield callee.register(lambda *a: held.append(defer.Deferred()) or held[-1], "com.example.slow")
        caller = yield wamp2.join(self, self.server.number, path=self.server.path("admin"))
        calls = [caller.call("com.example.slow", "x" * 1000) for _ in range(40)]
        failed = yield defer.DeferredList(calls[32:], consumeErrors=True)
        for ok, failure in failed:
            self.assertFalse(ok)
            self.assertEqual(failure.value.error, "oro_sync.error.callee_busy")
        e = yield self.assertFailure(caller.call("com.example.slow", "x" * 70_000), ApplicationError)
        self.assertEqual(e.error, "oro_sync.error.callee_busy")
        for d in held:
            d.callback("done")
        results = yield defer.gatherResults(calls[:32])
        self.assertEqual(results, ["done"] * 32)
        e = yield self.assertFailure(caller.call("com.example.slow", "x" * 70_000), ApplicationError)
        self.assertEqual(e.error, "oro_sync.error.call_too_large")
        self.assertTrue(callee.is_attached())
        self.assertEqual(self.server.factory.metrics["slow_consumers_closed"], 0)


class StrictOriginTests(ServerTestCase):
    """Issue 11.7: the Origin header is parsed strictly."""

    def setUp(self):
        self.start()

    @defer.inlineCallbacks
    def test_userinfo_and_backslash_tricks_are_refused(self):
        for origin in ["http://evil.com\\@localhost", "http://evil.com@localhost",
                       "http://localhost/path", "http://local host", "http://localhost/?x"]:
            raw = yield open_raw(reactor, self.server.number)
            raw.transport.write(upgrade_request(self.server.path("admin"),
                                                extra=f"Origin: {origin}\r\n".encode("latin-1")))
            head = yield raw.response
            self.assertTrue(head.startswith(b"HTTP/1.1 403"), (origin, head))
            yield raw.lost
        # Oro's schemeless backend Origin and ordinary browser Origins still work.
        for origin in ["127.0.0.1", "http://localhost:8080", "https://LOCALHOST"]:
            c = yield self.client("admin", headers={"Origin": origin})
            self.assertEqual(c.welcome[0], 0, origin)

    def test_origin_host(self):
        from oro_sync.auth.origins import origin_host
        cases = {"http://evil.com\\@localhost": "", "http://a@b": "", "http://b/": "b",
                 "https://A.example:8443": "a.example", "127.0.0.1": "127.0.0.1",
                 "http://[::1]:80": "::1", "http://x?y": "", "http://x#y": "", "http://%6c": "",
                 "http://x\ty": "", "http://x:123456": "", "null": "null"}
        for value, host in cases.items():
            self.assertEqual(origin_host(value), host, value)


class TotalBudgetTests(ServerTestCase):
    """One budget for the output and the unparsed input of all connections."""

    @defer.inlineCallbacks
    def test_total_output_budget_cuts_off_the_peers_holding_the_most(self):
        # Each peer alone may hold 64 MiB; together only 1 MiB.
        self.start(lambda c: c.limits.update(max_output_buffer=64 * 2**20,
                                             max_total_output_buffer=2**20))
        good = yield self.client("admin")
        slow = []
        for _ in range(3):
            slow.append((yield self.client("admin")))
        for c in [good] + slow:
            c.subscribe("oro/data/update")
            yield self.round_trip(c)
        factory = self.server.factory
        import socket
        for c in slow:
            c.proto.transport.pauseProducing()  # never read again
            # Small kernel buffers, so that the server's own (Twisted's) hold the rest.
            c.proto.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            server_side = factory.hub.sessions[c.session_id].connection.transport
            server_side.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        event = "e" * 10_000
        sent = 0
        broker = factory.hub.broker
        while factory.metrics["slow_consumers_closed"] < 3 and sent < 3000:
            for _ in range(10):
                broker.publish_event("oro/data/update", [sent, event])
                sent += 1
            for i in range(10):  # the reading subscriber gets everything
                msg = yield good.next_message()
                self.assertEqual(msg[2][0], sent - 10 + i)
            yield pause(0.02)  # the budget is checked at most every 0.1 s
        self.assertEqual(factory.metrics["slow_consumers_closed"], 3, f"after {sent} events")
        # (The slow clients do not read, so they never see the end: aborted at cleanup.)
        self.assertTrue(good.is_open)
        self.assertEqual(factory._lagging, set())

    @defer.inlineCallbacks
    def test_total_input_budget_closes_a_connection_holding_a_large_partial_message(self):
        self.start(lambda c: c.limits.update(max_total_input_buffer=100_000))
        good = yield self.client("admin")
        raw = yield open_raw(reactor, self.server.number)
        raw.transport.write(upgrade_request(self.server.path("admin")))
        yield raw.response
        # A frame announcing 900,000 bytes, of which 200,000 are sent.
        head = bytes((0x81, 0x80 | 127)) + (900_000).to_bytes(8, "big") + b"\x00\x00\x00\x00"
        raw.transport.write(head + b" " * 200_000)
        yield raw.lost
        self.assertIn(b"server input budget exhausted", raw.received)
        self.assertEqual(self.server.factory.metrics["input_budget_closed"], 1)
        self.assertEqual(self.server.factory.inputHeld, 0)
        yield self.round_trip(good)  # the others are fine

    @defer.inlineCallbacks
    def test_total_input_budget_closes_the_largest_holder_not_the_next_sender(self):
        self.start(lambda c: c.limits.update(max_total_input_buffer=300_000))
        head = bytes((0x81, 0x80 | 127)) + (900_000).to_bytes(8, "big") + b"\x00\x00\x00\x00"
        hoarder = yield open_raw(reactor, self.server.number)
        hoarder.transport.write(upgrade_request(self.server.path("admin")))
        yield hoarder.response
        hoarder.transport.write(head + b" " * 200_000)  # then it goes idle
        factory = self.server.factory
        for _ in range(2000):  # until the server holds it (bounded)
            if factory.inputHeld >= 200_000:
                break
            yield task.deferLater(reactor, 0, lambda: None)
        sender = yield open_raw(reactor, self.server.number)
        sender.transport.write(upgrade_request(self.server.path("admin")))
        yield sender.response
        sender.transport.write(head + b" " * 150_000)  # pushes the total over
        yield hoarder.lost
        self.assertIn(b"server input budget exhausted", hoarder.received)
        self.assertFalse(sender.is_lost)
        self.assertEqual(factory.metrics["input_budget_closed"], 1)
        sender.transport.abortConnection()
        yield sender.lost


class RepeatLimiterTests(unittest.TestCase):
    def test_one_line_per_key_and_interval_then_a_count(self):
        from twisted.logger import formatEvent

        from oro_sync.logs import Logger, RepeatLimiter
        lines: list = []
        log = Logger(observer=lambda e: lines.append(formatEvent(e)))
        clock = task.Clock()
        repeats = RepeatLimiter(log, clock, interval=10)
        for i in range(1000):
            repeats.warn(("flood", "s1"), "s1 bad {i}", i=i)
            repeats.warn(("flood", "s2"), "s2 bad {i}", i=i)
        self.assertEqual(lines, ["s1 bad 0", "s2 bad 0"])
        clock.advance(10)
        repeats.info(("other", "s3"), "s3 once")  # any line sweeps the old keys
        self.assertEqual(lines[2:], ["... and 999 more like that (flood/s1) within 10 s",
                                     "... and 999 more like that (flood/s2) within 10 s", "s3 once"])
        self.assertEqual(repeats.suppressed, 1998)
        repeats.warn(("flood", "s1"), "s1 bad {i}", i=1000)
        self.assertEqual(lines[-1], "s1 bad 1000")
        self.assertEqual(len(repeats._repeats), 2)  # s2 was forgotten


class MessageBudgetUnitTests(unittest.TestCase):
    def test_spend_and_wait(self):
        from oro_sync.websocket.limits import MessageBudget
        clock = task.Clock()
        budget = MessageBudget(10, 3, clock)
        self.assertEqual([budget.spend() for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertAlmostEqual(budget.spend(), 0.1)
        clock.advance(0.1)
        self.assertEqual(budget.spend(), 0.0)
        clock.advance(100)
        self.assertEqual([budget.spend() for _ in range(3)], [0.0, 0.0, 0.0])  # burst, not 1000
        self.assertGreater(budget.spend(), 0)
