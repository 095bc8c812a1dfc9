"""Logging: twisted.logger, with one level filter for all of oro-sync.

Every module's ``Logger`` comes from here, so ``--log-level`` (or
:func:`set_level`) decides what reaches the observers, and filtered-out
events cost one predicate call rather than formatting work.
"""

from __future__ import annotations

import time

from twisted import logger as _tl

_predicate = _tl.LogLevelFilterPredicate(defaultLogLevel=_tl.LogLevel.info)
_observer = _tl.FilteringLogObserver(_tl.globalLogPublisher, [_predicate])

LEVELS = ("debug", "info", "warn", "error", "critical")


class Logger(_tl.Logger):
    """A twisted Logger whose events pass oro-sync's level filter."""

    def __init__(self, namespace=None, source=None, observer=None):
        super().__init__(namespace, source, observer if observer is not None else _observer)


def set_level(name: str) -> None:
    """Set the lowest level logged by oro-sync (debug, info, warn, error, critical)."""
    _predicate.setLogLevelForNamespace("", _tl.LogLevel.levelWithName(name))


def clip(text: str, limit: int = 200) -> str:
    """Client-chosen text for a log line, cut to ``limit`` characters
    (a topic URI may be as long as a whole message)."""
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"



class RepeatLimiter:
    """At most one log line per (reason, client) and interval, plus a summary.

    A misbehaving client must not write a line per message: the first line of
    a kind is logged at once, repeats within ``interval`` seconds are only
    counted, and one summary line says how many were left out (written when
    that key's interval is over and anything is logged again; there is no
    timer, so nothing is left scheduled).  Keys older than an interval are
    forgotten, so memory is bounded by the clients seen in one interval.
    """

    INTERVAL = 10.0

    def __init__(self, log: _tl.Logger, clock=None, interval: float = INTERVAL):
        self.log = log
        self._now = clock.seconds if clock is not None else time.monotonic
        self.interval = interval
        #: key -> [interval start, repeats left out, level]
        self._repeats: dict = {}
        self._swept = self._now()
        #: Lines left out since start (for metrics and tests).
        self.suppressed = 0

    def emit(self, level: _tl.LogLevel, key: tuple, format: str, **kwargs) -> None:
        """Log ``format`` unless a line with ``key`` was logged in this interval."""
        if self.first(key, level):
            self.log.emit(level, format, **kwargs)

    def first(self, key: tuple, level: _tl.LogLevel = _tl.LogLevel.error) -> bool:
        """True when ``key`` is new in this interval (the caller logs, e.g. a
        failure with its traceback); False when it is counted instead."""
        now = self._now()
        if now - self._swept >= self.interval:
            self._sweep(now)
        entry = self._repeats.get(key)
        if entry is not None:
            if now - entry[0] < self.interval:
                entry[1] += 1
                self.suppressed += 1
                return False
            self._summarize(key, entry)
        self._repeats[key] = [now, 0, level]
        return True

    def warn(self, key: tuple, format: str, **kwargs) -> None:
        self.emit(_tl.LogLevel.warn, key, format, **kwargs)

    def info(self, key: tuple, format: str, **kwargs) -> None:
        self.emit(_tl.LogLevel.info, key, format, **kwargs)

    def _sweep(self, now: float) -> None:
        self._swept = now
        old = [(k, e) for k, e in self._repeats.items() if now - e[0] >= self.interval]
        for key, entry in old:
            del self._repeats[key]
            self._summarize(key, entry)

    def _summarize(self, key: tuple, entry: list) -> None:
        if entry[1]:
            self.log.emit(entry[2], "... and {count} more like that ({what}) within {interval:.0f} s",
                          count=entry[1], what="/".join(map(str, key))[:200], interval=self.interval)
