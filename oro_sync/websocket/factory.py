"""The WebSocket server factory: WAMP v1 and v2 on one port, one hub.

:class:`WampServerFactory` is built by the composition root
(:mod:`oro_sync.server`) from finished parts: the hub, the pub/sub policy,
the server's procedures, the handshake gate and the metrics, all passed to
its constructor.  It keeps what concerns connections as a whole: counting
(in total and per address), admission control on the listening port, and
which WAMP session class serves which subprotocol.  It also offers
AutobahnPython 0.8's server API (``registerForRpc``, ``registerForPubSub``,
``dispatch``...) for programs that use oro-sync as a library.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import IReactorCore

from oro_sync import SERVER_IDENT
from oro_sync.core.hub import Hub
from oro_sync.core.metrics import Metrics
from oro_sync.core.presence import ObservedPolicy
from oro_sync.logs import Logger, RepeatLimiter
from oro_sync.wamp.contract import SessionServices
from oro_sync.wamp.rpc import RpcRegistry
from oro_sync.wamp1.pubsub import PUBLISH, SUBSCRIBE, AutobahnPubSub, PubSubRegistry
from oro_sync.wamp1.session import Wamp1Session
from oro_sync.wamp2.router import Wamp2Router
from oro_sync.wamp2.serializers import SERIALIZERS
from oro_sync.wamp2.session import Wamp2Session
from oro_sync.websocket.connection import WampConnection
from oro_sync.websocket.handshake_slices import ACCEPTS_PER_TURN, HandshakeSlices
from oro_sync.websocket.kernel_write import KernelWriter, buffered_bytes
from oro_sync.websocket.limits import Limits
from oro_sync.websocket.tuning import (
    CLOSE_HANDSHAKE_TIMEOUT, protocol_with_options, skip_pformat_unless_debug)

#: Default largest message a client may send (bytes); bigger ones close with 1009.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
WAMP1 = "wamp"


def _backends_only(identity: Any) -> bool:
    return bool(getattr(identity, "backend", False))


def _anyone(identity: Any) -> bool:
    return True


class WampServerFactory(WebSocketServerFactory):
    """Serves WAMP v1 (``wamp``) and WAMP v2 (``wamp.2.json``, ``wamp.2.msgpack``,
    ``wamp.2.cbor``) on one port.

    :param url: the WebSocket URL (``ws://host:port``), as for Autobahn.
    :param hub: the node's hub (a new one by default).
    :param policy: the IPubSubPolicy; by default the WAMP v1 reference rules
        (:class:`AutobahnPubSub`): topics registered with
        :meth:`registerForPubSub` can be used.
    :param pubsubRegistry: the topics :meth:`registerForPubSub` registers
        (give the one your own policy reads).
    :param metrics: where counters go (a new :class:`Metrics` by default).
    :param strictSubprotocol: refuse (HTTP 400) clients that offer no
        subprotocol; by default they get WAMP v1, as GosWebSocketBundle did.
    :param maxMessageSize: the largest client message in bytes (0 = no limit).
    :param wamp2: also serve WAMP v2 clients.
    :param wamp2Realms: the realms v2 clients may join (default: any).
    :param mayRegister: ``may_register(identity) -> bool``: who may register
        procedures over WAMP v2 (default: backends).
    :param mayUseMeta: ``may_use_meta(identity) -> bool``: who may use the
        WAMP session meta API (default: backends when there is an
        authenticator, anyone when there is none).
    :param originPolicy: an OriginPolicy (None: any Origin).
    :param authenticator: ``authenticate(request, session_id) -> Identity``
        (or a Deferred); raising ConnectionDeny refuses the handshake.  One
        that also has ``verify_in_band(ticket, session_id)`` (a Deferred of
        the Identity, or of the refusal reason) offers WAMP-Ticket to v2
        sessions: its ``authenticate`` is then called with ``in_band=True``
        for them and returns None to let a v2 client without a URL ticket
        through, to authenticate in HELLO.
    """

    protocol = WampConnection
    _log = Logger()  # not ``log``: that is Autobahn's own (txaio) logger

    def __init__(self, url: str | None = None, hub: Hub | None = None, *,
                 policy: Any = None, pubsubRegistry: PubSubRegistry | None = None,
                 metrics: Metrics | None = None,
                 strictSubprotocol: bool = False,
                 maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
                 maxPrefixes: int = 256,
                 serverIdent: str = SERVER_IDENT,
                 limits: Limits | None = None,
                 originPolicy: Any = None,
                 authenticator: Any = None,
                 wamp2: bool = True,
                 wamp2Realms: Any = None,
                 mayRegister: Callable[[Any], bool] = _backends_only,
                 mayUseMeta: Callable[[Any], bool] | None = None,
                 reactor: Any = None, **kwargs: Any):
        skip_pformat_unless_debug()
        subprotocols = [WAMP1, *SERIALIZERS] if wamp2 else [WAMP1]
        super().__init__(url, protocols=subprotocols, server=serverIdent, reactor=reactor, **kwargs)
        if reactor is None:
            from twisted.internet import reactor
        #: The clock used for rate limits and timers (a task.Clock in tests).
        self.clock = reactor
        self.limits = limits if limits is not None else Limits()
        self.metrics = metrics if metrics is not None else Metrics()
        self.originPolicy = originPolicy
        self.authenticator = authenticator
        self.strictSubprotocol = strictSubprotocol
        self.hub = hub if hub is not None else Hub(max_subscriptions=self.limits.max_subscriptions,
                                                  clock=reactor, writer=KernelWriter,
                                                  metrics=self.metrics)
        self.rpc = RpcRegistry()
        self.pubsub_registry = pubsubRegistry if pubsubRegistry is not None else PubSubRegistry()
        self._policy = policy if policy is not None else AutobahnPubSub(
            self.hub, self.pubsub_registry, observer=self)
        #: Presence (oro_sync.core.presence): told of sessions and subscriptions.
        self.presence = self.hub.presence
        self.services = SessionServices(ObservedPolicy(self._policy, self.presence), self.rpc,
                                        self.metrics, serverIdent, maxPrefixes,
                                        max_uri_length=self.limits.max_uri_length)
        #: Session class by subprotocol, in the server's order of listing.
        self.sessionClasses: dict[str, type] = {WAMP1: Wamp1Session}
        #: Served to a client that offers no subprotocol.
        self.defaultSubprotocol = WAMP1
        self.wamp2 = Wamp2Router(self.hub, frozenset(wamp2Realms) if wamp2Realms else None,
                                 may_register=mayRegister, clock=reactor,
                                 may_use_meta=mayUseMeta if mayUseMeta is not None else (
                                     _backends_only if authenticator is not None else _anyone),
                                 max_callee_invocations=self.limits.max_callee_invocations,
                                 max_call_size=self.limits.max_call_size)
        if wamp2:
            for subprotocol in SERIALIZERS:
                self.sessionClasses[subprotocol] = Wamp2Session
        self._per_address: Counter = Counter()
        self._connections = 0
        #: One log line per reason and client per interval (oro_sync.logs).
        self.repeats = RepeatLimiter(self._log, reactor)
        #: Handshake starts in bounded slices per reactor turn (handshake_slices.py);
        #: unsliced under a task.Clock.
        self.handshakeSlices = HandshakeSlices(reactor if IReactorCore.providedBy(reactor) else None)
        #: Connections whose output Twisted is holding (see outputLagging).
        self._lagging: set = set()
        self._lagging_checked = -1.0
        #: Bytes of unparsed client input held by all connections together.
        self.inputHeld = 0
        #: Connections holding more than 64 KiB of unparsed input (the ones
        #: closed first when the total input budget is exhausted).
        self.inputHolders: set = set()
        #: The listening port, for admission control (set by whoever listens).
        self.listeningPort: Any = None
        self._pending_handshakes = 0
        self._accept_paused = False
        self._session_observers: list[Any] = [self.presence]
        self.noisy = False
        lim = self.limits
        # Answer bad input with a close frame carrying a code and reason,
        # rather than Autobahn's default of dropping TCP (seen as 1006).
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

    @property
    def pubsub(self) -> Any:
        """What SUBSCRIBE / UNSUBSCRIBE / PUBLISH do (the IPubSubPolicy given
        to the constructor; read-only, as the sessions share it)."""
        return self._policy

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The WebSocket subprotocols served, in the server's order of listing."""
        return tuple(self.sessionClasses)

    def makeSession(self, session_class: type, conn: WampConnection) -> Any:
        """The WAMP session of a connection that just opened."""
        if issubclass(session_class, Wamp2Session):
            return Wamp2Session(conn, self.services, self.wamp2, conn.session_id, conn.identity,
                                SERIALIZERS[conn.subprotocol],
                                getattr(self.authenticator, "verify_in_band", None),
                                authenticated=not conn.ticket_pending)
        return session_class(conn, self.services, conn.session_id, conn.identity)

    def setProtocolOptions(self, **options: Any) -> None:
        super().setProtocolOptions(**options)
        base = getattr(self, "_protocol_base", None)
        if base is None:
            base = self._protocol_base = self.protocol
        self.protocol = protocol_with_options(base, self)

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
            # At most ACCEPTS_PER_TURN per read: an accept burst is reactor
            # time the connected clients wait for (handshake_slices.py).
            port.numberAccepts = max(1, min(ACCEPTS_PER_TURN, limit - pending))
        if pending >= limit and not self._accept_paused:
            self._accept_paused = True
            self.metrics.counters["accept_pauses"] += 1
            port.stopReading()
        elif self._accept_paused and pending <= limit // 2:
            self._accept_paused = False
            if port.connected:
                port.startReading()

    # -- the total memory budget for buffered output and input -----------------

    def outputLagging(self, conn: Any) -> None:
        """``conn``'s output is being held by Twisted (its peer reads slowly).

        While the output held for all lagging peers together is over
        ``limits.max_total_output_buffer``, the peers holding the most are
        cut off as slow consumers (checked at most every 0.1 s: the sum
        walks the lagging peers only)."""
        self._lagging.add(conn)
        budget = self.limits.max_total_output_buffer
        now = self.clock.seconds()
        if not budget or now - self._lagging_checked < 0.1:
            return
        self._lagging_checked = now
        sizes = sorted(((buffered_bytes(c.transport), id(c), c) for c in self._lagging), reverse=True)
        total = sum(size for size, _, _ in sizes)
        for size, _, c in sizes:
            if total <= budget:
                break
            total -= size
            c.cutOff("the server's total output budget is exhausted")

    def outputCaughtUp(self, conn: Any) -> None:
        self._lagging.discard(conn)

    def connectionRefusal(self, host: str) -> tuple[str, str] | None:
        """(reason, text) when a new connection from ``host`` is over a limit, or None."""
        lim = self.limits
        if lim.max_connections and self._connections > lim.max_connections:
            return "max_connections", f"server is at its limit of {lim.max_connections} connections"
        if lim.max_connections_per_address and self._per_address[host] > lim.max_connections_per_address:
            return ("max_connections_per_address",
                    f"at most {lim.max_connections_per_address} connections per client address")
        return None

    # -- sessions -------------------------------------------------------------

    def addSessionObserver(self, observer: Any) -> None:
        """``observer.sessionOpened(session)`` / ``sessionClosed(session)`` are
        called for every WAMP session (after WELCOME, and on disconnect)."""
        self._session_observers.append(observer)

    def sessionOpened(self, session: Any) -> None:
        self.hub.attach(session)
        self.metrics.session_opened(session.protocol)
        for observer in self._session_observers:
            observer.sessionOpened(session)

    def sessionClosed(self, session: Any) -> None:
        try:
            self.services.policy.session_closed(session)
        except Exception:
            self._log.failure("pub/sub cleanup failed for {session}", session=session.session_id)
        self.hub.detach(session)
        self.metrics.session_closed(session.protocol)
        for observer in self._session_observers:
            observer.sessionClosed(session)

    def onClientSubscribed(self, session: Any, topicUri: str) -> None:
        """Called after a client subscribed (override to observe)."""

    def onClientUnsubscribed(self, session: Any, topicUri: str) -> None:
        """Called after a client unsubscribed or left (override to observe)."""

    # -- AutobahnPython 0.8's server API ---------------------------------------

    def registerForRpc(self, obj: Any, baseUri: str = "", methods: list | None = None) -> list[str]:
        return self.rpc.registerForRpc(obj, baseUri, methods)

    def registerMethodForRpc(self, uri: str, obj: Any, proc: Callable) -> None:
        self.rpc.registerMethodForRpc(uri, obj, proc)

    def registerProcedureForRpc(self, uri: str, proc: Callable) -> None:
        self.rpc.registerProcedureForRpc(uri, proc)

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
        return self.hub.publish(topicUri, event, ex, el)


def _sid(x: Any) -> str:
    return x if isinstance(x, str) else x.session_id
