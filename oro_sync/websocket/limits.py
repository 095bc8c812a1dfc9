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
