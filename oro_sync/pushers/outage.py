"""One log line when a pusher's server goes away, one when it is back.

A pusher reconnecting with back-off would otherwise log every failed
attempt; an operator wants to know when the outage began, that it
ended, and how long it lasted.
"""

from __future__ import annotations

from typing import Any

from oro_sync.logs import Logger


class Outage:
    """Tracks whether ``what`` (e.g. ``Redis 127.0.0.1:6379``) is reachable."""

    log = Logger()

    def __init__(self, what: str, clock: Any):
        self.what = what
        self.clock = clock
        #: When the current outage began (None while connected or before
        #: the first connection).
        self.since: float | None = None
        self.connected = False
        #: Outages seen (for tests and metrics).
        self.count = 0

    def up(self) -> None:
        """Connected (again)."""
        if self.connected:
            return
        self.connected = True
        if self.since is None:
            self.log.info("{what}: connected", what=self.what)
        else:
            self.log.warn("{what}: reconnected after {seconds:.1f} s", what=self.what,
                          seconds=self.clock.seconds() - self.since)
            self.since = None

    def down(self, why: str) -> None:
        """The connection was lost, or an attempt failed."""
        if self.since is not None:
            return  # already in an outage: said once
        self.connected = False
        self.since = self.clock.seconds()
        self.count += 1
        self.log.warn("{what}: unreachable ({why}); reconnecting with back-off",
                      what=self.what, why=why or "connection lost")


class WatchedEndpoint:
    """A client endpoint that tells an :class:`Outage` about failed
    connection attempts (the reconnecting service retries them quietly)."""

    def __init__(self, endpoint: Any, outage: Outage):
        self.endpoint = endpoint
        self.outage = outage

    def connect(self, factory: Any) -> Any:
        d = self.endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Any) -> Any:
        self.outage.down(failure.getErrorMessage())
        return failure
