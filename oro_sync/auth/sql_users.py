"""Users from Oro's own ``oro_user`` table (PostgreSQL or MySQL/MariaDB).

For a server next to an Oro installation: tickets are signed with the
user's stored password hash, so the hash must come from where Oro keeps it.
:class:`SqlUserProvider` reads the columns ``id, username, email, password,
enabled`` (optionally an organization column) with psycopg2 or PyMySQL
through a small adbapi pool (:mod:`oro_sync.auth.sql_pool`), so lookups
never block the reactor.  Build one from a URL (format in
:mod:`oro_sync.auth.sql_url`)::

    sql_user_provider_from_url("postgresql://oro:secret@127.0.0.1:5432/oro")
    sql_user_provider_from_url("mysql://root@127.0.0.1:3306/oro?cache_ttl=10")

Lookups follow :meth:`oro_sync.auth.interfaces.IUserProvider.findUser` in
one query.  Case sensitivity is the database's: PostgreSQL compares
exactly, MySQL's default ``*_ci`` collations do not.

Caching: found users are cached for ``cache_ttl`` seconds, misses (unknown
or disabled) for the shorter ``miss_ttl``, in a bounded LRU map.  A browser
reconnect storm after a server restart therefore costs one query per user,
and concurrent lookups of the same name share one query.  The price is that
a changed password hash (or a disabled account) takes up to ``cache_ttl``
to be noticed; :meth:`SqlUserProvider.invalidate` drops entries early.
Time comes from an injectable ``IReactorTime`` (tests use
``twisted.internet.task.Clock``).

Roles are not read (Oro keeps them in other tables); SQL records have an
empty ``roles`` tuple.

Failures: when the database cannot be asked the Deferred fails with
:class:`~oro_sync.auth.interfaces.UserLookupError` (never cached), so
callers can reject the ticket and log, instead of treating an outage as
"unknown user".  A connection lost because the database restarted is
retried once on a fresh connection inside the same lookup, so the first
lookup after a restart succeeds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from oro_sync.auth.expiring import ExpiringMap
from oro_sync.auth.interfaces import (
    IUserProvider, UserLookupError, UserRecord, usable_lookup_key,
)
from oro_sync.auth.sql_pool import ReconnectingPool, describe_error, read_only_opener
from oro_sync.auth.sql_url import parse_database_url
from oro_sync.logs import Logger

__all__ = ["SqlUserProvider", "sql_user_provider_from_url"]

log = Logger(namespace=__name__)


#: Cached misses are ``None``, so "not cached" needs its own marker.
_MISSING = object()


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?\Z")


def _check_identifier(name: str, what: str) -> str:
    # Identifiers cannot be parameters; they come from configuration, but a
    # strict pattern still keeps them from ever carrying SQL.
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} must be an SQL identifier (letters, digits, _), got {name!r}")
    return name


def _placeholder(paramstyle: str) -> tuple[Callable[[int], str], bool]:
    """(placeholder for the n-th use of the lookup value, uses-a-mapping)."""
    if paramstyle == "pyformat":
        return (lambda n: "%(key)s"), True
    if paramstyle == "named":
        return (lambda n: ":key"), True
    if paramstyle == "format":
        return (lambda n: "%s"), False
    if paramstyle == "qmark":
        return (lambda n: "?"), False
    if paramstyle == "numeric":
        return (lambda n: ":1"), False
    raise ValueError(f"unsupported DB-API paramstyle {paramstyle!r}")


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8")
    return str(value)



@implementer(IUserProvider)
class SqlUserProvider:
    """Users from Oro's ``oro_user`` table, through an adbapi connection pool.

    ``dbapi_name`` is the DB-API module (``"psycopg2"`` or ``"pymysql"``;
    others work if they follow DB-API 2.0) and ``connect_kwargs`` go to its
    ``connect()``.  Prefer :func:`sql_user_provider_from_url`.  Call
    :meth:`close` when done: it stops the pool's threads.
    """

    def __init__(
        self,
        dbapi_name: str,
        connect_kwargs: Mapping[str, Any],
        *,
        table: str = "oro_user",
        organization_column: str | None = None,
        cache_ttl: float = 30.0,
        miss_ttl: float = 5.0,
        cache_size: int = 1024,
        cp_min: int = 1,
        cp_max: int = 3,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        description: str | None = None,
    ):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if cache_ttl < 0 or miss_ttl < 0 or cache_size < 0:
            raise ValueError("cache_ttl, miss_ttl and cache_size must not be negative")
        if cp_min < 0 or cp_max < 1:
            raise ValueError("need cp_min >= 0 and cp_max >= 1")
        self._clock: IReactorTime = clock if clock is not None else reactor
        self.cache_ttl = float(cache_ttl)
        self.miss_ttl = float(miss_ttl)
        self._cache: ExpiringMap[str, UserRecord | None] = ExpiringMap(cache_size, self._clock)
        self._inflight: dict[str, list[Deferred[UserRecord | None]]] = {}
        self._closed = False
        self.description = description or dbapi_name
        self.stats = {"hits": 0, "queries": 0, "reconnects": 0, "errors": 0}

        table = _check_identifier(table, "table")
        columns = ["id", "username", "email", "password", "enabled"]
        self._with_organization = organization_column is not None
        if organization_column is not None:
            columns.append(_check_identifier(organization_column, "organization_column"))

        connect_kwargs = dict(connect_kwargs)
        self._pool = ReconnectingPool(
            dbapi_name,
            cp_min=cp_min,
            cp_max=cp_max,
            cp_noisy=False,
            cp_reconnect=True,
            cp_name=f"oro-sync-users-{dbapi_name}",
            cp_openfun=read_only_opener(dbapi_name),
            cp_reactor=reactor,
            **connect_kwargs,
        )
        dbapi = self._pool.dbapi
        # Only these mean "the connection is gone"; retrying on a fresh
        # connection is safe because the lookup is a read-only SELECT.
        self._retryable: tuple[type[BaseException], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
        )
        mark, named = _placeholder(dbapi.paramstyle)
        self._named_params = named
        # One round trip: the username match sorts first, else the email
        # match with the lowest id; the CASE keeps this portable.
        self._sql = (
            f"SELECT {', '.join(columns)},"
            f" CASE WHEN username = {mark(1)} THEN 1 ELSE 0 END AS by_username"
            f" FROM {table}"
            f" WHERE username = {mark(2)} OR email = {mark(3)}"
            f" ORDER BY by_username DESC, id LIMIT 1"
        )

    #: What /health calls this dependency (oro_sync.ops.health.IDependency).
    name = "user_database"

    def check(self) -> Deferred:
        """Fire when the database answers ``SELECT 1``; fail when it cannot be
        reached (for /health: a down database means no user can log in)."""
        if self._closed:
            return fail(UserLookupError(f"user provider {self.description} is closed"))
        return self._pool.runQuery("SELECT 1")

    # -- IUserProvider ------------------------------------------------------

    def findUser(self, username_or_email: str) -> Deferred[UserRecord | None]:
        if self._closed:
            return fail(UserLookupError(f"user provider {self.description} is closed"))
        key = username_or_email
        if not usable_lookup_key(key):
            return succeed(None)
        cached = self._cache.get(key, default=_MISSING)
        if cached is not _MISSING:
            self.stats["hits"] += 1
            return succeed(cached)
        waiters = self._inflight.get(key)
        if waiters is None:
            waiters = self._inflight[key] = []
            self.stats["queries"] += 1
            query = self._pool.runInteraction(self._lookup, key)
            query.addBoth(self._answered, key)
        waiter: Deferred[UserRecord | None] = Deferred()
        waiters.append(waiter)
        return waiter

    # -- cache control ------------------------------------------------------

    def invalidate(self, username_or_email: str | None = None) -> None:
        """Forget one cached answer, or all of them.

        For a caller that knows better, e.g. after a digest mismatch it may
        invalidate and look the user up again in case the hash changed.
        """
        if username_or_email is None:
            self._cache.clear()
        else:
            self._cache.pop(username_or_email)

    @property
    def cached(self) -> int:
        """Number of cached answers (found users and misses)."""
        return len(self._cache)

    def close(self) -> None:
        """Stop the pool's threads and close its connections.

        Synchronous: waits for a lookup already running in a pool thread
        (bounded by the connection/read timeouts).  Later lookups fail
        with :class:`UserLookupError`.
        """
        if self._closed:
            return
        self._closed = True
        self._cache.clear()
        # Work still queued for the pool's threads may never run once they
        # stop: answer its waiters now rather than leave them hanging.
        inflight, self._inflight = self._inflight, {}
        self._pool.close()
        for waiters in inflight.values():
            for waiter in waiters:
                waiter.errback(
                    Failure(UserLookupError(f"user provider {self.description} was closed"))
                )

    # -- internals ----------------------------------------------------------

    def _params(self, key: str) -> Mapping[str, str] | tuple[str, ...]:
        return {"key": key} if self._named_params else (key, key, key)

    def _lookup(self, txn: adbapi.Transaction, key: str) -> tuple[Any, bool]:
        """Run in a pool thread: the query, retried once on a lost connection."""
        params = self._params(key)
        try:
            txn.execute(self._sql, params)
            return txn.fetchone(), False
        except self._retryable as exc:
            # Typically the database restarted since this thread's connection
            # was opened.  adbapi's own cp_reconnect would only notice in the
            # rollback and fail this lookup; reconnecting here makes it succeed.
            log.warn(
                "Lost the {description} connection ({error}); reconnecting",
                description=self.description,
                error=describe_error(exc),
            )
        txn.reconnect()
        txn.reopen()
        txn.execute(self._sql, params)
        return txn.fetchone(), True

    def _record(self, row: Sequence[Any] | None) -> UserRecord | None:
        if row is None:
            return None
        return UserRecord(
            id=int(row[0]),
            username=_text(row[1]),
            email=None if row[2] is None else _text(row[2]),
            password=_text(row[3]),
            enabled=bool(row[4]),
            organization_id=(
                int(row[5]) if self._with_organization and row[5] is not None else None
            ),
        )

    def _answered(self, result: tuple[Any, bool] | Failure, key: str) -> None:
        waiters = self._inflight.pop(key, [])
        if self._closed and not waiters:
            return None  # already answered by close()
        outcome: UserRecord | None | Failure
        if isinstance(result, Failure):
            self.stats["errors"] += 1
            log.warn(
                "User lookup in {description} failed: {error}",
                description=self.description,
                error=describe_error(result.value),
            )
            error = UserLookupError(
                f"user lookup in {self.description} failed: {describe_error(result.value)}"
            )
            error.__cause__ = result.value
            outcome = Failure(error)
        else:
            row, reconnected = result
            if reconnected:
                self.stats["reconnects"] += 1
            try:
                record = self._record(row)
            except (TypeError, ValueError, UnicodeDecodeError) as exc:
                self.stats["errors"] += 1
                outcome = Failure(UserLookupError(f"unexpected oro_user row: {exc}"))
            else:
                # Disabled users are misses: they cannot log in, and should
                # be re-read as quickly as unknown names once re-enabled.
                if record is not None and not record.enabled:
                    record = None
                if not self._closed:
                    ttl = self.cache_ttl if record is not None else self.miss_ttl
                    if ttl > 0:
                        self._cache.put(key, record, self._clock.seconds() + ttl)
                outcome = record
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    def __repr__(self) -> str:
        return f"<SqlUserProvider {self.description}>"


def sql_user_provider_from_url(url: str, **overrides: Any) -> SqlUserProvider:
    """Build a :class:`SqlUserProvider` from a database URL (see
    :mod:`oro_sync.auth.sql_url`).

    ``overrides`` are :class:`SqlUserProvider` keyword arguments (``clock``,
    ``reactor``, ``cache_ttl``...) and win over the URL's query parameters.
    Raises ``ValueError`` for an unknown scheme, a bad port or option.
    """
    parsed = parse_database_url(url)
    options = {**parsed.options, **overrides}
    options.setdefault("description", parsed.description)
    provider = SqlUserProvider(parsed.dbapi_name, parsed.connect_kwargs, **options)
    log.info("Reading users from {description}", description=provider.description)
    return provider
