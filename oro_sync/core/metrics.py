"""One place for the server's counters, injected where things happen.

Connections by protocol, handshake refusals by reason, messages in and out,
events delivered, slow-consumer closes, handler errors: each part of the
server that sees one of these gets this object through its constructor and
counts it here, so an operations endpoint reads :meth:`Metrics.snapshot`
and nothing else.  Parts that keep their own figures (the ticket verifier,
user providers) register a source instead of copying them.

Counting is a dict increment; the fan-out path counts once per publication
(how many received it), never once per receiver.  The publish-to-send
latency is sampled (one publication in :data:`LATENCY_SAMPLE`) into fixed
buckets, so exporting it (Prometheus, :mod:`oro_sync.ops`) reads plain
numbers at scrape time and costs the hot path nothing more.
"""

from __future__ import annotations

from collections import Counter
from bisect import bisect_left
from typing import Any, Callable

#: Upper bounds (seconds) of the publish-to-send latency buckets.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
#: One publication in this many has its publish-to-send latency measured.
LATENCY_SAMPLE = 16


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
        #: Sampled publish-to-send latencies: a count per bucket of
        #: :data:`LATENCY_BUCKETS` (plus one for larger), their sum and count.
        self.latency_buckets: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_latency(self, seconds: float) -> None:
        """One sampled publication took ``seconds`` from publish to the
        write of its last frame."""
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

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
