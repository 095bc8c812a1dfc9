"""A real WAMP v2 client for tests: Autobahn|Python's ApplicationSession.

``join(port)`` opens a WebSocket, joins a realm and fires with the session;
``events(session, topic)`` subscribes and gives a queue of what arrives.
Every session is left (GOODBYE) or dropped by the test's cleanup.
"""

from __future__ import annotations

from typing import Any

import txaio
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory, WampWebSocketClientProtocol
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig, SubscribeOptions
from twisted.internet import defer, reactor

txaio.use_twisted()  # Autobahn's serializers keep txaio time stats

DEFAULT_TIMEOUT = 10.0


class Session(ApplicationSession):
    """An ApplicationSession that reports joining and disconnecting."""

    joined: defer.Deferred
    gone: defer.Deferred
    #: WAMP-Ticket: the ticket given in onChallenge (None: no authmethods).
    ticket: str | None = None
    authid: str | None = None

    def onConnect(self) -> None:
        if self.ticket is None:
            super().onConnect()
        else:
            self.join(self.config.realm, authmethods=["ticket"], authid=self.authid)

    def onChallenge(self, challenge: Any) -> str:
        self.challenge = challenge
        assert challenge.method == "ticket", challenge.method
        return self.ticket

    def onJoin(self, details: Any) -> None:
        self.welcome_details = details
        if not self.joined.called:
            self.joined.callback(self)

    def onLeave(self, details: Any) -> None:
        self.leave_details = details
        super().onLeave(details)

    def onDisconnect(self) -> None:
        if not self.joined.called:
            reason = getattr(getattr(self, "leave_details", None), "reason", None)
            self.joined.errback(ConnectionError(f"disconnected before joining: {reason}"))
        if not self.gone.called:
            self.gone.callback(None)


class EventQueue:
    """Events of one subscription, in order: (args, kwargs, details)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self._waiters: list[defer.Deferred] = []

    def __call__(self, *args: Any, details: Any = None, **kwargs: Any) -> None:
        item = (list(args), kwargs, details)
        if self._waiters:
            self._waiters.pop(0).callback(item)
        else:
            self.items.append(item)

    def next(self, timeout: float = DEFAULT_TIMEOUT) -> defer.Deferred:
        if self.items:
            return defer.succeed(self.items.pop(0))
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d.addTimeout(timeout, reactor)


SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}


def join(testcase: Any, port: int, realm: str = "realm1", path: str = "/",
         serializers: str = "json", timeout: float = DEFAULT_TIMEOUT,
         ticket: str | None = None, authid: str | None = None) -> defer.Deferred:
    """Connect and join; fires with a :class:`Session` (cleaned up with the test).

    ``serializers="json"`` (or ``"msgpack"``, ``"cbor"``) offers that one
    only; ``"default"`` offers what Autobahn offers by default (every
    serializer it has installed).  ``ticket``: authenticate with WAMP-Ticket
    (HELLO authmethods ["ticket"], the ticket given in onChallenge)."""
    joined: defer.Deferred = defer.Deferred()
    gone: defer.Deferred = defer.Deferred()
    sessions: list[Session] = []

    def make() -> Session:
        session = Session(ComponentConfig(realm))
        session.joined, session.gone = joined, gone
        session.ticket, session.authid = ticket, authid
        sessions.append(session)
        return session

    class Protocol(WampWebSocketClientProtocol):
        # A refused handshake never creates a session (so no onDisconnect):
        # report the lost connection from here too.
        def connectionLost(self, reason: Any) -> None:
            super().connectionLost(reason)
            if not joined.called:
                joined.errback(ConnectionError(f"connection lost before joining: {reason.value}"))
            if not gone.called:
                gone.callback(None)

    factory = WampWebSocketClientFactory(
        make, url=f"ws://127.0.0.1:{port}{path}",
        serializers=None if serializers == "default" else [SERIALIZERS[serializers]()])
    factory.protocol = Protocol
    connector = reactor.connectTCP("127.0.0.1", port, factory, timeout=timeout)

    @defer.inlineCallbacks
    def cleanup() -> Any:
        for session in sessions:
            if session.is_attached():
                try:
                    yield session.leave()
                except Exception:
                    pass
        if not gone.called:
            connector.disconnect()
            transport = getattr(connector, "transport", None)
            if transport is not None:
                transport.abortConnection()
            yield gone

    testcase.addCleanup(cleanup)
    return joined.addTimeout(timeout, reactor)


@defer.inlineCallbacks
def events(session: Session, topic: str) -> Any:
    """Subscribe ``session`` to ``topic``; return (EventQueue, Subscription)."""
    queue = EventQueue()
    subscription = yield session.subscribe(queue, topic, options=SubscribeOptions(details=True))
    return queue, subscription
