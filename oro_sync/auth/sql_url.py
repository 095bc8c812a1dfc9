"""Database URLs for the SQL user provider: scheme, credentials and options.

Pure parsing, no connection: :func:`parse_database_url` turns::

    postgresql://oro:secret@127.0.0.1:5432/oro
    mysql://root@127.0.0.1:3306/oro?cache_ttl=10

into the DB-API module name, its ``connect()`` keywords and the
:class:`~oro_sync.auth.sql_users.SqlUserProvider` options, so the rules can
be tested without a database and the provider module stays about lookups.

Schemes: ``postgresql``/``postgres``/``pgsql``/``postgresql+psycopg2`` and
``mysql``/``mariadb``/``mysql+pymysql``/``mariadb+pymysql``.  User name,
password (both URL-decoded), host, port and database come from the URL.
Query parameters:

* provider options: ``table`` (default ``oro_user``, may be
  ``schema.table``), ``organization_column`` (e.g. ``organization_id``; off
  by default), ``cache_ttl`` (seconds, default 30), ``miss_ttl`` (default
  5), ``cache_size`` (entries, default 1024), ``cp_min`` (1), ``cp_max`` (3);
* PostgreSQL: any other parameter is a libpq connection keyword passed
  through (``sslmode``, ``host=/var/run/postgresql`` for a Unix socket,
  ``connect_timeout`` ...);
* MySQL: ``unix_socket``, ``charset``, ``connect_timeout``,
  ``read_timeout``, ``write_timeout``, ``ssl_ca``, ``ssl_cert``,
  ``ssl_key``, ``ssl_verify_cert``, ``ssl_verify_identity``,
  ``ssl_disabled``, ``read_default_file``; anything else is rejected.
  (Without TLS options PyMySQL tries unverified TLS when the server offers
  it; give ``ssl_ca`` and ``ssl_verify_cert=true`` to verify.)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["DatabaseUrl", "parse_database_url"]


class DatabaseUrl(NamedTuple):
    """What a database URL says, ready for :class:`SqlUserProvider`."""

    #: The DB-API module: ``"psycopg2"`` or ``"pymysql"``.
    dbapi_name: str
    #: Keywords for the module's ``connect()``.
    connect_kwargs: dict[str, Any]
    #: Provider keyword arguments from the query string (``cache_ttl``...).
    options: dict[str, Any]
    #: The URL without its password, for logs and reprs.
    description: str


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


def _converted(name: str, value: str, convert: Callable[[str], Any]) -> Any:
    try:
        return convert(value)
    except ValueError:
        raise ValueError(f"bad value for {name!r} in database URL: {value!r}") from None


def parse_database_url(url: str) -> DatabaseUrl:
    """Split a database URL (see the module docstring) into driver arguments.

    Raises ``ValueError`` for an unknown scheme, a bad port or option.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in database URL: {exc}") from None
    # Only what the URL gives: the driver's defaults (local socket, default
    # port, current user...) apply to the rest.
    given: dict[str, Any] = {
        key: value for key, value in (
            ("host", parts.hostname),
            ("port", port),
            ("user", unquote(parts.username) if parts.username else None),
            ("password", unquote(parts.password) if parts.password is not None else None),
        ) if value is not None
    }
    database = unquote(parts.path.lstrip("/")) or None

    options: dict[str, Any] = {}
    driver_options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _PROVIDER_OPTIONS:
            options[name] = _converted(name, value, _PROVIDER_OPTIONS[name])
        else:
            driver_options[name] = value

    connect: dict[str, Any]
    if scheme in _POSTGRES_SCHEMES:
        dbapi_name = "psycopg2"
        connect = {"connect_timeout": "5", "application_name": "oro-sync", **given}
        if database is not None:
            connect["dbname"] = database
        # libpq keywords pass through (sslmode, keepalives, host=/socket/dir...).
        connect.update(driver_options)
    elif scheme in _MYSQL_SCHEMES:
        dbapi_name = "pymysql"
        connect = {
            "connect_timeout": 5,
            "read_timeout": 30,
            "write_timeout": 30,
            "charset": "utf8mb4",
            **given,
        }
        if database is not None:
            connect["database"] = database
        for name, value in driver_options.items():
            convert = _MYSQL_OPTIONS.get(name)
            if convert is None:
                raise ValueError(
                    f"unknown MySQL option {name!r} in database URL"
                    f" (known: {', '.join(sorted(_MYSQL_OPTIONS))})"
                )
            connect[name] = _converted(name, value, convert)
    else:
        raise ValueError(
            f"unsupported database URL scheme {parts.scheme!r}"
            " (use postgresql://... or mysql://...)"
        )

    return DatabaseUrl(dbapi_name, connect, options, _redacted(parts))
