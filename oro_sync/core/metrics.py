"""One place for the server's counters, injected where things happen.

Connections by protocol, handshake refusals by reason, messages in and out,
events delivered, slow-consumer closes, handler errors: each part of the
server that sees one of these gets this object through its constructor and
counts it here, so an operations endpoint reads :meth:`Metrics.snapshot`
and nothing else.  Parts that keep their own figures (the ticket verifier,
user providers) register a source instead of copying them.

Counting is a dict increment; the fan-out path counts once per publication
(how many received it), never once per receiver.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable


class Metrics:
    """The counters and gauges of one server process."""

    def __init__(self) -> None:
        #: Monotonic counts by name (e.g. ``messages_in``, ``events_delivered``).
        self.counters: Counter = Counter()
        #: Open WAMP sessions by protocol (``wamp``, ``wamp.2.json``).
        self.sessions: Counter = Counter()
        #: Handshakes refused, by reason (``origin``, ``ticket``, ``max_connections``...).
        self.refusals: Counter = Counter()
        self._sources: dict[str, Callable[[], dict]] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def refused(self, reason: str) -> None:
        self.refusals[reason] += 1

    def session_opened(self, protocol: str) -> None:
        self.sessions[protocol] += 1

    def session_closed(self, protocol: str) -> None:
        n = self.sessions[protocol] - 1
        if n > 0:
            self.sessions[protocol] = n
        else:
            self.sessions.pop(protocol, None)

    def add_source(self, name: str, read: Callable[[], dict]) -> None:
        """Include ``read()``'s figures under ``name`` in every snapshot."""
        self._sources[name] = read

    def __getitem__(self, name: str) -> int:
        """``metrics["slow_consumers_closed"]``: a counter's value (0 if never counted)."""
        return self.counters[name]

    def snapshot(self) -> dict[str, Any]:
        """Every figure, as plain data."""
        snap: dict[str, Any] = {"counters": dict(self.counters), "sessions": dict(self.sessions),
                                "refusals": dict(self.refusals)}
        for name, read in self._sources.items():
            snap[name] = dict(read())
        return snap
