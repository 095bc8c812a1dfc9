"""Following Oro's configuration changes without a restart.

Oro 6.1.7+ and 7.0 bump ``oro_sync_websocket_server_state.updated_at``
when the system configuration changes, and Oro's own websocket server
restarts itself on that signal -- dropping every connection.
:class:`ServerStateWatcher` polls that table on a LoopingCall instead; when
a row changed it reads the application URL again and replaces the allowed
origin hosts in place, so every connection stays open and only later
handshakes see the new list.  Against an older Oro (no such table) it
compares the application URL itself on every poll, which follows the same
changes.

The queries run in the threads of a one-connection
:class:`~oro_sync.auth.sql_pool.ReconnectingPool` (read-only sessions).  A
database outage is one warning when it starts and one line when the database
is back; polling goes on meanwhile and the origins stay as they were.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.application import service
from twisted.internet import defer, task
from twisted.python.failure import Failure

from oro_sync.auth.sql_pool import ReconnectingPool, describe_error, read_only_opener
from oro_sync.auth.sql_url import parse_database_url
from oro_sync.logs import Logger
from oro_sync.oro.oro_db import fetch_application_url, fetch_server_state

#: Seconds between two polls of Oro's database by default.
DEFAULT_RELOAD_INTERVAL = 10.0

_NOT_READ = object()


class ServerStateWatcher(service.Service):
    """Polls Oro's server state and reloads the origins of ``policy``.

    :param database_url: Oro's database (the SQL user provider's URL format).
    :param policy: the factory's OriginPolicy, changed in place.
    :param allowed: the configured ``origins.allowed`` (kept on every reload).
    :param fallback_url: the configured application URL, used while the
        database holds none.
    :param interval: seconds between polls.
    :param clock: what the LoopingCall runs on (the reactor; a task.Clock in tests).
    """

    log = Logger()

    def __init__(self, database_url: str, policy: Any, allowed: Iterable[str] = (),
                 fallback_url: str | None = None, interval: float = DEFAULT_RELOAD_INTERVAL,
                 clock: Any = None, reactor: Any = None):
        self.url = parse_database_url(database_url)  # ValueError for a bad URL, at build time
        self.policy = policy
        self.allowed = list(allowed)
        self.fallback_url = fallback_url
        self.interval = interval
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        #: The last state rows seen (None: the table is missing).
        self.state: Any = _NOT_READ
        #: The application URL the origins were last built from.
        self.application_url: Any = _NOT_READ
        self.reloads = 0
        self._pool: ReconnectingPool | None = None
        self._loop: task.LoopingCall | None = None
        self._failing = False
        self._table_missing = False
        self._running_poll: defer.Deferred | None = None

    @property
    def description(self) -> str:
        return self.url.description

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        # The pool's threads start here, not when the server is built.
        self._pool = ReconnectingPool(
            self.url.dbapi_name, cp_min=1, cp_max=1, cp_noisy=False, cp_reconnect=True,
            cp_name="oro-sync-server-state", cp_openfun=read_only_opener(self.url.dbapi_name),
            cp_reactor=self.reactor, **self.url.connect_kwargs)
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[override]
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._running_poll is not None:
            yield self._running_poll  # never fails: poll() logs its errors
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- polling ------------------------------------------------------------------

    def poll(self) -> defer.Deferred:
        """One poll: read the state, and the application URL when it changed.
        Fires when done; never fails (errors are logged)."""
        d = self._running_poll = self._poll()
        d.addBoth(self._poll_done)
        return d

    def when_idle(self) -> defer.Deferred:
        """Fires once no poll is running (at once if none is)."""
        running = self._running_poll
        if running is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()

        def done(result: Any) -> Any:
            d.callback(None)
            return result

        running.addBoth(done)
        return d

    def _poll_done(self, result: Any) -> None:
        self._running_poll = None
        if isinstance(result, Failure):  # a bug, not the database
            self.log.failure("polling {db} failed", result, db=self.description)

    @defer.inlineCallbacks
    def _poll(self):
        pool = self._pool
        if pool is None:
            return
        try:
            state = yield self._read_state(pool)
            if state is not None and state == self.state and self.application_url is not _NOT_READ:
                self._recovered()
                return
            url = yield pool.runInteraction(fetch_application_url)
        except pool.dbapi.Error as e:
            self._outage(e)
            return
        self._recovered()
        self.state = state
        self._apply(url)

    @defer.inlineCallbacks
    def _read_state(self, pool: ReconnectingPool):
        """The state rows, or None when Oro has no such table (before 6.1.7)."""
        try:
            state = yield pool.runInteraction(fetch_server_state)
        except pool.dbapi.ProgrammingError as e:
            if not self._table_missing:
                self._table_missing = True
                self.log.info("{db} has no websocket server state ({error}): comparing the "
                              "application URL every {interval} s instead",
                              db=self.description, error=describe_error(e), interval=self.interval)
            return None
        self._table_missing = False
        return state

    def _apply(self, url: str | None) -> None:
        if url == self.application_url:
            return
        effective = url or self.fallback_url
        self.policy.replace_hosts(self.allowed, effective)
        self.application_url = url
        self.reloads += 1
        self.log.info("origins from {db}: application URL {url}, hosts {hosts}",
                      db=self.description, url=effective, hosts=", ".join(sorted(self.policy.hosts)))

    def _outage(self, error: BaseException) -> None:
        if not self._failing:
            self._failing = True
            self.log.warn("cannot read Oro's configuration from {db} ({error}); origins stay "
                          "as they are, retrying every {interval} s",
                          db=self.description, error=describe_error(error), interval=self.interval)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            self.log.info("{db} is reachable again", db=self.description)
