"""Upgrade requests that misuse the handshake must not cost the server its
ability to accept connections (a regression found by review)."""

from __future__ import annotations

from typing import Any

from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, reactor, task

from tests.support.hostile import open_raw, upgrade_request
from tests.test_wamp1_server import ServerTestCase


class HeldTicketCheck:
    """A handshake gate whose ticket checks answer when the test says so:
    the window in which more bytes arrive before the 101."""

    def __init__(self) -> None:
        self.calls: list[defer.Deferred] = []
        self.called: defer.Deferred = defer.Deferred()

    def authenticate(self, request: Any, session_id: str, in_band: bool = False) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append(d)
        if not self.called.called:
            self.called.callback(None)
        return d


class SecondRequestHeadTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_bytes_before_the_101_are_not_parsed_as_another_request(self) -> Any:
        # A second request head sent while the first one's ticket is being
        # checked used to run onConnect again: a second pending handshake
        # that nothing ended, until accept() paused for good.
        gate = HeldTicketCheck()
        factory = self.make_factory(authenticator=gate)
        raw = yield open_raw(reactor, factory.port)
        raw.transport.write(upgrade_request("/?ticket=x") + upgrade_request("/?ticket=x"))
        yield gate.called
        raw.transport.write(b"x")
        conn = factory.connections[0]
        for _ in range(1000):  # until the server has read the byte (or parsed a second head)
            if len(gate.calls) > 1 or conn.data.endswith(b"x"):
                break
            yield task.deferLater(reactor, 0, lambda: None)
        self.assertEqual(len(gate.calls), 1)
        self.assertEqual(factory._pending_handshakes, 1)
        gate.calls[0].errback(ConnectionDeny(ConnectionDeny.FORBIDDEN, "bad ticket"))
        yield raw.lost
        yield conn.gone
        self.assertEqual(factory._pending_handshakes, 0)
        self.assertEqual(raw.received.count(b"HTTP/1.1 "), 1, raw.received)
