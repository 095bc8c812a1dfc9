"""Authentication and protection over real sockets: tickets, origins, the PHP
backend's raw handshake, publish rights, limits, keep-alive, slow consumers."""

from __future__ import annotations

import base64
import json
import os
import time
from urllib.parse import quote

from twisted.internet import defer, protocol, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from oro_sync.auth.ticket_signing import issue_ticket
from oro_sync.websocket.limits import Limits
from tests.support.client import HandshakeFailed, connect, round_trip
from tests.support.oro_backend import masked_text_frame  # as the PHP client writes frames
from tests.support.oro_server import SECRET, start_oro_server


def ticket_path(ticket: str) -> str:
    return "/?ticket=" + quote(ticket, safe="")


class LogCapture:
    def __init__(self, testcase: unittest.TestCase):
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self) -> str:
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) for e in self.events)


class ServerTestCase(unittest.TestCase):
    timeout = 30

    def start(self, tweak=None):
        self.server = start_oro_server(self, tweak)
        return self.server

    @defer.inlineCallbacks
    def client(self, user: str = "", **kw):
        c = yield connect(self.server.number, path=self.server.path(user), **kw)
        self.addCleanup(c.abort)
        return c

    @defer.inlineCallbacks
    def refused(self, **kw):
        """Connect expecting the upgrade to be refused; return the reason text."""
        try:
            c = yield connect(self.server.number, **kw)
        except HandshakeFailed as e:
            return e.reason
        c.abort()
        self.fail(f"connection was accepted: {c.welcome}")

    def round_trip(self, c):
        return round_trip(c)


class TicketTests(ServerTestCase):
    def setUp(self):
        self.start()
        self.log = LogCapture(self)

    @defer.inlineCallbacks
    def test_no_ticket_is_refused_with_403(self):
        reason = yield self.refused(path="/")
        self.assertIn("403", reason)
        self.assertIn("no ticket", self.log.text())

    @defer.inlineCallbacks
    def test_bad_tickets_are_refused_and_the_ticket_never_logged(self):
        now = time.time()
        bad = {
            "bad-format": base64.b64encode(b"no separators").decode(),
            "expired": issue_ticket(SECRET, now=now - 301),
            "future": issue_ticket(SECRET, now=now + 120),
            "unknown-user": issue_ticket(SECRET, "nobody", "x"),
            "bad-digest": issue_ticket(SECRET, "admin", "wrong-hash"),
            "disabled": issue_ticket(SECRET, "gone", "hash-of-gone"),
        }
        for name, ticket in bad.items():
            reason = yield self.refused(path=ticket_path(ticket))
            self.assertIn("403", reason, name)
            self.assertNotIn(ticket, self.log.text())
        text = self.log.text()
        for reason in ("bad-format", "expired", "future", "unknown-user", "bad-digest"):
            self.assertIn(f"ticket {reason}", text)
        self.assertEqual(self.server.factory.hub.sessions, {})

    @defer.inlineCallbacks
    def test_user_found_by_email(self):
        ticket = issue_ticket(SECRET, "jane@example.com", "hash-of-jane")
        c = yield connect(self.server.number, path=ticket_path(ticket))
        self.addCleanup(c.abort)
        identity = self.server.factory.hub.sessions[c.session_id].identity
        self.assertEqual((identity.user_id, identity.username, identity.anonymous), (2, "jane", False))


class TicketSettingsTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_ticket_optional_setting(self):
        self.start(lambda c: c.auth.update(require_ticket=False))
        c = yield connect(self.server.number, path="/")
        self.addCleanup(c.abort)
        identity = self.server.factory.hub.sessions[c.session_id].identity
        self.assertTrue(identity.anonymous)
        self.assertFalse(identity.backend)  # no ticket: not the PHP application
        # ... so it may not publish to routed topics.
        listener = yield self.client("admin")
        listener.subscribe("oro/maintenance")
        yield self.round_trip(listener)
        c.publish("oro/maintenance", {"isOn": True}, [], [])
        yield self.round_trip(c)
        seen = yield self.round_trip(listener)
        self.assertEqual(seen, [])

    @defer.inlineCallbacks
    def test_one_time_tickets(self):
        self.start(lambda c: c.auth.update(one_time_tickets=True))
        ticket = self.server.ticket("admin")
        c = yield connect(self.server.number, path=ticket_path(ticket))
        self.addCleanup(c.abort)
        reason = yield self.refused(path=ticket_path(ticket))
        self.assertIn("403", reason)
        fresh = yield self.client("admin")
        self.assertTrue(fresh.is_open)


class OriginTests(ServerTestCase):
    def setUp(self):
        self.start(lambda c: c.origins.update(allowed=["app.example.com"],
                                              application_url="https://oro.example.org/admin"))
        self.log = LogCapture(self)

    @defer.inlineCallbacks
    def test_allowed_hosts_any_scheme_or_port(self):
        for origin in ["http://localhost", "https://localhost:9443", "http://127.0.0.1:8080",
                       "https://app.example.com", "http://oro.example.org:81", "app.example.com"]:
            c = yield self.client("admin", headers={"Origin": origin})
            self.assertEqual(c.welcome[0], 0, origin)

    @defer.inlineCallbacks
    def test_other_hosts_refused_with_403_and_warning(self):
        for origin in ["http://evil.example", "https://app.example.com.evil.example", "null"]:
            reason = yield self.refused(path=self.server.path("admin"), headers={"Origin": origin})
            self.assertIn("403", reason, origin)
        self.assertIn("is not allowed", self.log.text())
        warnings = [e for e in self.log.events if e.get("log_level") and e["log_level"].name == "warn"
                    and "refusing" in (e.get("log_format") or "")]
        # One line for one address refused for its Origin, however the Origin
        # varies (a client must not buy a log line per attempt); the rest are counted.
        self.assertEqual(len(warnings), 1)
        self.assertEqual(self.server.factory.repeats.suppressed, 2)

    @defer.inlineCallbacks
    def test_missing_origin_allowed_by_default(self):
        c = yield self.client("admin")  # the test client sends no Origin
        self.assertTrue(c.is_open)


class StrictOriginTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_missing_origin_refused_when_strict(self):
        self.start(lambda c: c.origins.update(allow_missing=False))
        reason = yield self.refused(path=self.server.path())
        self.assertIn("403", reason)
        c = yield self.client("admin", headers={"Origin": "http://localhost"})
        self.assertTrue(c.is_open)


class RawClient(protocol.Protocol):
    """Bytes in, bytes out: plays Oro's PHP backend client exactly."""

    def __init__(self):
        self.received = b""
        self.got_response = defer.Deferred()
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data
        if b"\r\n\r\n" in self.received and not self.got_response.called:
            self.got_response.callback(self.received)

    def connectionLost(self, reason):
        self.lost.callback(None)


class PhpBackendClientTests(ServerTestCase):
    """The handshake and frames of Oro's PHP backend publisher, byte for byte."""

    @defer.inlineCallbacks
    def test_php_backend_handshake_and_publish(self):
        self.start()
        listener = yield self.client("admin")
        listener.subscribe("oro/maintenance")
        yield self.round_trip(listener)

        raw = RawClient()
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", self.server.number)
        port = self.server.number
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET ws://127.0.0.1:{port}/?ticket={quote(self.server.ticket(), safe='')} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{port}\r\n"
                   "Upgrade: WebSocket\r\n"
                   "Connection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Protocol: wamp\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "Origin: 127.0.0.1\r\n\r\n")
        raw.transport.write(request.encode())
        response = yield raw.got_response
        self.assertTrue(response.startswith(b"HTTP/1.1 101 "), response[:200])
        big = {"isOn": True, "padding": "x" * 70000}  # 64-bit length frame
        for payload in ({"isOn": True, "userId": None}, big):
            raw.transport.write(masked_text_frame(json.dumps([7, "oro/maintenance", payload, [], []]).encode()))
        first = yield listener.next_message()
        second = yield listener.next_message()
        self.assertEqual(first, [8, "oro/maintenance", {"isOn": True, "userId": None}])
        self.assertEqual(second, [8, "oro/maintenance", big])
        raw.transport.abortConnection()  # it drops TCP without a close frame
        yield raw.lost
        self.assertTrue(listener.is_open)


class _SendLog:
    """Stands in for an accepted socket and records each send() (one
    system call, so one read for a client that reads once)."""

    def __init__(self, sock, sends):
        self._sock, self.sends = sock, sends

    def send(self, data):
        n = self._sock.send(data)
        self.sends.append(bytes(data[:n]))
        return n

    def __getattr__(self, name):
        return getattr(self._sock, name)


class OneWriteHandshakeTests(ServerTestCase):
    """Oro >= 5.1's PHP client reads the upgrade response for at most 1 s on
    a non-blocking socket, stops at the first empty read and takes WELCOME
    from that same read: the 101 and WELCOME must leave in one send()."""

    @defer.inlineCallbacks
    def test_101_and_welcome_leave_in_one_send(self):
        self.start()
        factory = self.server.factory
        sends: list = []
        base = factory.protocol

        class Recorded(base):
            def connectionMade(self):
                self.transport.socket = _SendLog(self.transport.socket, sends)
                super().connectionMade()

        factory.protocol = Recorded
        self.addCleanup(setattr, factory, "protocol", base)
        raw = RawClient()
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", self.server.number)
        key = base64.b64encode(os.urandom(16)).decode()
        raw.transport.write((f"GET /ws?ticket={quote(self.server.ticket(), safe='')} HTTP/1.1\r\n"
                             f"Host: 127.0.0.1:{self.server.number}\r\nUpgrade: WebSocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                             "Sec-WebSocket-Protocol: wamp\r\nSec-WebSocket-Version: 13\r\n"
                             "Origin: 127.0.0.1\r\n\r\n").encode())
        yield raw.got_response  # sends[0] is final once the 101 arrived
        first = sends[0]
        self.assertTrue(first.startswith(b"HTTP/1.1 101 "), first[:80])
        self.assertIn(b'\x81', first)  # a text frame follows the headers...
        self.assertIn(b'[0,"', first)  # ...and it is WELCOME, in the same send()
        raw.transport.abortConnection()
        yield raw.lost


class LimitTests(ServerTestCase):
    def limits(self, **kw):
        def tweak(config):
            config.limits.update(kw)
        return tweak

    @defer.inlineCallbacks
    def test_max_subscriptions(self):
        self.start(self.limits(max_subscriptions=2))
        c = yield self.client("admin")
        for uri in ["oro/maintenance", "oro/data/update", "oro/outdated_user_page"]:
            c.subscribe(uri)
        yield self.round_trip(c)
        session = self.server.factory.hub.sessions[c.session_id]
        self.assertEqual(session.subscriptions, {"oro/maintenance", "oro/data/update"})
        self.assertNotIn("oro/outdated_user_page", self.server.topics())

    @defer.inlineCallbacks
    def test_publish_rate(self):
        self.start(self.limits(publish_rate=1, publish_burst=3))
        clock = task.Clock()
        clock.advance(1000)
        self.server.factory.clock = clock
        listener = yield self.client("admin")
        listener.subscribe("oro/maintenance")
        yield self.round_trip(listener)
        backend = yield self.client()
        for i in range(5):
            backend.publish("oro/maintenance", i, [], [])
        yield self.round_trip(backend)
        clock.advance(1)
        backend.publish("oro/maintenance", 5, [], [])
        yield self.round_trip(backend)
        seen = yield self.round_trip(listener)
        self.assertEqual([m[2] for m in seen], [0, 1, 2, 5])
        self.assertEqual(self.server.factory.metrics["publishes_throttled"], 2)

    @defer.inlineCallbacks
    def test_connections_per_address(self):
        self.start(self.limits(max_connections_per_address=2))
        yield self.client("admin")
        yield self.client("admin")
        reason = yield self.refused(path=self.server.path("admin"))
        self.assertIn("503", reason)

    @defer.inlineCallbacks
    def test_connections_in_total(self):
        self.start(self.limits(max_connections=1))
        first = yield self.client("admin")
        reason = yield self.refused(path=self.server.path("admin"))
        self.assertIn("503", reason)
        closed = self.server.session_closed(first.session_id)
        yield first.abort()
        yield closed
        again = yield self.client("admin")  # the slot is free again
        self.assertTrue(again.is_open)

    @defer.inlineCallbacks
    def test_handshake_that_never_completes_times_out(self):
        self.start(self.limits(handshake_timeout=0.2))
        raw = RawClient()
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", self.server.number)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and never finishes
        yield raw.lost  # the server drops it (bounded by the test timeout)
        self.assertEqual(self.server.factory._connections, 0)

    @defer.inlineCallbacks
    def test_pending_handshakes_pause_accepting(self):
        """Past max_pending_handshakes (upgrade requests whose ticket check is
        still running) the port stops accepting; new clients wait in the
        listen queue and are served once those handshakes finish."""
        from oro_sync.identity import Identity

        self.start(self.limits(max_pending_handshakes=2))
        factory = self.server.factory
        factory.listeningPort = self.server.port
        real = factory.authenticator
        stalled: list = []
        two_pending = defer.Deferred()

        class Stalling:
            """Holds the first two ticket checks until the test releases them."""

            verifier = real.verifier

            def authenticate(self, request, session_id):
                if len(stalled) < 2:
                    d = defer.Deferred()
                    stalled.append((d, session_id))
                    if len(stalled) == 2:
                        reactor.callLater(0, two_pending.callback, None)
                    return d
                return real.authenticate(request, session_id)

        factory.authenticator = Stalling()
        first = [connect(self.server.number, path=self.server.path("admin"), timeout=20)
                 for _ in range(2)]
        yield two_pending
        self.assertEqual(factory._pending_handshakes, 2)
        self.assertTrue(factory._accept_paused)
        self.assertEqual(factory.metrics["accept_pauses"], 1)
        waiting = connect(self.server.number, path=self.server.path("admin"), timeout=20)
        for d, session_id in stalled:
            d.callback(Identity.anonymous_for(session_id))
        clients = yield defer.gatherResults(first + [waiting])
        for c in clients:
            self.addCleanup(c.abort)
            self.assertEqual(c.welcome[0], 0)
        self.assertFalse(factory._accept_paused)
        self.assertEqual(factory._pending_handshakes, 0)

    @defer.inlineCallbacks
    def test_idle_sockets_do_not_count_as_pending_handshakes(self):
        self.start(self.limits(max_pending_handshakes=2))
        factory = self.server.factory
        factory.listeningPort = self.server.port
        idle = []
        for _ in range(3):  # connect and never send a request
            raw = RawClient()
            yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", self.server.number)
            idle.append(raw)
        c = yield self.client("admin")  # still served at once
        self.assertEqual(c.welcome[0], 0)
        self.assertFalse(factory._accept_paused)
        for raw in idle:
            raw.transport.abortConnection()
            yield raw.lost

    @defer.inlineCallbacks
    def test_keepalive_drops_dead_peers(self):
        # Autobahn batches its timers in 0.2 s buckets: keep well above that.
        self.start(self.limits(auto_ping_interval=1, auto_ping_timeout=1))
        alive = yield self.client("admin")
        dead = yield self.client("admin")
        # Only a peer known to answer pings is closed for not answering
        # (tests/test_oro_keepalive.py): let it answer one first.
        conn = self.server.factory.hub.sessions[dead.session_id].connection
        from tests.test_oro_keepalive import first_pong
        yield first_pong(conn)
        closed = self.server.session_closed(dead.session_id)
        dead.proto.transport.pauseProducing()  # stops reading: answers no more pings
        yield closed
        self.assertTrue(alive.is_open)
        yield self.round_trip(alive)  # and still served


class SlowConsumerTests(ServerTestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_slow_consumer_is_cut_off_memory_bounded(self):
        limit = 256 * 1024
        self.start(lambda c: c.limits.update(max_output_buffer=limit, max_call_size=4096))
        good = yield self.client("admin")
        slow = yield self.client("admin")
        for c in (good, slow):
            c.subscribe("oro/data/update")
            yield self.round_trip(c)
        slow_session = self.server.factory.hub.sessions[slow.session_id]
        closed = self.server.session_closed(slow.session_id)
        slow.proto.transport.pauseProducing()  # never reads again

        event = "e" * 10_000
        batch, sent, peak = 10, 0, 0
        broker = self.server.factory.hub.broker
        while not closed.called and sent < 5000:
            for _ in range(batch):
                broker.publish_event("oro/data/update", [sent, event])
                sent += 1
            t = slow_session.connection.transport
            if t is not None and not closed.called:
                peak = max(peak, len(t.dataBuffer) - t.offset + t._tempDataLen)
            # The reading subscriber gets every event of the batch.
            for _ in range(batch):
                msg = yield good.next_message()
                self.assertEqual(msg[2][0], sent - batch + _)
        yield closed
        self.assertEqual(self.server.factory.metrics["slow_consumers_closed"], 1)
        # What the server held for the slow peer never exceeded the limit by
        # more than the transport's own buffer and one batch.
        self.assertLess(peak, limit + 64 * 1024 + batch * 10_100)
        self.assertTrue(good.is_open)
        more = sent
        broker.publish_event("oro/data/update", [more, "after"])
        msg = yield good.next_message()
        self.assertEqual(msg, [8, "oro/data/update", [more, "after"]])


class WampFactoryLimitsDefaultsTests(unittest.TestCase):
    def test_safe_defaults(self):
        limits = Limits()
        self.assertGreater(limits.max_output_buffer, 0)
        self.assertGreater(limits.auto_ping_interval, 0)
        self.assertGreater(limits.handshake_timeout, 0)
        self.assertGreater(limits.max_subscriptions, 0)

    def test_rpc_fairness_must_fit_the_output_buffer(self):
        from oro_sync.config import ConfigError, build_limits

        # The shipped defaults hold (32 x 64 KiB under 4 MiB) ...
        build_limits({})
        # ... a smaller output buffer without smaller calls is refused ...
        with self.assertRaises(ConfigError) as caught:
            build_limits({"max_output_buffer": 256 * 1024})
        self.assertIn("max_callee_invocations x limits.max_call_size", str(caught.exception))
        # ... and a 0 bound turns the protection off knowingly.
        build_limits({"max_output_buffer": 256 * 1024, "max_call_size": 0})


class OriginUnitTests(unittest.TestCase):
    """Host extraction and the handshake rewrite, without sockets."""

    def test_host_of_as_oro(self):
        from oro_sync.auth.origins import host_of
        cases = {"example": "example", "http://example.com/p": "example.com",
                 "//www.example.com": "www.example.com", " https://A.example:8443 ": "a.example",
                 "127.0.0.1": "127.0.0.1", "": "", "http://": ""}
        for value, host in cases.items():
            self.assertEqual(host_of(value), host, value)

    def test_policy(self):
        from oro_sync.auth.origins import OriginPolicy
        policy = OriginPolicy(["https://app.example.com:444/x"], "http://oro.local")
        self.assertEqual(policy.hosts, {"localhost", "127.0.0.1", "app.example.com", "oro.local"})
        self.assertIsNone(policy.check("http://oro.local:8080"))
        self.assertIsNone(policy.check(None))
        self.assertIsNotNone(policy.check("http://evil"))
        self.assertIsNotNone(OriginPolicy(allow_missing=False).check(None))

    def test_schemeless_origin_rewrite(self):
        from oro_sync.auth.origins import fix_schemeless_origin
        head = b"GET / HTTP/1.1\r\nOrigin: 127.0.0.1\r\nHost: x\r\nX-Origin: keep"
        self.assertEqual(fix_schemeless_origin(head),
                         b"GET / HTTP/1.1\r\nOrigin: http://127.0.0.1\r\nHost: x\r\nX-Origin: keep")
        for untouched in [b"Origin: https://a.b", b"Origin: null", b"Origin: "]:
            self.assertEqual(fix_schemeless_origin(untouched), untouched)


class AdmissionUnitTests(unittest.TestCase):
    """Admission control against a stand-in port: the number of connections
    Twisted may accept per read never exceeds the room under the limit."""

    class Port:
        connected = True
        numberAccepts = 100

        def __init__(self):
            self.reading = True

        def stopReading(self):
            self.reading = False

        def startReading(self):
            self.reading = True

    def test_accepts_capped_and_paused(self):
        from oro_sync.websocket.factory import WampServerFactory
        factory = WampServerFactory(limits=Limits(max_pending_handshakes=4))
        port = factory.listeningPort = self.Port()
        seen = []
        for _ in range(4):
            factory.handshakeStarted()
            seen.append((port.numberAccepts, port.reading))
        self.assertEqual(seen, [(3, True), (2, True), (1, True), (1, False)])
        factory.handshakeEnded()
        self.assertFalse(port.reading)  # 3 pending: above half the limit
        factory.handshakeEnded()
        self.assertTrue(port.reading)   # 2 pending: room again
        self.assertEqual(port.numberAccepts, 2)


class ReviewRegressionTests(ServerTestCase):
    """Races and resource bounds found in review, pinned."""

    @defer.inlineCallbacks
    def test_client_gone_before_ticket_check_finishes_opens_no_session(self):
        from oro_sync.identity import Identity

        self.start()
        factory = self.server.factory
        real = factory.authenticator
        held = defer.Deferred()
        got_request = defer.Deferred()

        class Holding:
            verifier = real.verifier

            def authenticate(self, request, session_id):
                got_request.callback(session_id)
                return held

        factory.authenticator = Holding()
        raw = RawClient()
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", self.server.number)
        key = base64.b64encode(os.urandom(16)).decode()
        raw.transport.write((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                             "Sec-WebSocket-Protocol: wamp\r\n\r\n").encode())
        session_id = yield got_request
        raw.transport.abortConnection()
        yield raw.lost
        yield self.round_trip((yield self.client_with(real)))  # the server noticed the loss
        held.callback(Identity.anonymous_for(session_id))
        self.assertNotIn(session_id, factory.hub.sessions)
        self.assertEqual(factory._pending_handshakes, 0)

    @defer.inlineCallbacks
    def client_with(self, authenticator):
        self.server.factory.authenticator = authenticator
        return (yield self.client("admin"))

    @defer.inlineCallbacks
    def test_messages_after_the_server_close_frame_are_ignored(self):
        self.start()
        c = yield self.client("admin")
        session = self.server.factory.hub.sessions[c.session_id]
        session.close(4000, "bye")
        c.subscribe("oro/maintenance")  # already in flight when the close arrives
        yield c.closed
        self.assertEqual(self.server.topics(), {})
        self.assertEqual(self.server.factory.hub.sessions, {})

    @defer.inlineCallbacks
    def test_oversized_prefix_closes_1008(self):
        self.start()
        c = yield self.client("admin")
        c.prefix("p", "http://example.com/" + "x" * 5000)
        was_clean, code, reason = yield c.closed
        self.assertEqual(code, 1008)
        self.assertIn("PREFIX", reason)


class RouterBoundsTests(unittest.TestCase):
    def test_huge_uris_are_not_cached(self):
        from oro_sync.oro.routing import Router, compile_route
        # (No placeholder bound here: the cache is what is tested.)
        router = Router([compile_route("r", {"channel": "a/{n}", "handler": {"callback": "h"},
                                             "requirements": {"n": {"pattern": r"\d+"}}})],
                        max_placeholder_length=0)
        self.assertIsNotNone(router.match("a/" + "1" * 100_000))
        self.assertEqual(router._cache, {})
        router.match("a/1")
        self.assertEqual(list(router._cache), ["a/1"])

    def test_digits_are_ascii_digits(self):
        from oro_sync.oro.routing import Router, compile_route
        router = Router([compile_route("r", {"channel": "a/{n}", "handler": {"callback": "h"},
                                             "requirements": {"n": {"pattern": r"\d+"}}})])
        self.assertIsNone(router.match("a/\u0661\u0662"))  # Arabic-Indic digits
        self.assertIsNotNone(router.match("a/12"))
