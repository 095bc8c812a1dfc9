"""The gate in front of Autobahn: connection limits at accept, and a bounded,
timed arrival of the HTTP upgrade request.

Autobahn keeps every byte of an upgrade request until it sees the blank
line that ends the header, and sets up a WebSocket protocol (timers, UTF-8
validator, its ~45 options) for every TCP connection, however it ends.  An
attacker needs no ticket to open hundreds of connections whose header never
ends: each byte was kept until the opening-handshake timeout, and each
connection cost a full Autobahn set-up and teardown, with two log lines.

:class:`HeaderGate` is a mixin placed before Autobahn's protocol class.
Until the header is complete the connection is only this:

- counted at accept (in total and per address) and refused there with a
  503 when over a limit: half-open requests count, and a refusal costs no
  Autobahn set-up;
- its request head is collected in one buffer of at most
  ``limits.max_request_header`` bytes (HTTP 431 beyond);
- it must be complete within ``limits.header_timeout`` seconds (or the
  handshake timeout if that is shorter), or the connection is dropped.

Only then does Autobahn start (``connectionMade``) and get the bytes, so its
opening-handshake timeout covers the ticket check (and WAMP v2's HELLO).
Refusals answer at once and half-close, reading and discarding whatever
the client still sends, so no reset eats the response; the same deadline
drops a client that never closes.  One log line per reason and client
address and interval (``factory.repeats``).
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.util import peer2str

_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n"


#: Seconds a refused connection may take to close when no header deadline is set.
REFUSED_DRAIN = 5.0


class HeaderGate:
    """Mixin for the server protocol (see the module docstring)."""

    factory: Any
    transport: Any

    _peer_host = ""
    _peer_text = ""
    #: The request head so far; None once handed to Autobahn (or refused).
    _pre: bytearray | None = None
    #: A refused connection: input is read and thrown away until it ends.
    _discarding = False
    _autobahn_started = False
    #: The complete request head while its handshake waits for a time slice.
    _queued: bytes | None = None
    _header_timer: Any = None

    def connectionMade(self) -> None:
        factory = self.factory
        transport = self.transport
        self._peer_host = getattr(transport.getPeer(), "host", "")
        factory.connectionCounted(self._peer_host, +1)
        limits = factory.limits
        timeouts = [t for t in (limits.header_timeout, limits.handshake_timeout) if t]
        if timeouts:
            self._header_timer = factory.clock.callLater(min(timeouts), self._header_too_slow)
        refusal = factory.connectionRefusal(self._peer_host)
        if refusal is not None:
            reason, why = refusal
            factory.metrics.refused(reason)
            factory.repeats.warn(("refused", reason, self._peer_host), "refusing {peer}: {why}",
                                 peer=self._peer(), why=why)
            self._refuse_now(f"HTTP/1.1 503 {why}\r\nConnection: close\r\n\r\n".encode("utf-8"))
            return
        self._pre = bytearray()

    def dataReceived(self, data: bytes) -> None:
        pre = self._pre
        if pre is None:
            if self._autobahn_started:
                super().dataReceived(data)  # type: ignore[misc]
            elif self._queued is not None:
                self._queue_more(data)
            return  # refused: discarded
        start = max(0, len(pre) - 3)
        pre += data
        end = pre.find(b"\r\n\r\n", start)
        limit = self.factory.limits.max_request_header
        if limit and (len(pre) > limit if end < 0 else end + 4 > limit):
            self._header_too_large(limit)
            return
        if end < 0:
            return
        self._pre = None
        self._cancel_header_timer()
        self._queued = bytes(pre)
        # Started in the reactor turn's handshake slice (handshake_slices.py).
        self.factory.handshakeSlices.submit(self._start_autobahn)

    def _start_autobahn(self) -> None:
        data = self._queued
        if data is None:
            return  # gone while it waited
        self._queued = None
        self._autobahn_started = True
        super().connectionMade()  # type: ignore[misc]
        super().dataReceived(data)  # type: ignore[misc]

    def _queue_more(self, data: bytes) -> None:
        """Bytes after the request head, while the handshake waits for its slice:
        kept for Autobahn within the same header bound (a WebSocket client
        sends nothing before the 101)."""
        queued = self._queued + data  # type: ignore[operator]
        limit = self.factory.limits.max_request_header
        if limit and len(queued) > limit:
            self._queued = None
            self.transport.abortConnection()
            return
        self._queued = queued

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connectionCounted(self._peer_host, -1)
        self._cancel_header_timer()
        self._pre = self._queued = None
        if self._autobahn_started:
            super().connectionLost(reason)  # type: ignore[misc]

    # -- refusals ------------------------------------------------------------------

    def _peer(self) -> str:
        if not self._peer_text:
            try:
                self._peer_text = peer2str(self.transport)
            except Exception:  # an unusual transport: the address is enough
                self._peer_text = self._peer_host
        return self._peer_text

    def _refuse_now(self, response: bytes) -> None:
        """Answer, half-close, and discard what follows (the deadline ends it)."""
        self._pre = None
        self._discarding = True
        transport = self.transport
        transport.write(response)
        half_close = getattr(transport, "loseWriteConnection", None)
        (half_close or transport.loseConnection)()
        if self._header_timer is None:
            # No header deadline configured: a refused peer that never
            # closes must not stay counted forever.
            self._header_timer = self.factory.clock.callLater(REFUSED_DRAIN, self._header_too_slow)

    def _header_too_large(self, limit: int) -> None:
        factory = self.factory
        factory.metrics.refused("header_too_large")
        factory.repeats.info(("header_too_large", self._peer_host),
                             "refusing {peer}: upgrade request over {limit} bytes",
                             peer=self._peer(), limit=limit)
        self._refuse_now(_TOO_LARGE)

    def _header_too_slow(self) -> None:
        self._header_timer = None
        if self._discarding:
            self.transport.abortConnection()
        elif self._pre is not None:
            factory = self.factory
            factory.metrics.refused("header_timeout")
            factory.repeats.info(("header_timeout", self._peer_host),
                                 "{peer}: no complete upgrade request in time: dropped",
                                 peer=self._peer())
            self._pre = None
            self.transport.abortConnection()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            if self._header_timer.active():
                self._header_timer.cancel()
            self._header_timer = None
