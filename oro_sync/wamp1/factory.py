"""The WAMP v1 server factory: AutobahnPython 0.8's public API on Autobahn 26.

A factory owns (or shares) a :class:`~oro_sync.core.hub.Hub`, an RPC
registry and a pub/sub policy.  By default the policy is the WAMP v1
reference one (:class:`~oro_sync.wamp1.pubsub.AutobahnPubSub`): register
topics with :meth:`registerForPubSub` and clients can use them.  The Oro
topic layer swaps in its router-driven policy instead.
"""

from __future__ import annotations

import types

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from autobahn.twisted.websocket import WebSocketServerFactory
from oro_sync.logs import Logger

from oro_sync import SERVER_IDENT
from oro_sync.core.hub import Hub
from oro_sync.wamp2.session import SUBPROTOCOL as WAMP2, Wamp2Router
from oro_sync.wamp1.protocol import WampServerProtocol
from oro_sync.wamp1.pubsub import PUBLISH, SUBSCRIBE, AutobahnPubSub, PubSubRegistry
from oro_sync.wamp1.rpc import RpcRegistry

#: Default largest message a client may send (bytes); bigger ones close with 1009.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024


@dataclass
class Limits:
    """What one client may cost the server.  0 disables a limit.

    The defaults are safe for a public server and generous for Oro's use.
    """

    #: Concurrent connections in total / from one client address (HTTP 503 beyond).
    max_connections: int = 0
    max_connections_per_address: int = 0
    #: Subscriptions one connection may hold (more are refused and logged).
    max_subscriptions: int = 1000
    #: PUBLISH messages per second per connection, and the burst allowed.
    publish_rate: float = 0.0
    publish_burst: int = 100
    #: Bytes of events queued for a peer that stopped reading before it is cut off.
    max_output_buffer: int = 4 * 1024 * 1024
    #: WebSocket ping every N seconds; no pong within the timeout drops the peer.
    auto_ping_interval: float = 30.0
    auto_ping_timeout: float = 30.0
    #: Seconds an opening handshake may take before the connection is dropped.
    handshake_timeout: float = 10.0
    #: Opening handshakes in progress before the server stops accepting new
    #: connections (they wait in the kernel's listen queue, costing nothing)
    #: until half of them are done; keeps a reconnect storm from stalling
    #: delivery to the connected clients.
    max_pending_handshakes: int = 64


#: Seconds to wait for the peer's answer to our close frame before dropping
#: TCP; it fires up to one second early (txaio's batched timers), so 2-3 s,
#: inside the default shutdown_timeout of 3 s.
CLOSE_HANDSHAKE_TIMEOUT = 3.0


def _as_class_attr(value: Any) -> Any:
    """A protocol option as a class attribute that reads back unchanged.

    A plain function (``perMessageCompressionAccept`` is a lambda) would
    become a method there and get the protocol as an extra first argument.
    """
    return staticmethod(value) if isinstance(value, types.FunctionType) else value


class WampServerFactory(WebSocketServerFactory):
    """Serves WAMP v1 over WebSocket (subprotocol ``wamp``).

    :param url: the WebSocket URL (``ws://host:port``), as for Autobahn.
    :param hub: share sessions and topics with other front ends.
    :param strictSubprotocol: refuse (HTTP 400) clients that do not offer
        ``wamp``; by default they are served anyway, as GosWebSocketBundle did.
    :param maxMessageSize: the largest client message in bytes (0 = no limit).
    :param wamp2: also serve WAMP v2 clients (subprotocol ``wamp.2.json``).
    :param wamp2Realms: the realms v2 clients may join (default: any).
    :param wamp2Registrations: who may register procedures over WAMP v2:
        ``nobody``, ``backends`` (default), ``users`` or ``everyone``.
    """

    protocol = WampServerProtocol
    _log = Logger()  # not ``log``: that is Autobahn's own (txaio) logger

    def __init__(self, url: str | None = None, hub: Hub | None = None, *,
                 strictSubprotocol: bool = False,
                 maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
                 maxPrefixes: int = 256,
                 serverIdent: str = SERVER_IDENT,
                 limits: Limits | None = None,
                 originPolicy: Any = None,
                 authenticator: Any = None,
                 wamp2: bool = True,
                 wamp2Realms: Any = None,
                 wamp2Registrations: str = "backends",
                 reactor: Any = None, **kwargs: Any):
        super().__init__(url, protocols=["wamp", WAMP2] if wamp2 else ["wamp"], server=serverIdent,
                         reactor=reactor, **kwargs)
        if reactor is None:
            from twisted.internet import reactor
        #: The clock used for rate limits (a task.Clock in tests).
        self.clock = reactor
        self.limits = limits if limits is not None else Limits()
        #: An OriginPolicy (None: any Origin, as a plain WAMP server).
        self.originPolicy = originPolicy
        #: ``authenticate(request, session_id) -> Identity`` (or a Deferred);
        #: raising ConnectionDeny refuses the handshake.  None: anonymous.
        self.authenticator = authenticator
        self.stats: Counter = Counter()
        self._per_address: Counter = Counter()
        self._connections = 0
        #: The listening port, for admission control (set by whoever listens).
        self.listeningPort: Any = None
        self._pending_handshakes = 0
        self._accept_paused = False
        self.hub = hub if hub is not None else Hub(max_subscriptions=self.limits.max_subscriptions,
                                                  clock=reactor)
        #: WebSocket subprotocols served, in the server's order of listing.
        self.subprotocols: tuple[str, ...] = ("wamp", WAMP2) if wamp2 else ("wamp",)
        #: What the WAMP v2 sessions of this factory share (ids, the EVENT encoder).
        self.wamp2 = Wamp2Router(self.hub, frozenset(wamp2Realms) if wamp2Realms else None,
                                 registrations=wamp2Registrations)
        self.rpc = RpcRegistry()
        self.pubsub_registry = PubSubRegistry()
        #: What SUBSCRIBE / UNSUBSCRIBE / PUBLISH do (an IPubSubPolicy).
        self.pubsub: Any = AutobahnPubSub(self.hub, self.pubsub_registry, observer=self)
        self.strictSubprotocol = strictSubprotocol
        self.maxPrefixes = maxPrefixes
        self.serverIdent = serverIdent
        self._session_observers: list[Any] = []
        self.noisy = False
        # Answer bad input with a close frame carrying a code and reason,
        # rather than Autobahn's default of dropping TCP (seen as 1006).
        lim = self.limits
        # allowNullOrigin: let the origin policy (not Autobahn) decide on "null".
        self.setProtocolOptions(failByDrop=False, allowNullOrigin=True,
                                maxMessagePayloadSize=maxMessageSize,
                                maxFramePayloadSize=maxMessageSize,
                                openHandshakeTimeout=lim.handshake_timeout,
                                # txaio's batched timers round ``now + delay``
                                # down to a whole second, so Autobahn's 1 s
                                # default could fire at once: a server-initiated
                                # close then ended in an RST that took the close
                                # frame (and the last events) with it.
                                closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
                                autoPingInterval=lim.auto_ping_interval,
                                autoPingTimeout=lim.auto_ping_timeout)

    def setProtocolOptions(self, **options: Any) -> None:
        super().setProtocolOptions(**options)
        self._share_protocol_options()

    def _share_protocol_options(self) -> None:
        """Put the protocol options on a protocol class of this factory.

        Autobahn copies every option from the factory into each protocol
        instance's ``__dict__`` unless the instance already has it; as class
        attributes they are found there and shared, which saves about 2 KB
        per connection.
        """
        base = getattr(self, "_protocol_base", None)
        if base is None:
            base = self._protocol_base = self.protocol
        attrs = {name: _as_class_attr(getattr(self, name)) for name in base.CONFIG_ATTRS if hasattr(self, name)}
        self.protocol = type(base.__name__, (base,), {"__module__": base.__module__, **attrs})

    # -- connection accounting ---------------------------------------------------

    def connectionCounted(self, host: str, delta: int) -> None:
        """TCP connections come (+1) and go (-1), counted in total and per address."""
        self._connections += delta
        n = self._per_address[host] + delta
        if n > 0:
            self._per_address[host] = n
        else:
            self._per_address.pop(host, None)

    def handshakeStarted(self) -> None:
        self._pending_handshakes += 1
        self._admit()

    def handshakeEnded(self) -> None:
        self._pending_handshakes -= 1
        self._admit()

    def _admit(self) -> None:
        """Admission control on the listening port (see Limits.max_pending_handshakes).

        Twisted accepts up to ``port.numberAccepts`` connections per read, so
        that number is kept to the room left under the limit; at the limit the
        port stops reading until half of the handshakes are done.
        """
        limit = self.limits.max_pending_handshakes
        port = self.listeningPort
        if not limit or port is None:
            return
        pending = self._pending_handshakes
        if hasattr(port, "numberAccepts"):
            port.numberAccepts = max(1, limit - pending)
        if pending >= limit and not self._accept_paused:
            self._accept_paused = True
            self.stats["accept_pauses"] += 1
            port.stopReading()
        elif self._accept_paused and pending <= limit // 2:
            self._accept_paused = False
            if port.connected:
                port.startReading()

    def connectionRefusal(self, host: str) -> str | None:
        """Why a new connection from ``host`` is over a limit, or None."""
        lim = self.limits
        if lim.max_connections and self._connections > lim.max_connections:
            self.stats["refused_max_connections"] += 1
            return f"server is at its limit of {lim.max_connections} connections"
        if lim.max_connections_per_address and self._per_address[host] > lim.max_connections_per_address:
            self.stats["refused_max_connections_per_address"] += 1
            return f"at most {lim.max_connections_per_address} connections per client address"
        return None

    # -- sessions -------------------------------------------------------------

    def addSessionObserver(self, observer: Any) -> None:
        """``observer.sessionOpened(session)`` / ``sessionClosed(session)`` are
        called for every WAMP session (after WELCOME, and on disconnect)."""
        self._session_observers.append(observer)

    def sessionOpened(self, session: Any) -> None:
        self.hub.attach(session)
        for observer in self._session_observers:
            observer.sessionOpened(session)

    def sessionClosed(self, session: Any) -> None:
        try:
            self.pubsub.session_closed(session)
        except Exception:
            self._log.failure("pub/sub cleanup failed for {session}", session=session.session_id)
        self.hub.detach(session)
        for observer in self._session_observers:
            observer.sessionClosed(session)

    def onClientSubscribed(self, session: Any, topicUri: str) -> None:
        """Called after a client subscribed (override to observe)."""

    def onClientUnsubscribed(self, session: Any, topicUri: str) -> None:
        """Called after a client unsubscribed or left (override to observe)."""

    # -- RPC ------------------------------------------------------------------

    def registerForRpc(self, obj: Any, baseUri: str = "", methods: list | None = None) -> list[str]:
        return self.rpc.registerForRpc(obj, baseUri, methods)

    def registerMethodForRpc(self, uri: str, obj: Any, proc: Callable) -> None:
        self.rpc.registerMethodForRpc(uri, obj, proc)

    def registerProcedureForRpc(self, uri: str, proc: Callable) -> None:
        self.rpc.registerProcedureForRpc(uri, proc)

    # -- pub/sub --------------------------------------------------------------

    def registerForPubSub(self, topicUri: str, prefixMatch: bool = False,
                          pubsub: int = PUBLISH | SUBSCRIBE) -> None:
        self.pubsub_registry.registerForPubSub(topicUri, prefixMatch, pubsub)

    def registerHandlerForSub(self, obj: Any, topicUri: str, handler: Callable,
                              prefixMatch: bool = False) -> None:
        self.pubsub_registry.registerHandlerForSub(obj, topicUri, handler, prefixMatch)

    def registerHandlerForPub(self, obj: Any, topicUri: str, handler: Callable,
                              prefixMatch: bool = False) -> None:
        self.pubsub_registry.registerHandlerForPub(obj, topicUri, handler, prefixMatch)

    def registerHandlerForPubSub(self, obj: Any, baseUri: str = "") -> None:
        self.pubsub_registry.registerHandlerForPubSub(obj, baseUri)

    def dispatch(self, topicUri: str, event: Any, exclude: Iterable[Any] = (),
                 eligible: Iterable[Any] | None = None) -> int:
        """Publish a server-side event (Autobahn profile: ``eligible=None`` is
        everyone, an empty list nobody).  ``exclude``/``eligible`` may hold
        session ids or sessions.  Returns the number of local deliveries."""
        ex = frozenset(_sid(x) for x in exclude) if exclude else frozenset()
        el = frozenset(_sid(x) for x in eligible) if eligible is not None else None
        return self.hub.broker.publish(topicUri, event, ex, el)


def _sid(x: Any) -> str:
    return x if isinstance(x, str) else x.session_id
