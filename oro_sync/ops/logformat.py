"""Log output: JSON lines (``--log-format json``) and the periodic summary line.

twisted.logger's own ``jsonFileLogObserver`` writes every key of an event,
internal ones included (``log_logger``, ``log_source``, the format string
rather than the text) between ASCII record separators: complete, but hard
to read and to feed to a log shipper.  :func:`json_observer` writes one
JSON object per line instead::

    {"time": "2026-12-08T05:01:02.345Z", "level": "info", "namespace": "...",
     "text": "connect Ab12...: user admin from 127.0.0.1 over wamp",
     "event": "connect", "session": "Ab12...", "user": "admin", ...}

with the event's own fields (those that are plain data) next to the
formatted text, and a ``traceback`` for failures.  A ticket never reaches a
log line (the server logs none); as a second guard any ``ticket=...`` query
value in the text is replaced by ``ticket=<redacted>``.

:class:`SummaryService` logs one line every ``server.summary_interval``
seconds: connections, sessions by protocol, topics, subscriptions,
messages per second and memory, as Oro's server printed with ``--profile``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import IO, Any

from twisted.application import internet
from twisted.logger import FileLogObserver, formatEvent

from oro_sync.logs import Logger
from oro_sync.ops.status import Rates, snapshot

FORMATS = ("text", "json")
_TICKET = re.compile(r"(ticket=)[^&\s\"']+", re.IGNORECASE)
_PLAIN = (str, int, float, bool, type(None))


def redact(text: str) -> str:
    """``text`` without the value of any ``ticket=`` query parameter."""
    return _TICKET.sub(r"\1<redacted>", text) if "ticket=" in text.lower() else text


def event_as_line(event: dict) -> str:
    """One log event as a JSON object on one line."""
    stamp = event.get("log_time", time.time())
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z",
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "text": redact(formatEvent(event)),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in ("format", "message", "time", "system", "isError", "why"):
            if key == "log_event":
                out["event"] = value
            continue
        if isinstance(value, _PLAIN):
            out[key] = redact(value) if isinstance(value, str) else value
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = redact(failure.getTraceback())
        except Exception:
            out["traceback"] = repr(failure)
    return json.dumps(out, ensure_ascii=False, default=str) + "\n"


def json_observer(output: IO[str] | None = None) -> FileLogObserver:
    """A twisted.logger observer writing :func:`event_as_line` lines."""
    return FileLogObserver(output if output is not None else sys.stdout, event_as_line)


class SummaryService(internet.TimerService):
    """The periodic summary line (``server.summary_interval`` seconds; 0: off)."""

    log = Logger()

    def __init__(self, srv: Any, health: Any, interval: float, clock: Any):
        super().__init__(interval, self.summarize)
        self.clock = clock
        self.srv = srv
        self.health = health
        self.rates = Rates(clock)
        self.rates.read(srv.metrics.counters)
        self._started = False

    def summarize(self) -> None:
        if not self._started:  # TimerService calls at once: nothing to sum up yet
            self._started = True
            return
        snap = snapshot(self.srv, self.health, self.rates, details=False)
        rates = snap["rates"]
        self.log.info(
            "summary: {connections} connections ({v1} v1, {v2} v2), {topics} topics, "
            "{subscriptions} subscriptions, {rate_in:.1f} msg/s in, {rate_events:.1f} events/s, "
            "{rate_out:.1f} msg/s out, {memory_mb:.1f} MB",
            log_event="summary", connections=snap["connections"],
            v1=snap["sessions"].get("wamp", 0), v2=sum(n for p, n in snap["sessions"].items() if p.startswith("wamp.2.")),
            topics=snap["topic_count"], subscriptions=snap["subscriptions"],
            rate_in=rates["messages_in"], rate_events=rates["events_delivered"],
            rate_out=rates["messages_out"], memory_mb=snap["memory"] / 1048576,
            memory=snap["memory"])
