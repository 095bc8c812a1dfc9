"""An adbapi connection pool that survives database restarts quietly.

Stock :class:`twisted.enterprise.adbapi.ConnectionPool` (with
``cp_reconnect``) notices a lost connection only when a rollback fails, and
reports that through ``log.err`` with a traceback, although a restarted
database is routine.  :class:`ReconnectingPool` drops such connections with
one warning and reopens cursors on a fresh connection, so that the next
lookup works.  Used by :mod:`oro_sync.auth.sql_users`; kept apart because
none of it is about users.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.enterprise import adbapi

from oro_sync.logs import Logger

__all__ = ["ReconnectingPool", "describe_error", "read_only_opener"]

log = Logger(namespace=__name__)


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
                error=describe_error(exc),
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
                "Cannot open a cursor ({error}); reconnecting", error=describe_error(exc)
            )
        self.reconnect()
        self._cursor = self._connection.cursor()


class ReconnectingPool(adbapi.ConnectionPool):
    """adbapi's pool with the quiet connection and cursor wrappers above."""

    connectionFactory = _Connection
    transactionFactory = _Transaction

    def _close(self, conn: Any) -> None:
        # A connection to a dead server may refuse to close; that is not an
        # error worth a traceback (stock adbapi uses log.err here).
        try:
            conn.close()
        except Exception as exc:
            log.debug("Closing a database connection failed: {error}", error=describe_error(exc))


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``: enough for a log line, no traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _psycopg2_open(conn: Any) -> None:
    # User lookups only read; a read-only session turns any mistake (or
    # injection that somehow got through) into an error instead of a write.
    conn.set_session(readonly=True)


def _pymysql_open(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION READ ONLY")


_OPENERS: dict[str, Callable[[Any], None]] = {
    "psycopg2": _psycopg2_open,
    "pymysql": _pymysql_open,
}


def read_only_opener(dbapi_name: str) -> Callable[[Any], None] | None:
    """``cp_openfun`` making each new connection read-only (None: no known way).

    A failing opener would otherwise leak the fresh connection, so it is
    closed before the error propagates.
    """
    opener = _OPENERS.get(dbapi_name)
    if opener is None:
        return None

    def open_connection(conn: Any) -> None:
        try:
            opener(conn)
        except BaseException:
            try:
                conn.close()
            except Exception:
                pass
            raise

    return open_connection
