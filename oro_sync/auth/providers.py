"""Where users come from: a YAML users file, or Oro's own ``oro_user`` table.

Ticket verification needs one thing from a user store: given the username
(or email) inside a ticket, the user's id and *stored password hash*, which
is the "password" the ticket digest was made with.  Two providers implement
:class:`~oro_sync.auth.interfaces.IUserProvider`:

:class:`YamlUserProvider` -- standalone deployments and tests
    Users live in a YAML file (or an already-loaded mapping)::

        users:
          - id: 1                            # required, positive integer, unique
            username: admin                  # required, unique
            email: admin@example.com         # optional, unique
            password: "aGFzaA=="             # required: the *stored* hash, verbatim
            enabled: true                    # optional, default true
            roles: [ROLE_ADMINISTRATOR]      # optional, list of strings
            organization_id: 1               # optional integer

    ``password`` is whatever the ticket issuer uses as the user's password
    (for an Oro installation: ``oro_user.password`` copied verbatim), never a
    clear-text password.  Quote it: YAML would turn ``12345`` into a number,
    which is rejected.  Unknown keys, duplicate ids/usernames/emails and
    wrong types are errors (:class:`UserFileError`), because a typo in a
    credentials file should stop the server rather than lock users out
    silently.  :meth:`YamlUserProvider.reload` re-reads the file and keeps
    the old table if the new one is invalid.

:class:`SqlUserProvider` -- next to an Oro installation
    Reads Oro's ``oro_user`` table (columns ``id, username, email, password,
    enabled``; optionally an organization column) from PostgreSQL (psycopg2)
    or MySQL/MariaDB (PyMySQL) through a small
    :class:`twisted.enterprise.adbapi.ConnectionPool`, so lookups never block
    the reactor.  Build one from a URL::

        sql_user_provider_from_url("postgresql://oro:secret@127.0.0.1:5432/oro")
        sql_user_provider_from_url("mysql://root@127.0.0.1:3306/oro?cache_ttl=10")

    Schemes: ``postgresql``/``postgres``/``pgsql``/``postgresql+psycopg2``
    and ``mysql``/``mariadb``/``mysql+pymysql``.  User name, password (both
    URL-decoded), host, port and database come from the URL.  Query
    parameters:

    * provider options: ``table`` (default ``oro_user``, may be
      ``schema.table``), ``organization_column`` (e.g. ``organization_id``;
      off by default), ``cache_ttl`` (seconds, default 30), ``miss_ttl``
      (default 5), ``cache_size`` (entries, default 1024), ``cp_min`` (1),
      ``cp_max`` (3);
    * PostgreSQL: any other parameter is a libpq connection keyword passed
      through (``sslmode``, ``host=/var/run/postgresql`` for a Unix socket,
      ``connect_timeout`` ...);
    * MySQL: ``unix_socket``, ``charset``, ``connect_timeout``,
      ``read_timeout``, ``write_timeout``, ``ssl_ca``, ``ssl_cert``,
      ``ssl_key``, ``ssl_verify_cert``, ``ssl_verify_identity``,
      ``ssl_disabled``, ``read_default_file``; anything else is rejected.
      (Without TLS options PyMySQL tries unverified TLS when the server
      offers it; give ``ssl_ca`` and ``ssl_verify_cert=true`` to verify.)

Lookup semantics (both providers, as Oro's
``findUserByUsernameOrEmail``): the user whose username matches exactly
wins; only when no username matches is the email tried.  A matching but
disabled user yields ``None`` (the search does not fall through to
another user's email).  Case sensitivity is the database's: PostgreSQL
compares exactly, MySQL's default ``*_ci`` collations do not.  Input that
cannot match (not a string, empty, longer than the 255-character columns,
containing NUL) is answered with ``None`` without a query.

Caching: found users are cached for ``cache_ttl`` seconds, misses (unknown
or disabled) for the shorter ``miss_ttl``, in a bounded LRU map.  A browser
reconnect storm after a server restart therefore costs one query per user,
and concurrent lookups of the same name share one query.  The price is
that a changed password hash (or a disabled account) takes up to
``cache_ttl`` to be noticed; :meth:`SqlUserProvider.invalidate` drops
entries early.  Time comes from an injectable ``IReactorTime`` (tests use
``twisted.internet.task.Clock``).

Roles are not read (Oro keeps them in other tables); SQL records have an
empty ``roles`` tuple.

Failures: when the database cannot be asked the Deferred fails with
:class:`UserLookupError` (never cached), so callers can reject the ticket
and log, instead of treating an outage as "unknown user".  A connection
lost because the database restarted is retried once on a fresh connection
inside the same lookup, so the first lookup after a restart succeeds.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from oro_sync.logs import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from oro_sync.auth.interfaces import IUserProvider, UserRecord

__all__ = [
    "MAX_LOOKUP_LENGTH",
    "SqlUserProvider",
    "UserFileError",
    "UserLookupError",
    "YamlUserProvider",
    "sql_user_provider_from_url",
]

log = Logger(namespace=__name__)

#: Oro's ``username`` and ``email`` columns are ``VARCHAR(255)``: longer input
#: cannot match, so it is refused before reaching the database.
MAX_LOOKUP_LENGTH = 255


class UserLookupError(Exception):
    """The user store could not be asked (database down, bad schema...).

    Distinct from "no such user" (``None``) so an outage is logged and
    reported as such instead of looking like a wrong ticket.
    """


class UserFileError(ValueError):
    """A users file (or mapping) is malformed."""


def _usable_key(value: object) -> bool:
    """Whether ``value`` could possibly name a user (else: ``None``, no query)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_LOOKUP_LENGTH
        and "\x00" not in value
    )


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------

_USER_KEYS = frozenset(
    {"id", "username", "email", "password", "enabled", "roles", "organization_id"}
)


def _is_int(value: object) -> bool:
    # bool is an int subclass; ``id: true`` is a typo, not user 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_user(entry: object, where: str) -> UserRecord:
    if not isinstance(entry, Mapping):
        raise UserFileError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - _USER_KEYS
    if unknown:
        raise UserFileError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
            f" (allowed: {', '.join(sorted(_USER_KEYS))})"
        )
    user_id = entry.get("id")
    if not _is_int(user_id) or user_id <= 0:
        raise UserFileError(f"{where}: 'id' must be a positive integer")
    username = entry.get("username")
    if not isinstance(username, str) or not username:
        raise UserFileError(f"{where}: 'username' must be a non-empty string")
    password = entry.get("password")
    if not isinstance(password, str) or not password:
        raise UserFileError(
            f"{where}: 'password' must be a non-empty string (the stored hash; quote it)"
        )
    email = entry.get("email")
    if email is not None and (not isinstance(email, str) or not email):
        raise UserFileError(f"{where}: 'email' must be a non-empty string or absent")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UserFileError(f"{where}: 'enabled' must be true or false")
    roles = entry.get("roles", ())
    if roles is None:
        roles = ()
    if not isinstance(roles, (list, tuple)) or not all(
        isinstance(r, str) and r for r in roles
    ):
        raise UserFileError(f"{where}: 'roles' must be a list of strings")
    organization_id = entry.get("organization_id")
    if organization_id is not None and not _is_int(organization_id):
        raise UserFileError(f"{where}: 'organization_id' must be an integer or absent")
    return UserRecord(
        id=user_id,
        username=username,
        password=password,
        email=email,
        enabled=enabled,
        roles=tuple(roles),
        organization_id=organization_id,
    )


def _parse_users(data: object, source: str) -> list[UserRecord]:
    """Validate a whole users document; raise :class:`UserFileError` on any fault."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserFileError(f"{source}: expected a mapping with a 'users' list")
    unknown = set(data) - {"users"}
    if unknown:
        raise UserFileError(
            f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}"
        )
    entries = data.get("users")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise UserFileError(f"{source}: 'users' must be a list")
    records: list[UserRecord] = []
    seen: dict[str, dict[object, int]] = {"id": {}, "username": {}, "email": {}}
    for index, entry in enumerate(entries):
        where = f"{source}: users[{index}]"
        record = _parse_user(entry, where)
        for attr in ("id", "username", "email"):
            value = getattr(record, attr)
            if value is None:
                continue
            if value in seen[attr]:
                raise UserFileError(
                    f"{where}: duplicate {attr} {value!r}"
                    f" (also users[{seen[attr][value]}])"
                )
            seen[attr][value] = index
        records.append(record)
    return records


@implementer(IUserProvider)
class YamlUserProvider:
    """Users from a YAML file or mapping (format in the module docstring).

    Everything is in memory, so lookups answer synchronously (an
    already-fired Deferred); no cache is needed.
    """

    def __init__(self, source: str | os.PathLike[str] | Mapping[str, Any]):
        if isinstance(source, (str, os.PathLike)):
            self._path: str | None = os.fspath(source)
            self.reload()
        else:
            # An already-loaded document (e.g. a section of the main config).
            self._path = None
            self._install(_parse_users(source, "<users mapping>"))

    @property
    def path(self) -> str | None:
        """The users file, or ``None`` for a mapping."""
        return self._path

    @property
    def users(self) -> tuple[UserRecord, ...]:
        """All users, enabled or not, in file order."""
        return self._users

    def reload(self) -> None:
        """Re-read the users file (e.g. on SIGHUP).

        On any error the previous table stays in place and the error is
        raised, so a half-edited file cannot lock everybody out.
        """
        if self._path is None:
            return
        try:
            with open(self._path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except OSError as exc:
            raise UserFileError(f"{self._path}: cannot read users file: {exc}") from exc
        except yaml.YAMLError as exc:
            raise UserFileError(f"{self._path}: invalid YAML: {exc}") from exc
        records = _parse_users(data, self._path)
        self._install(records)
        log.info(
            "Loaded {count} user(s) from {path}", count=len(records), path=self._path
        )

    def _install(self, records: list[UserRecord]) -> None:
        self._users = tuple(records)
        self._by_username = {r.username: r for r in records}
        self._by_email = {r.email: r for r in records if r.email is not None}

    def lookup(self, username_or_email: str) -> UserRecord | None:
        """Synchronous form of :meth:`findUser`."""
        if not _usable_key(username_or_email):
            return None
        record = self._by_username.get(username_or_email)
        if record is None:
            record = self._by_email.get(username_or_email)
        if record is None or not record.enabled:
            return None
        return record

    def findUser(self, username_or_email: str) -> Deferred[UserRecord | None]:
        return succeed(self.lookup(username_or_email))

    def close(self) -> None:
        """Nothing to release; present so providers are interchangeable."""


# ---------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------

_MISSING = object()


class _TtlCache:
    """A small LRU map whose entries also expire.

    Bounded so that a flood of tickets naming random users cannot grow
    memory without limit (misses are cached too).
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._data: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    def get(self, key: str, now: float) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return _MISSING
        value, expires = entry
        if now >= expires:
            del self._data[key]
            return _MISSING
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: Any, expires: float) -> None:
        if self.max_size <= 0:
            return
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _Connection(adbapi.Connection):
    """adbapi's connection wrapper, quiet about connections already known dead.

    Stock adbapi (with ``cp_reconnect``) reports a failed rollback through
    ``log.err`` -- an error with a traceback -- even when the connection was
    merely lost because the database restarted.  Here a connection that the
    interaction already discarded has nothing to roll back, and a rollback
    that fails just drops the connection so the next lookup opens a new one.
    """

    def rollback(self) -> None:
        pool = self._pool
        if self._connection is not pool.connections.get(pool.threadID()):
            return
        try:
            self._connection.rollback()
        except Exception as exc:
            log.warn(
                "Dropping a broken {driver} connection: {error}",
                driver=pool.dbapiName,
                error=_describe(exc),
            )
            pool.disconnect(self._connection)


class _Transaction(adbapi.Transaction):
    """adbapi's cursor wrapper, reconnecting quietly if a cursor cannot be made."""

    def reopen(self) -> None:
        if self._cursor is not None:
            self.close()
        try:
            self._cursor = self._connection.cursor()
            return
        except Exception as exc:
            log.warn(
                "Cannot open a cursor ({error}); reconnecting", error=_describe(exc)
            )
        self.reconnect()
        self._cursor = self._connection.cursor()


class _Pool(adbapi.ConnectionPool):
    connectionFactory = _Connection
    transactionFactory = _Transaction

    def _close(self, conn: Any) -> None:
        # A connection to a dead server may refuse to close; that is not an
        # error worth a traceback (stock adbapi uses log.err here).
        try:
            conn.close()
        except Exception as exc:
            log.debug("Closing a database connection failed: {error}", error=_describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


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


def _psycopg2_open(conn: Any) -> None:
    # The provider only reads; a read-only session turns any mistake (or
    # injection that somehow got through) into an error instead of a write.
    conn.set_session(readonly=True)


def _pymysql_open(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION READ ONLY")


_OPENERS: dict[str, Callable[[Any], None]] = {
    "psycopg2": _psycopg2_open,
    "pymysql": _pymysql_open,
}


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
        self._cache = _TtlCache(cache_size)
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
        self._pool = _Pool(
            dbapi_name,
            cp_min=cp_min,
            cp_max=cp_max,
            cp_noisy=False,
            cp_reconnect=True,
            cp_name=f"oro-sync-users-{dbapi_name}",
            cp_openfun=self._opener(dbapi_name),
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

    def _opener(self, dbapi_name: str) -> Callable[[Any], None] | None:
        opener = _OPENERS.get(dbapi_name)
        if opener is None:
            return None

        def open_connection(conn: Any) -> None:
            # A failing opener would otherwise leak the fresh connection.
            try:
                opener(conn)
            except BaseException:
                try:
                    conn.close()
                except Exception:
                    pass
                raise

        return open_connection

    # -- IUserProvider ------------------------------------------------------

    def findUser(self, username_or_email: str) -> Deferred[UserRecord | None]:
        if self._closed:
            return fail(UserLookupError(f"user provider {self.description} is closed"))
        key = username_or_email
        if not _usable_key(key):
            return succeed(None)
        cached = self._cache.get(key, self._clock.seconds())
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
                error=_describe(exc),
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
                error=_describe(result.value),
            )
            error = UserLookupError(
                f"user lookup in {self.description} failed: {_describe(result.value)}"
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


# ---------------------------------------------------------------------------
# Configuration from a URL
# ---------------------------------------------------------------------------

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "pgsql", "postgresql+psycopg2"})
_MYSQL_SCHEMES = frozenset({"mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql"})

_PROVIDER_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "organization_column": str,
    "cache_ttl": float,
    "miss_ttl": float,
    "cache_size": int,
    "cp_min": int,
    "cp_max": int,
}


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_MYSQL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "unix_socket": str,
    "charset": str,
    "connect_timeout": int,
    "read_timeout": int,
    "write_timeout": int,
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_verify_cert": _boolean,
    "ssl_verify_identity": _boolean,
    "ssl_disabled": _boolean,
    "read_default_file": str,
}


def _redacted(parts: Any) -> str:
    """The URL without its password, for logs and reprs."""
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        secret = ":***" if parts.password is not None else ""
        netloc = f"{unquote(parts.username)}{secret}@{netloc}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def sql_user_provider_from_url(url: str, **overrides: Any) -> SqlUserProvider:
    """Build a :class:`SqlUserProvider` from a database URL (see module docs).

    ``overrides`` are :class:`SqlUserProvider` keyword arguments (``clock``,
    ``reactor``, ``cache_ttl``...) and win over the URL's query parameters.
    Raises ``ValueError`` for an unknown scheme, a bad port or option.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in database URL: {exc}") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    database = unquote(parts.path.lstrip("/")) or None
    host = parts.hostname

    options: dict[str, Any] = {}
    driver_options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _PROVIDER_OPTIONS:
            try:
                options[name] = _PROVIDER_OPTIONS[name](value)
            except ValueError:
                raise ValueError(f"bad value for {name!r} in database URL: {value!r}") from None
        else:
            driver_options[name] = value

    connect: dict[str, Any]
    if scheme in _POSTGRES_SCHEMES:
        dbapi_name = "psycopg2"
        connect = {"connect_timeout": "5", "application_name": "oro-sync"}
        for key, value in (
            ("host", host),
            ("port", port),
            ("user", user),
            ("password", password),
            ("dbname", database),
        ):
            if value is not None:
                connect[key] = value
        # libpq keywords pass through (sslmode, keepalives, host=/socket/dir...).
        connect.update(driver_options)
    elif scheme in _MYSQL_SCHEMES:
        dbapi_name = "pymysql"
        connect = {
            "connect_timeout": 5,
            "read_timeout": 30,
            "write_timeout": 30,
            "charset": "utf8mb4",
        }
        for key, value in (
            ("host", host),
            ("port", port),
            ("user", user),
            ("password", password),
            ("database", database),
        ):
            if value is not None:
                connect[key] = value
        for name, value in driver_options.items():
            convert = _MYSQL_OPTIONS.get(name)
            if convert is None:
                raise ValueError(
                    f"unknown MySQL option {name!r} in database URL"
                    f" (known: {', '.join(sorted(_MYSQL_OPTIONS))})"
                )
            try:
                connect[name] = convert(value)
            except ValueError:
                raise ValueError(f"bad value for {name!r} in database URL: {value!r}") from None
    else:
        raise ValueError(
            f"unsupported database URL scheme {parts.scheme!r}"
            " (use postgresql://... or mysql://...)"
        )

    options.update(overrides)
    options.setdefault("description", _redacted(parts))
    provider = SqlUserProvider(dbapi_name, connect, **options)
    log.info("Reading users from {description}", description=provider.description)
    return provider
