"""Oro >= 5.1's long-lived backend client: idle far past the ping timeout,
it must still be able to publish (plain and TLS); dead peers are still found."""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.trial import unittest

from oro_sync.websocket.keepalive import socket_of
from tests.support.client import connect
from tests.support.oro_backend import connect_backend
from tests.support.oro_server import start_oro_server
from tests.test_tls import self_signed

# Short enough for a test; Autobahn's timers round to whole seconds.
INTERVAL = TIMEOUT = 1


def short_keepalive(config) -> None:
    config.limits.update(auto_ping_interval=INTERVAL, auto_ping_timeout=TIMEOUT,
                         tcp_keepalive_idle=7, tcp_keepalive_interval=3, tcp_keepalive_count=4)


def ping_timeouts(connection, at_least: int, after: float) -> defer.Deferred:
    """Fires once the server's ping timeout has fired ``at_least`` times on
    ``connection`` and ``after`` seconds have passed (the real handler runs)."""
    d: defer.Deferred = defer.Deferred()
    start = reactor.seconds()
    seen = [0]
    real = connection.onAutoPingTimeout

    def observed() -> None:
        real()
        seen[0] += 1
        if not d.called and seen[0] >= at_least and reactor.seconds() - start > after:
            d.callback(seen[0])

    def closed(*args) -> None:
        real_close(*args)
        if not d.called:
            d.errback(AssertionError(f"closed after {seen[0]} ping timeout(s)"))

    real_close = connection.onClose
    connection.onAutoPingTimeout = observed
    connection.onClose = closed
    return d


def first_pong(connection) -> defer.Deferred:
    """Fires when ``connection`` received its first answer to a ping."""
    d: defer.Deferred = defer.Deferred()
    real = connection.onAutoPong

    def observed(*args) -> None:
        real(*args)
        if not d.called:
            d.callback(None)

    connection.onAutoPong = observed
    return d


class BackendClientKeepAliveTests(unittest.TestCase):
    timeout = 40

    def setUp(self):
        self.server = start_oro_server(self, short_keepalive)

    @defer.inlineCallbacks
    def listen(self, tls: bool):
        """(port number, client TLS options or None) of a listener for the server."""
        if not tls:
            return self.server.number, None
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert, pem = self_signed(directory)
        endpoint = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port = yield endpoint.listen(self.server.factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port, ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(pem))

    @defer.inlineCallbacks
    def idle_then_publish(self, tls: bool):
        number, options = yield self.listen(tls)
        subscriber = yield connect(number, path="/ws" + self.server.path("admin")[1:],
                                   tls=options)
        self.addCleanup(subscriber.abort)
        subscriber.subscribe("oro/maintenance")
        call_id = subscriber.call("urn:round-trip")
        self.assertEqual((yield subscriber.next_message(timeout=10))[:2], [4, call_id])

        backend, welcome = yield connect_backend(number, self.server.ticket(), tls=options)
        self.addCleanup(backend.transport.abortConnection)
        self.assertEqual(welcome[0], 0)
        self.assertEqual(backend.reads, 1)  # 101 and WELCOME in its one read
        conn = self.server.factory.hub.sessions[welcome[1]].connection
        # Idle: pings go unanswered for longer than interval + timeout, twice over.
        yield ping_timeouts(conn, at_least=2, after=INTERVAL + TIMEOUT)
        self.assertFalse(conn.answers_pings)
        self.assertIn(welcome[1], self.server.factory.hub.sessions)  # still connected

        backend.publish("oro/maintenance", {"isOn": True, "userId": None})
        event = yield subscriber.next_message(timeout=10)
        self.assertEqual(event, [8, "oro/maintenance", {"isOn": True, "userId": None}])
        self.assertTrue(subscriber.is_open)
        self.assertEqual(backend.reads, 1)  # it never read again
        self.assertEqual(self.server.factory.metrics["ping_timeouts_closed"], 0)

        # TCP keep-alive is on for the accepted socket, as configured.
        sock = socket_of(conn.transport)
        self.assertIsNotNone(sock)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 7)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 3)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 4)

    def test_idle_backend_client_still_publishes(self):
        return self.idle_then_publish(tls=False)

    def test_idle_backend_client_still_publishes_over_tls(self):
        return self.idle_then_publish(tls=True)

    @defer.inlineCallbacks
    def test_peer_that_answered_pings_is_closed_when_it_stops(self):
        """A browser-like peer answers pings; once it stops, the timeout closes it."""
        alive = yield connect(self.server.number, path=self.server.path("admin"))
        self.addCleanup(alive.abort)
        dead = yield connect(self.server.number, path=self.server.path("admin"))
        self.addCleanup(dead.abort)
        conn = self.server.factory.hub.sessions[dead.session_id].connection
        yield first_pong(conn)
        self.assertTrue(conn.answers_pings)
        closed = self.server.session_closed(dead.session_id)
        dead.proto.transport.pauseProducing()  # stops reading: no more pongs
        yield closed
        self.assertEqual(self.server.factory.metrics["ping_timeouts_closed"], 1)
        self.assertTrue(alive.is_open)


class TcpKeepAliveSettingTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_off_when_idle_is_zero(self):
        server = start_oro_server(self, lambda c: c.limits.update(tcp_keepalive_idle=0))
        client = yield connect(server.number, path=server.path("admin"))
        self.addCleanup(client.abort)
        sock = socket_of(server.factory.hub.sessions[client.session_id].connection.transport)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0)

    @defer.inlineCallbacks
    def test_on_by_default(self):
        server = start_oro_server(self)
        client = yield connect(server.number, path=server.path("admin"))
        self.addCleanup(client.abort)
        sock = socket_of(server.factory.hub.sessions[client.session_id].connection.transport)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 60)
