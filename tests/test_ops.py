"""Operations over real HTTP and real WebSocket traffic: /health, /metrics,
the status feed, reload in place, JSON log lines and the summary line.

The server runs in-process on an OS-chosen port, its admin site on
another (tests/support/admin.py); the clients are the suite's Autobahn
WAMP v1 clients.  The 503 for a database is shown with a PostgreSQL server
the test starts and stops itself.
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from oro_sync.core.metrics import LATENCY_SAMPLE
from oro_sync.ops.logformat import SummaryService, event_as_line, redact
from oro_sync.ops.status import PAGE
from oro_sync.oro.routing import Router, RoutingError, compile_route
from oro_sync.server import build_server
from tests.support.admin import start_admin
from tests.support.client import HandshakeFailed, connect
from tests.support.oro_server import SECRET, start_oro_server
from tests.support.services import postgres_server


class JsonLines:
    """Every log event of the test, as the JSON observer writes it."""

    def __init__(self, testcase: unittest.TestCase):
        self.lines: list[str] = []
        observer = lambda event: self.lines.append(event_as_line(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        testcase.addCleanup(globalLogPublisher.removeObserver, observer)

    def parsed(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]

    def events(self, name: str) -> list[dict]:
        return [e for e in self.parsed() if e.get("event") == name]


@defer.inlineCallbacks
def subscribe(client, uri: str):
    """SUBSCRIBE, then a CALL round trip: once its CALLERROR is back, the
    server has processed the SUBSCRIBE sent before it."""
    client.subscribe(uri)
    call_id = client.call("urn:oro-sync-test:round-trip")
    msg = yield client.next_message()
    assert msg[:2] == [4, call_id], msg


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1)


class HealthTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_health_counts_connections_by_protocol(self):
        server = start_oro_server(self)
        admin = start_admin(self, server.built)
        code, body = yield admin.health_report()
        self.assertEqual(code, 200, body)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["connections"], {"total": 0, "by_protocol": {}})
        self.assertIn("version", body)
        self.assertGreaterEqual(body["uptime"], 0)
        self.assertEqual(body["broker"]["up"], True)
        self.assertEqual(body["users"], {"kind": "YamlUserProvider", "up": True, "detail": "in memory"})
        user = yield server.client(self, "admin")
        yield subscribe(user, "oro/maintenance")
        yield server.client(self)
        code, body = yield admin.health_report()
        self.assertEqual(code, 200, body)
        self.assertEqual(body["connections"], {"total": 2, "by_protocol": {"wamp": 2}})
        self.assertEqual(body["topics"], 1)

    @defer.inlineCallbacks
    def test_503_while_shutting_down(self):
        server = start_oro_server(self)
        admin = start_admin(self, server.built)
        admin.health.begin_shutdown()
        code, body = yield admin.health_report()
        self.assertEqual(code, 503, body)
        self.assertEqual(body["status"], "shutting_down")

    @defer.inlineCallbacks
    def test_503_while_the_user_database_is_down(self):
        pg = postgres_server(self)

        def tweak(config):
            config.auth["users"] = {"url": pg.url()}

        server = start_oro_server(self, tweak)
        provider = server.built.users
        self.addCleanup(provider.close)
        self.assertIn(provider, server.built.dependencies)
        admin = start_admin(self, server.built)
        code, body = yield admin.health_report()
        self.assertEqual(code, 200, body)
        self.assertEqual(body["dependencies"]["user_database"]["up"], True, body)
        pg.stop()
        yield task.deferLater(reactor, 1.1, lambda: None)  # past the reuse of the last answer
        code, body = yield admin.health_report()
        self.assertEqual(code, 503, body)
        self.assertEqual(body["status"], "degraded")
        self.assertEqual(body["dependencies"]["user_database"]["up"], False, body)
        self.assertEqual((body["users"]["kind"], body["users"]["up"]), ("SqlUserProvider", False), body)
        samples = yield admin.metrics()
        self.assertEqual(sample(samples, "oro_sync_dependency_up", dependency="user_database"), 0)
        pg.start()
        yield task.deferLater(reactor, 1.1, lambda: None)
        code, body = yield admin.health_report()
        self.assertEqual(code, 200, body)


class MetricsTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_metrics_move_with_websocket_traffic(self):
        server = start_oro_server(self)
        admin = start_admin(self, server.built)
        before = yield admin.metrics()
        for name in ("oro_sync_messages_received_total", "oro_sync_events_delivered_total",
                     "oro_sync_slow_consumers_closed_total", "oro_sync_handler_errors_total",
                     "oro_sync_ticket_verifications_total", "oro_sync_ticket_cache_hits_total",
                     "oro_sync_digest_queue", "oro_sync_broker_reconnects_total",
                     "oro_sync_broker_publications_dropped_total", "oro_sync_publish_to_send_seconds_count"):
            self.assertEqual(sample(before, name), 0, name)

        user = yield server.client(self, "admin")
        backend = yield server.client(self)
        yield subscribe(user, "oro/maintenance")
        n = LATENCY_SAMPLE * 2
        for i in range(n):
            backend.send([7, "oro/maintenance", {"isOn": True, "n": i}, [], []])
        for i in range(n):
            msg = yield user.next_message()
            self.assertEqual(msg, [8, "oro/maintenance", {"isOn": True, "n": i}])
        with self.assertRaises(HandshakeFailed):
            yield connect(server.number, path="/?ticket=not-a-ticket")

        after = yield admin.metrics()
        self.assertEqual(sample(after, "oro_sync_sessions", protocol="wamp"), 2)
        self.assertEqual(sample(after, "oro_sync_topics"), 1)
        self.assertEqual(sample(after, "oro_sync_subscriptions"), 1)
        self.assertEqual(sample(after, "oro_sync_messages_received_total"), n + 2)
        self.assertEqual(sample(after, "oro_sync_messages_sent_total"), 3)  # 2 WELCOMEs, 1 CALLERROR
        self.assertEqual(sample(after, "oro_sync_events_delivered_total"), n)
        self.assertEqual(sample(after, "oro_sync_handshakes_refused_total", reason="ticket"), 1)
        self.assertEqual(sample(after, "oro_sync_ticket_verifications_total"), 2)
        self.assertGreater(sample(after, "oro_sync_received_bytes_total"), n * 20)
        self.assertGreater(sample(after, "oro_sync_sent_bytes_total"), n * 20)
        # One publication in LATENCY_SAMPLE is timed.
        self.assertEqual(sample(after, "oro_sync_publish_to_send_seconds_count"), n // LATENCY_SAMPLE)
        self.assertEqual(sample(after, "oro_sync_publish_to_send_seconds_bucket", le="+Inf"),
                         n // LATENCY_SAMPLE)
        self.assertGreater(sample(after, "oro_sync_publish_to_send_seconds_sum"), 0)


class StatusFeedTests(unittest.TestCase):
    timeout = 30

    def test_page_loads_nothing_from_elsewhere(self):
        with open(PAGE, encoding="utf-8") as f:
            page = f.read()
        self.assertNotRegex(page, r"""(src|href)\s*=\s*["']?(https?:)?//""")
        self.assertNotRegex(page, r"@import|url\(")
        self.assertIn("EventSource", page)

    def test_a_reader_that_stops_reading_is_dropped(self):
        from twisted.internet import task

        from oro_sync.ops.status import MAX_UNREAD, StatusFeed

        class Transport:  # what Twisted's TCP transport says it holds for the peer
            dataBuffer, offset, _tempDataLen = b"", 0, 0
            aborted = False

            def abortConnection(self):
                self.aborted = True

        class Request:
            def __init__(self):
                self.transport, self.written = Transport(), []

            def write(self, data):
                self.written.append(data)

        feed = StatusFeed(None, None, task.Clock())
        reading, stalled = Request(), Request()
        feed.listeners.extend([reading, stalled])
        stalled.transport._tempDataLen = MAX_UNREAD + 1
        for request in (reading, stalled):
            feed._send(request, b"data: {}\n\n")
        self.assertEqual((len(reading.written), len(stalled.written)), (1, 0))
        self.assertTrue(stalled.transport.aborted)
        self.assertEqual(feed.listeners, [reading])

    def test_embedded_snapshot_cannot_end_or_confuse_the_script(self):
        from oro_sync.ops.status import script_json

        hostile = {"topics": [{"uri": "a/<!--<script>x</script>&", "subscribers": 1}]}
        data = script_json(hostile)
        for text in (b"<", b">", b"&"):
            self.assertNotIn(text, data)
        self.assertEqual(json.loads(data), hostile)

    @defer.inlineCallbacks
    def test_status_page_and_feed_over_http(self):
        server = start_oro_server(self)
        admin = start_admin(self, server.built)
        code, page = yield admin.get("/status")
        self.assertEqual(code, 200)
        self.assertIn("oro-sync status", page)
        user = yield server.client(self, "admin")
        yield subscribe(user, "oro/maintenance")
        snap = yield first_event(admin.url + "/status/events")
        self.assertEqual(snap["connections"], 1)
        self.assertEqual(snap["topics"], [{"uri": "oro/maintenance", "subscribers": 1}])
        self.assertEqual(snap["session_list"][0]["user"], "admin")
        self.assertNotIn("ticket", json.dumps(snap))


@defer.inlineCallbacks
def first_event(url: str):
    """The first server-sent event of ``url``, decoded (the stream is then closed)."""
    from twisted.internet.protocol import Protocol
    from twisted.web.client import Agent

    got: defer.Deferred = defer.Deferred()

    class Reader(Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if b"\n\n" in self.buffer and not got.called:
                got.callback(json.loads(self.buffer.split(b"\n\n")[0][len(b"data: "):]))
                self.transport.stopProducing()

        def connectionLost(self, reason=None) -> None:
            if not got.called:
                got.errback(reason)

    response = yield Agent(reactor).request(b"GET", url.encode())
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    response.deliverBody(Reader())
    snap = yield got.addTimeout(10, reactor)
    return snap


class ReloadInPlaceTests(unittest.TestCase):
    """OroPubSub.replace on a live server: connections stay, a lost route closes."""

    timeout = 30

    @defer.inlineCallbacks
    def test_subscriptions_kept_and_lost_route_closed(self):
        server = start_oro_server(self)
        policy = server.built.policy
        user = yield server.client(self, "admin")
        backend = yield server.client(self)
        yield subscribe(user, "oro/maintenance")
        yield subscribe(user, "oro/data/update")
        backend.send([7, "oro/maintenance", "one", [], []])
        self.assertEqual((yield user.next_message()), [8, "oro/maintenance", "one"])

        keep = [r for r in policy.router.routes if r.channel != "oro/data/update"]
        lines = JsonLines(self)
        closed = policy.replace(Router(keep), dict(policy.handlers))
        self.assertEqual(closed, [("oro/data/update", 1)])
        self.assertNotIn("oro/data/update", server.topics())
        self.assertTrue([e for e in lines.parsed() if "oro/data/update" in e["text"]
                         and "closed" in e["text"]], lines.lines)
        backend.send([7, "oro/data/update", "gone", [], []])
        backend.send([7, "oro/maintenance", "two", [], []])
        self.assertEqual((yield user.next_message()), [8, "oro/maintenance", "two"])
        self.assertEqual(len(server.factory.hub.sessions), 2)

    @defer.inlineCallbacks
    def test_periodic_timers_move_to_the_new_handlers(self):
        from oro_sync.config import load_config
        from oro_sync.oro.services import build_handlers, default_references

        server = start_oro_server(self)
        policy = server.built.policy
        user = yield server.client(self, "admin")
        yield subscribe(user, "oro/ping")
        old_ping = policy.handlers["oro_sync.ping"]
        self.assertEqual(list(old_ping.timers), ["oro/ping"])
        clock = task.Clock()
        config = load_config()
        handlers = build_handlers(config.services, config.parameters,
                                  default_references(clock, server.factory.hub))
        self.assertEqual(policy.replace(policy.router, handlers), [])
        self.assertEqual(old_ping.timers, {})  # the old handler's timer stopped
        self.assertEqual(list(handlers["oro_sync.ping"].timers), ["oro/ping"])
        clock.advance(config.parameters["oro_sync.websocket_ping.interval"])
        self.assertEqual((yield user.next_message()), [8, "oro/ping", "Connection keep alive"])
        self.assertIs(policy.handlers, handlers)

    def test_route_naming_no_handler_changes_nothing(self):
        hub_server = build_server(_config_without_auth())
        policy = hub_server.policy
        before = policy.router
        bad = Router([compile_route("x", {"channel": "a/b", "handler": {"callback": "nobody"}}, "f.yml")])
        self.assertRaises(RoutingError, policy.replace, bad, dict(policy.handlers))
        self.assertIs(policy.router, before)


def _config_without_auth():
    from oro_sync.config import load_config

    config = load_config()
    config.auth = {}
    return config


class LogLineTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_connect_disconnect_refusal_lines_without_tickets(self):
        lines = JsonLines(self)
        server = start_oro_server(self)
        ticket = server.ticket("admin")
        from urllib.parse import quote

        user = yield connect(server.number, path="/?ticket=" + quote(ticket, safe=""))
        session_id = user.session_id
        closed = server.session_closed(session_id)
        yield user.disconnect()
        yield closed
        with self.assertRaises(HandshakeFailed):
            yield connect(server.number, path="/?ticket=" + quote(ticket.replace("=", "A", 1), safe=""))
        with self.assertRaises(HandshakeFailed):
            yield connect(server.number, path="/", headers={"Origin": "http://evil.example"})
        from oro_sync.auth.ticket_signing import issue_ticket

        forged = issue_ticket(SECRET, "ghost\nuser", "some-hash")  # a name meant to split the line
        with self.assertRaises(HandshakeFailed):
            yield connect(server.number, path="/?ticket=" + quote(forged, safe=""))

        connects = lines.events("connect")
        self.assertEqual([(e["session"], e["user"], e["address"], e["protocol"]) for e in connects],
                         [(session_id, "admin", "127.0.0.1", "wamp")], lines.lines)
        disconnects = lines.events("disconnect")
        self.assertEqual([(e["session"], e["user"], e["address"], e["protocol"]) for e in disconnects],
                         [(session_id, "admin", "127.0.0.1", "wamp")], lines.lines)
        self.assertEqual(disconnects[0]["code"], 1000)
        refusals = lines.events("refusal")
        self.assertEqual(len(refusals), 3, lines.lines)
        for e in refusals:
            self.assertEqual(e["address"], "127.0.0.1")
            self.assertTrue(e["session"] and e["user"] and e["protocol"], e)
            self.assertEqual(e["level"], "warn")
        self.assertEqual(sorted(e["reason"] for e in refusals), ["origin", "ticket", "ticket"])
        self.assertEqual(refusals[-1]["user"], "ghost?user")
        self.assertNotIn("\n", refusals[-1]["text"])
        everything = "".join(lines.lines)
        for secret in (ticket, quote(ticket, safe=""), SECRET, ticket.split(",")[0], forged):
            self.assertNotIn(secret, everything)

    def test_redact_hides_ticket_values(self):
        self.assertEqual(redact("GET /?ticket=abc%2Cdef&x=1 HTTP/1.1"), "GET /?ticket=<redacted>&x=1 HTTP/1.1")
        line = json.loads(event_as_line({"log_format": "path {path}", "path": "/ws?ticket=secret",
                                         "log_namespace": "n", "log_time": 0.0}))
        self.assertEqual(line["text"], "path /ws?ticket=<redacted>")
        self.assertEqual(line["path"], "/ws?ticket=<redacted>")

    def test_summary_line(self):
        server = start_oro_server(self)
        clock = task.Clock()
        lines = JsonLines(self)
        summary = SummaryService(server.built, None, 30, clock)
        summary.startService()
        self.addCleanup(summary.stopService)
        self.assertEqual(lines.events("summary"), [])
        server.built.metrics.counters["messages_in"] += 300
        clock.advance(30)
        (line,) = lines.events("summary")
        self.assertEqual(line["rate_in"], 10.0)
        self.assertEqual(line["connections"], 0)
        self.assertGreater(line["memory"], 1024 * 1024)
        self.assertTrue(re.match(r"summary: 0 connections .* 10\.0 msg/s in", line["text"]), line)


if not os.path.exists(PAGE):  # pragma: no cover - a packaging mistake
    raise ImportError(f"status page missing: {PAGE}")
