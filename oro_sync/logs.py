"""Logging: twisted.logger, with one level filter for all of oro-sync.

Every module's ``Logger`` comes from here, so ``--log-level`` (or
:func:`set_level`) decides what reaches the observers, and filtered-out
events cost one predicate call rather than formatting work.
"""

from __future__ import annotations

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
