"""``GET /health``: is this server able to serve, and what is it serving?

A load balancer or supervisor asks this; it must answer quickly and say
"no" (HTTP 503) while the server cannot do its job: a configured broker or
user database is unreachable, or the server is shutting down.

Dependencies are anything with a ``name`` and a ``check()`` (see
:class:`IDependency`): the SQL user provider is one today, a broker spanning
nodes registers itself the same way.  A check that does not answer within
:data:`CHECK_TIMEOUT` counts as down; answers are kept for
:data:`CHECK_CACHE` seconds so that a health probe every second, the status
page and the summary line do not each query the database.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import Attribute, Interface

from oro_sync import __version__
from oro_sync.logs import Logger

#: Seconds a dependency's check may take before it counts as down.
CHECK_TIMEOUT = 2.0
#: Seconds a dependency's answer is reused.
CHECK_CACHE = 1.0


class IDependency(Interface):
    """Something the server needs that can be unreachable (database, broker)."""

    name = Attribute("short name in /health and metrics, e.g. 'user_database', 'broker'")
    live = Attribute("optional; true when check() only reads state kept up to date "
                     "anyway (a broker's connections): its answer is not cached")

    def check() -> defer.Deferred:
        """Fire (with anything) when reachable; fail when not."""


class Health:
    """The server's health, from its parts (read, never copied).

    :param server: the composition root's :class:`~oro_sync.server.OroServer`.
    :param dependencies: :class:`IDependency` providers; more can be added
        with :meth:`add_dependency` (a broker built later).
    """

    log = Logger()

    def __init__(self, server: Any, reactor: Any, dependencies: list | None = None):
        self.server = server
        self.reactor = reactor
        self.dependencies: list[Any] = list(dependencies or [])
        self.started = reactor.seconds()
        self.shutting_down = False
        # name -> (up, detail, when): the last answers.
        self._states: dict[str, tuple[bool, str, float]] = {}
        self._checking: dict[str, defer.Deferred] = {}

    def add_dependency(self, dependency: Any) -> None:
        self.dependencies.append(dependency)

    def begin_shutdown(self) -> None:
        """From now on /health answers 503 (clients are being sent away)."""
        self.shutting_down = True

    # -- state --------------------------------------------------------------------

    def states(self) -> dict[str, dict[str, Any]]:
        """The last known state of every dependency (without asking again)."""
        out = {}
        for dep in self.dependencies:
            up, detail, _ = self._states.get(dep.name, (None, "not checked yet", 0.0))
            out[dep.name] = {"up": up, "detail": detail}
        return out

    def check_all(self) -> defer.Deferred:
        """Ask every dependency (reusing recent answers); fires with :meth:`states`."""
        return defer.gatherResults([self._check(dep) for dep in self.dependencies],
                                   consumeErrors=True).addCallback(lambda _: self.states())

    def _check(self, dep: Any) -> defer.Deferred:
        name = dep.name
        known = self._states.get(name)
        now = self.reactor.seconds()
        if known is not None and now - known[2] < CHECK_CACHE and not getattr(dep, "live", False):
            return defer.succeed(None)
        running = self._checking.get(name)
        if running is not None:
            d: defer.Deferred = defer.Deferred()
            running.addBoth(lambda r: (d.callback(None), r)[1])
            return d
        d = defer.maybeDeferred(dep.check)
        d.addTimeout(CHECK_TIMEOUT, self.reactor)
        d.addCallbacks(lambda _: self._set(name, True, "reachable"),
                       lambda f: self._set(name, False, _describe(f)))
        self._checking[name] = d
        d.addBoth(lambda r: (self._checking.pop(name, None), r)[1])
        return d

    def _set(self, name: str, up: bool, detail: str) -> None:
        before = self._states.get(name)
        self._states[name] = (up, detail, self.reactor.seconds())
        if before is None or before[0] != up:
            if up:
                self.log.info("{dependency} is up", dependency=name)
            else:
                self.log.warn("{dependency} is down: {detail}", dependency=name, detail=detail)

    # -- the report ----------------------------------------------------------------

    def report(self, states: dict[str, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for ``states`` of the dependencies."""
        factory = self.server.factory
        metrics = self.server.metrics
        down = sorted(name for name, s in states.items() if s["up"] is False)
        status = "shutting_down" if self.shutting_down else ("degraded" if down else "ok")
        body = {
            "status": status,
            "version": __version__,
            "uptime": round(self.reactor.seconds() - self.started, 3),
            "connections": {"total": connection_count(factory),
                            "by_protocol": dict(metrics.sessions)},
            "topics": len(factory.hub.topics.topics),
            "broker": broker_state(factory.hub.broker, states),
            "users": users_state(getattr(self.server, "users", None), states),
            "dependencies": states,
        }
        return (503 if status != "ok" else 200), body


def connection_count(factory: Any) -> int:
    """TCP connections (open sessions and handshakes in progress)."""
    return int(getattr(factory, "_connections", 0))


def broker_state(broker: Any, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the broker is and whether it is reachable (a local one always is)."""
    kind = type(broker).__name__
    state = states.get(getattr(broker, "name", "broker"))
    if state is None:
        return {"kind": kind, "up": True, "detail": "this node only"}
    figures = getattr(broker, "figures", None)  # node id, servers up, held, dropped...
    return {"kind": kind, **(figures() if callable(figures) else {}), **state}


def users_state(users: Any, states: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Where users come from and whether that is reachable (a file always is)."""
    if users is None:
        return None  # no auth section: nobody needs a ticket
    state = states.get(getattr(users, "name", ""), {"up": True, "detail": "in memory"})
    return {"kind": type(users).__name__, **state}


def _describe(failure: Any) -> str:
    if failure.check(defer.TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:g} s"
    text = str(failure.value).strip().splitlines()
    return f"{type(failure.value).__name__}: {text[0] if text else ''}".rstrip(": ")


__all__ = ["Health", "IDependency", "broker_state", "connection_count"]
