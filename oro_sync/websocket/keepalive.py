"""Finding dead peers without closing live ones that never read.

Oro >= 5.1's PHP backend client keeps one socket for the life of a process
(message-queue consumers run for hours) and never reads from it, so it never
answers a WebSocket ping; after the server closed the socket its ``fwrite``
fails silently and every later publish is lost.  Ratchet never closed such a
connection, so neither may oro-sync.  Dead peers are still found:

* a ping timeout closes only a peer that has *shown* it answers pings (one
  pong is enough; browsers and WebSocket libraries answer them in the
  network layer), see :class:`PingPolicy`;
* TCP keep-alive on every accepted socket (:func:`enable_tcp_keepalive`)
  finds a peer whose host vanished, whatever it reads;
* the output-buffer bound (``limits.max_output_buffer``) cuts off a peer that
  stops reading while events are sent to it.

Pings keep going to peers that never answered: each timeout is followed by
the next ping one interval later (a few bytes per minute that such a peer's
kernel buffers absorb for months, until the output-buffer bound applies).
"""

from __future__ import annotations

import socket
from typing import Any

from oro_sync.logs import Logger

_log = Logger()

#: (option, setting name) on Linux; other systems may lack some of them.
_TCP_OPTIONS = (("TCP_KEEPIDLE", "tcp_keepalive_idle"),
                ("TCP_KEEPINTVL", "tcp_keepalive_interval"),
                ("TCP_KEEPCNT", "tcp_keepalive_count"))


def socket_of(transport: Any) -> Any:
    """The OS socket under a transport (through TLS wrappers), or None."""
    for _ in range(4):  # TLS over TCP is two levels; bounded anyway
        if transport is None:
            return None
        handle = getattr(transport, "socket", None)
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None


def enable_tcp_keepalive(transport: Any, limits: Any) -> bool:
    """Turn on TCP keep-alive for an accepted connection, with the idle time,
    probe interval and probe count of ``limits`` (``tcp_keepalive_idle`` 0:
    leave the socket as it is).  Returns whether it was turned on."""
    idle = limits.tcp_keepalive_idle
    if not idle:
        return False
    sock = socket_of(transport)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, name in _TCP_OPTIONS:
            number = getattr(socket, option, None)
            value = int(getattr(limits, name))
            if number is not None and value > 0:
                sock.setsockopt(socket.IPPROTO_TCP, number, max(1, value))
    except OSError as e:  # e.g. the peer already left: nothing to keep alive
        _log.debug("cannot set TCP keep-alive: {error}", error=e)
        return False
    return True


class PingPolicy:
    """Mixin for the server protocol: ping timeouts only for peers that answer pings.

    Autobahn drops a peer whose pong does not arrive within
    ``autoPingTimeout``.  Here that happens only after the peer answered
    at least one ping; for any other peer the timeout just schedules the
    next ping (see the module docstring for how those are found when dead).
    """

    #: Set on the first pong that answers one of our pings.
    answers_pings = False

    def onAutoPong(self, ping_sent: int, ping_seq: int, pong_received: int, pong_rtt: int,
                   payload: bytes) -> None:
        if not self.answers_pings:
            self.answers_pings = True
        super().onAutoPong(ping_sent, ping_seq, pong_received, pong_rtt, payload)  # type: ignore[misc]

    def onAutoPingTimeout(self) -> None:
        if self.answers_pings:
            self.factory.metrics.counters["ping_timeouts_closed"] += 1  # type: ignore[attr-defined]
            _log.info("{peer} did not answer a ping within {timeout} s: closing",
                      peer=self.peer, timeout=self.autoPingTimeout)  # type: ignore[attr-defined]
            super().onAutoPingTimeout()  # type: ignore[misc]
            return
        # A peer that never answered (Oro's PHP backend client never reads):
        # forget this ping and send the next one an interval later.
        self.autoPingTimeoutCall = None
        self.autoPingPending = None
        if self.autoPingInterval and self.state == self.STATE_OPEN:  # type: ignore[attr-defined]
            self.autoPingPendingCall = self.factory._batched_timer.call_later(  # type: ignore[attr-defined]
                self.autoPingInterval, self._sendAutoPing)  # type: ignore[attr-defined]
