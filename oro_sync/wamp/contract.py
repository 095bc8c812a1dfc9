"""The contract between a WAMP session and the WebSocket connection carrying it.

The connection (:mod:`oro_sync.websocket`) does everything WebSocket: the
handshake gate, subprotocol choice, flow control, the slow-consumer cut-off,
keep-alive.  It creates one WAMP session per connection (v1 or v2, by the
negotiated subprotocol) and hands it every message; the session speaks
WAMP and the core's types, and reaches its peer only through
:class:`IConnection`.  Neither side knows the other's class, so each WAMP
version is tested with a small fake connection and no socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zope.interface import Attribute, Interface


class IConnection(Interface):
    """What a WAMP session may ask of its connection."""

    peer = Attribute("The peer's address, for log lines (e.g. 'tcp:127.0.0.1:50312').")
    clock = Attribute("callLater provider (the reactor; a task.Clock in tests).")

    def send_message(data: bytes, binary: bool = False) -> None:
        """Send one WAMP message (a reply, not an event); it follows every
        event already queued for the peer.  Dropped once the connection closes."""

    def session_ready() -> None:
        """The session is established (v1: WELCOME sent; v2: HELLO answered):
        it joins the hub and events may flow."""

    def hold_output() -> list:
        """Hold every frame for the peer, in order, until :meth:`release_output`."""

    def release_output(held: list) -> None:
        """Stop holding, then send ``held`` in order."""

    def allow_publish() -> bool:
        """Take one token of the connection's publish rate (False: over it)."""

    def close(code: int, reason: str) -> None:
        """Close with any WebSocket close code and a reason."""


class IWampSession(Interface):
    """What the connection asks of a WAMP session (beside the core's ISession)."""

    ready_timeout_reason = Attribute("Close reason when the session is not established "
                                     "within the handshake timeout (v2: 'no HELLO').")

    def open() -> None:
        """The WebSocket is open: v1 sends WELCOME; v2 waits for HELLO."""

    def receive(payload: bytes, is_binary: bool) -> None:
        """One message from the peer."""

    def closed() -> None:
        """The connection is gone (called once, before the session leaves the hub)."""


@dataclass
class SessionServices:
    """What every WAMP session of one server shares (built by the composition root).

    :param policy: the :class:`~oro_sync.core.policy.IPubSubPolicy`.
    :param rpc: the server's procedures (an :class:`~oro_sync.wamp.rpc.RpcRegistry`).
    :param metrics: the :class:`~oro_sync.core.metrics.Metrics`.
    """

    policy: Any
    rpc: Any
    metrics: Any
    server_ident: str = "oro-sync"
    max_prefixes: int = 256
    #: Longest topic or procedure URI a client may use (after CURIE expansion).
    max_uri_length: int = 512


def own_procedure(conn: Any, services: SessionServices, uri: str) -> Any:
    """The procedure for ``uri``: the connection's own (0.8 ``onSessionOpen``
    registrations) first, then the server's; None if there is none."""
    own = getattr(conn, "rpc_registry", None)
    proc = own.lookup(uri) if own is not None else None
    return proc if proc is not None else services.rpc.lookup(uri)


class SessionBase:
    """What a WAMP v1 and a WAMP v2 session have in common as the core's
    ISession: identity, subscriptions, and the way to their connection."""

    def __init__(self, conn: Any, services: SessionServices, session_id: str, identity: Any):
        self.conn = conn
        self.services = services
        self.session_id = session_id
        self.identity = identity
        #: Topic URIs this session is in (kept by the core).
        self.subscriptions: set[str] = set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session_id}>"

    @property
    def connection(self) -> Any:
        """The WebSocket connection carrying this session."""
        return self.conn

    @property
    def pubsub_registry(self) -> Any:
        """Topics the connection registered for itself (0.8 style), or None."""
        return getattr(self.conn, "pubsub_registry", None)

    def send_frame(self, data: bytes) -> None:
        """Before the session is ready nothing may be sent (the connection
        sets the real one, its peer queue's ``send``)."""

    def close(self, code: int, reason: str) -> None:
        self.conn.close(code, reason)
