"""A bounded map whose entries expire: the one cache structure of auth/.

Three places need "remember this until a given time, but never more than N
things": the SQL provider's user cache, the ticket verifier's outcome cache
and the one-time-ticket nonce store.  Each used to carry its own copy of
the same bookkeeping; :class:`ExpiringMap` is that bookkeeping once.

- Bounded: a flood of tickets naming random users (misses are cached too)
  or of distinct valid tickets cannot grow memory without limit.  When
  full, the least recently used entry goes (``evict="lru"``), or the entry
  expiring soonest (``evict="soonest"``: for the nonce store, evicting the
  nonce whose ticket dies first reopens the shortest replay window).
- Per-entry expiry, pruned through a heap, so that an entry does not
  outlive its time merely because nobody asks for it again, and pruning
  costs one comparison when nothing has expired.  Items left in the heap
  by replaced, popped or evicted entries are skipped when they surface and
  the heap is rebuilt when they outnumber the live ones.
- Time is injected: a ``clock`` (``IReactorTime``; ``task.Clock`` in
  tests), or ``now=`` on each call for code that is deliberately pure
  (:mod:`oro_sync.auth.tickets` is given the time by its callers).

Not thread-safe: it lives on the reactor thread.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTime

__all__ = ["ExpiringMap"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")

#: Heap items of dead entries tolerated beyond the live ones before a rebuild.
_SLACK = 64


class ExpiringMap(Generic[K, V]):
    """At most ``max_size`` entries, each dropped at its ``expires_at``.

    :param max_size: the bound; ``0`` stores nothing (a disabled cache).
    :param clock: where time comes from when a call passes no ``now``.
    :param evict: which live entry makes room when full: ``"lru"`` (least
        recently stored or read) or ``"soonest"`` (earliest expiry).

    An entry is live while ``now < expires_at``.  ``len()`` counts entries
    held, which may include expired ones until the next call that takes
    the time (:meth:`get`, :meth:`put`, :meth:`prune`).
    """

    def __init__(self, max_size: int, clock: IReactorTime | None = None, *,
                 evict: Literal["lru", "soonest"] = "lru") -> None:
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        if evict not in ("lru", "soonest"):
            raise ValueError(f"evict must be 'lru' or 'soonest', not {evict!r}")
        self.max_size = max_size
        self._clock = clock
        self._evict_soonest = evict == "soonest"
        #: key -> (expires_at, serial, value), least recently used first.
        self._entries: OrderedDict[K, tuple[float, int, V]] = OrderedDict()
        #: (expires_at, serial, key); an item is live iff the key's entry
        #: still has that serial (serials also keep keys from being compared).
        self._heap: list[tuple[float, int, K]] = []
        self._serials = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is live at the clock's time; without a clock,
        whether it is held (see :meth:`prune`).  Does not refresh LRU order."""
        entry = self._entries.get(key)  # type: ignore[arg-type]
        if entry is None:
            return False
        return self._clock is None or self._clock.seconds() < entry[0]

    def _now(self, now: float | None) -> float:
        if now is not None:
            return now
        if self._clock is None:
            raise TypeError("an ExpiringMap without a clock needs now=")
        return self._clock.seconds()

    def get(self, key: K, *, now: float | None = None,
            default: D | None = None) -> V | D | None:
        """The live value for ``key`` (now most recently used), else ``default``."""
        self.prune(now)
        entry = self._entries.get(key)
        if entry is None:
            return default
        self._entries.move_to_end(key)
        return entry[2]

    def put(self, key: K, value: V, expires_at: float, *, now: float | None = None) -> int:
        """Store ``value`` for ``key`` until ``expires_at`` (replacing any
        entry); return how many *live* entries were evicted to make room,
        so a caller can warn that its bound is too small.

        A value that is already expired is not stored (and the old entry
        for ``key`` is dropped: it has been superseded).
        """
        current = self._now(now)
        self.prune(current)
        self._entries.pop(key, None)
        if expires_at <= current or self.max_size == 0:
            return 0
        evicted = 0
        while len(self._entries) >= self.max_size:
            self._evict_one()
            evicted += 1
        serial = next(self._serials)
        self._entries[key] = (expires_at, serial, value)
        heapq.heappush(self._heap, (expires_at, serial, key))
        if len(self._heap) > 2 * len(self._entries) + _SLACK:
            self._heap = [(exp, serial, k) for k, (exp, serial, _) in self._entries.items()]
            heapq.heapify(self._heap)
        return evicted

    def _evict_one(self) -> None:
        if not self._evict_soonest:
            self._entries.popitem(last=False)
            return
        while True:  # ends: every held entry has its item in the heap
            _, serial, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry[1] == serial:
                del self._entries[key]
                return

    def pop(self, key: K, default: D | None = None) -> V | D | None:
        """Remove ``key``; its value (even if expired), else ``default``."""
        entry = self._entries.pop(key, None)
        return default if entry is None else entry[2]

    def clear(self) -> None:
        self._entries.clear()
        self._heap.clear()

    def prune(self, now: float | None = None) -> int:
        """Drop every entry expired at ``now``; return how many."""
        current = self._now(now)
        heap, entries = self._heap, self._entries
        removed = 0
        while heap and heap[0][0] <= current:
            _, serial, key = heapq.heappop(heap)
            entry = entries.get(key)
            if entry is not None and entry[1] == serial:
                del entries[key]
                removed += 1
        return removed
