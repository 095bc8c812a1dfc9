"""What one client may cost the server, and the publish-rate token bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    #: WebSocket ping every N seconds; no pong within the timeout drops the
    #: peer, but only a peer that answered a ping before (Oro's PHP backend
    #: client never reads: see oro_sync.websocket.keepalive).
    auto_ping_interval: float = 30.0
    auto_ping_timeout: float = 30.0
    #: TCP keep-alive on accepted sockets: first probe after ``idle`` seconds
    #: without traffic (0: off), then every ``interval`` seconds; ``count``
    #: unanswered probes close the connection (a vanished host: about 2 min).
    tcp_keepalive_idle: float = 60.0
    tcp_keepalive_interval: float = 10.0
    tcp_keepalive_count: int = 6
    #: Seconds an opening handshake (and, for WAMP v2, the HELLO) may take.
    handshake_timeout: float = 10.0
    #: Opening handshakes in progress before the server stops accepting new
    #: connections (they wait in the kernel's listen queue, costing nothing)
    #: until half of them are done; keeps a reconnect storm from stalling
    #: delivery to the connected clients.
    max_pending_handshakes: int = 64
    # -- hostile clients (see README, "Hostile clients") --
    #: Longest topic / procedure URI (v1 after CURIE expansion, and v2);
    #: subscriptions x this bounds what a connection's topics cost.
    max_uri_length: int = 512
    #: Longest value a route placeholder accepts (a longer one is unrouted).
    max_placeholder_length: int = 128
    #: Largest HTTP upgrade request (request line and headers): HTTP 431 beyond.
    max_request_header: int = 8192
    #: Seconds the upgrade request's header may take to arrive (shorter than
    #: handshake_timeout, which also covers the ticket check).
    header_timeout: float = 5.0
    #: Client messages of every kind per second per connection, and the burst:
    #: beyond it the server stops reading from that connection until the
    #: budget refills (TCP holds the rest).  Backends are exempt.
    message_rate: float = 100.0
    message_burst: int = 200
    #: Bytes of output buffered for all connections together: past it the
    #: connection with the most queued output is cut off (as a slow consumer).
    max_total_output_buffer: int = 256 * 1024 * 1024
    #: Bytes of unparsed client input (partial messages) for all connections
    #: together: past it, a connection holding over 64 KiB of it is closed (1009).
    max_total_input_buffer: int = 128 * 1024 * 1024
    #: WAMP v2 RPC: invocations in flight to one callee, and the largest
    #: INVOCATION (bytes) a caller may send it; callers beyond get an ERROR.
    #: (Their product stays under max_output_buffer, so callers can never get
    #: a callee cut off as a slow consumer.)
    max_callee_invocations: int = 32
    max_call_size: int = 64 * 1024


class MessageBudget:
    """Every client message costs a token (``rate`` per second, ``burst`` saved).

    Unlike the publish bucket nothing is dropped: when the budget is spent,
    :meth:`spend` says how long to stop reading from the client, so a flood
    waits in the kernel's buffers (and the client's) instead of in ours.
    """

    __slots__ = ("rate", "burst", "clock", "tokens", "last")

    def __init__(self, rate: float, burst: int, clock: Any):
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.clock = clock
        self.tokens = self.burst
        self.last = clock.seconds()

    def spend(self) -> float:
        """Take a token; 0.0, or the seconds until the next token when none is left."""
        now = self.clock.seconds()
        tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up (publish limits)."""

    __slots__ = ("rate", "burst", "clock", "tokens", "last")

    def __init__(self, rate: float, burst: int, clock: Any):
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = self.burst
        self.last = clock.seconds()

    def take(self) -> bool:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
