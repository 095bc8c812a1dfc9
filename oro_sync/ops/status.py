"""The live status page (``/status``) and what it shows.

:class:`StatusFeed` turns the server's live objects into one snapshot
(connections, sessions, topics with subscriber counts, messages per second,
broker and dependency state, memory) and pushes it to every open page as
server-sent events (``/status/events``) once per ``interval``; the page
(``static/status.html``, shipped with the package, no outside resource)
draws its charts from them.  The feed ticks only while a page is open.
The periodic summary log line (:mod:`oro_sync.ops.logformat`) uses the
same snapshot.
"""

from __future__ import annotations

import json
import os
from collections import deque
import resource as _resource
from typing import Any

from twisted.internet import task
from twisted.web import resource, server

from oro_sync import __version__
from oro_sync.logs import Logger
from oro_sync.ops.health import broker_state, connection_count
from oro_sync.websocket.kernel_write import buffered_bytes

PAGE = os.path.join(os.path.dirname(__file__), "static", "status.html")
#: At most this many topics (the busiest) and sessions (the newest) per snapshot.
MAX_TOPICS = 50
MAX_SESSIONS = 100
#: Rate points kept for a newly opened page's charts (one per tick).
HISTORY = 120
_RATES = {"messages_in": "messages_in", "messages_out": "messages_out",
          "events_delivered": "events_delivered"}


def memory_bytes() -> int:
    """The process's resident memory now (Linux), else its peak."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss * 1024


#: Bytes of snapshots a /status/events reader may leave unread before it is dropped.
MAX_UNREAD = 1024 * 1024


class Rates:
    """Per-second rates of some counters between two readings."""

    def __init__(self, clock: Any):
        self.clock = clock
        self._last: tuple[float, dict[str, int]] | None = None

    def read(self, counters: dict[str, int]) -> dict[str, float]:
        now = self.clock.seconds()
        values = {name: int(counters.get(key, 0)) for name, key in _RATES.items()}
        last, self._last = self._last, (now, values)
        if last is None or now <= last[0]:
            return {name: 0.0 for name in values}
        elapsed = now - last[0]
        return {name: round((v - last[1].get(name, 0)) / elapsed, 2) for name, v in values.items()}


def snapshot(srv: Any, health: Any, rates: Rates, details: bool = True) -> dict[str, Any]:
    """Everything the page and the summary line show, as plain data."""
    factory, metrics = srv.factory, srv.metrics
    hub = factory.hub
    topics = list(hub.topics.topics.values())
    states = health.states() if health is not None else {}
    snap: dict[str, Any] = {
        "version": __version__,
        "time": factory.clock.seconds(),
        "connections": connection_count(factory),
        "sessions": dict(metrics.sessions),
        "topic_count": len(topics),
        "subscriptions": sum(len(t.subscribers) for t in topics),
        "rates": rates.read(metrics.counters),
        "totals": {k: int(metrics.counters.get(k, 0)) for k in _RATES},
        "refusals": dict(metrics.refusals),
        "broker": broker_state(hub.broker, states),
        "dependencies": states,
        "memory": memory_bytes(),
        "shutting_down": bool(getattr(health, "shutting_down", False)),
    }
    if details:
        busiest = sorted(topics, key=lambda t: (-len(t.subscribers), t.uri))[:MAX_TOPICS]
        snap["topics"] = [{"uri": t.uri, "subscribers": len(t.subscribers)} for t in busiest]
        sessions = list(hub.sessions.values())[-MAX_SESSIONS:]
        snap["session_list"] = [_session(s) for s in reversed(sessions)]
    return snap


def _session(session: Any) -> dict[str, Any]:
    conn = getattr(session, "connection", None)
    try:
        address = conn.transport.getPeer().host
    except Exception:
        address = ""
    identity = getattr(session, "identity", None)
    return {"id": session.session_id, "user": getattr(identity, "username", ""),
            "address": address, "protocol": getattr(session, "protocol", ""),
            "subscriptions": len(session.subscriptions)}


class StatusFeed(resource.Resource):
    """``/status/events``: a snapshot per ``interval`` to every open page."""

    isLeaf = True
    log = Logger()

    def __init__(self, srv: Any, health: Any, clock: Any, interval: float = 1.0):
        super().__init__()
        self.srv = srv
        self.health = health
        self.clock = clock
        self.interval = interval
        self.rates = Rates(clock)
        #: The rates of the last ticks, so a page opened later starts with a chart.
        self.history: deque = deque(maxlen=HISTORY)
        self.listeners: list[Any] = []
        self._loop: task.LoopingCall | None = None

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: do not buffer the stream
        self.listeners.append(request)
        request.notifyFinish().addBoth(lambda _: self._gone(request))
        if self._loop is None:
            self._loop = task.LoopingCall(self.tick)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=True)
        else:
            self._send(request, self._current())
        return server.NOT_DONE_YET

    def _current(self) -> bytes:
        snap = snapshot(self.srv, self.health, self.rates)
        self.history.append(snap["rates"])
        return b"data: " + json.dumps(snap, separators=(",", ":")).encode("utf-8") + b"\n\n"

    def tick(self) -> None:
        if self.health is not None and self.health.dependencies:
            self.health.check_all()  # refresh the states the next snapshot shows
        data = self._current()
        for request in list(self.listeners):
            self._send(request, data)

    def _send(self, request: Any, data: bytes) -> None:
        # A reader that stays connected but stops reading must not grow the
        # server's memory one snapshot a second: past MAX_UNREAD it is dropped.
        if buffered_bytes(getattr(request, "transport", None)) > MAX_UNREAD:
            self._gone(request)
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return
        try:
            request.write(data)
        except Exception:
            self._gone(request)

    def _gone(self, request: Any) -> None:
        if request in self.listeners:
            self.listeners.remove(request)
        if not self.listeners and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def close_all(self) -> None:
        """End every stream (the admin listener is stopping)."""
        for request in list(self.listeners):
            try:
                request.finish()
            except Exception:
                pass
        self.listeners = []
        self._gone(None)


class StatusPage(resource.Resource):
    """``/status`` (the page) and ``/status/events`` (its feed)."""

    def __init__(self, feed: StatusFeed):
        super().__init__()
        self.feed = feed
        self.putChild(b"events", feed)
        with open(PAGE, "rb") as f:
            self.page = f.read()

    def getChild(self, path: bytes, request: Any) -> Any:
        if path == b"":
            return self
        return super().getChild(path, request)

    def render_GET(self, request: Any) -> bytes:
        feed = self.feed
        snap = snapshot(feed.srv, feed.health, Rates(feed.clock))
        snap["history"] = list(feed.history)
        initial = script_json(snap)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        # Everything is inline; nothing may be fetched from elsewhere.
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                          b"connect-src 'self'; img-src data:")
        return self.page.replace(b"/*INITIAL*/null", initial, 1)


def script_json(value: Any) -> bytes:
    """``value`` as JSON to embed in a ``<script>``: no "<" at all, so neither
    "</script" nor "<!--" (which changes how the tokenizer ends the element)
    can come from a topic URI or a username; ">" and "&" likewise."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("utf-8")
