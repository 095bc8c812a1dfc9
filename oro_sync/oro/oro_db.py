"""What oro-sync reads from an Oro application's own database.

Two things, both read-only and through a DB-API cursor (an adbapi
transaction in the server, a plain connection in ``oro-sync
config-from-oro``):

* the application URL, the host browsers connect from (Origin check):
  ``oro_config_value`` row ``section='oro_ui'``, ``name='application_url'``
  of the global scope (``oro_config.entity='app'``), its value in
  ``text_value`` -- plain text, as Oro stores scalar settings (a
  PHP-serialized string is understood too);
* the websocket server state: Oro 6.1.7+ and 7.0 keep rows ``(id,
  updated_at)`` in ``oro_sync_websocket_server_state`` and bump
  ``updated_at`` when the system configuration changes (its own server
  restarts on that signal; oro-sync reloads its origins in place).
"""

from __future__ import annotations

import re
from typing import Any

APPLICATION_URL_SQL = (
    "SELECT v.text_value FROM oro_config_value v"
    " JOIN oro_config c ON c.id = v.config_id"
    " WHERE v.section = 'oro_ui' AND v.name = 'application_url' AND c.entity = 'app'"
    " ORDER BY c.record_id, v.id LIMIT 1")

SERVER_STATE_SQL = "SELECT id, updated_at FROM oro_sync_websocket_server_state ORDER BY id"

_PHP_STRING = re.compile(r'^s:(\d+):"(.*)";$', re.S)


def decode_config_text(value: Any) -> str | None:
    """A ``text_value`` as the URL it holds, or None for no usable value."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    text = str(value).strip()
    m = _PHP_STRING.match(text)
    if m is not None:  # s:N:"...": a PHP-serialized string
        text = m.group(2).strip()
    return text or None


def fetch_application_url(cursor: Any) -> str | None:
    """Oro's global ``oro_ui.application_url``, or None when it is not set."""
    cursor.execute(APPLICATION_URL_SQL)
    row = cursor.fetchone()
    return decode_config_text(row[0]) if row else None


def fetch_server_state(cursor: Any) -> tuple[tuple[str, str], ...]:
    """Every row of ``oro_sync_websocket_server_state`` as ``(id, updated_at)``
    text pairs: equal results mean nothing changed.  Raises the driver's
    ProgrammingError when the table does not exist (Oro before 6.1.7)."""
    cursor.execute(SERVER_STATE_SQL)
    return tuple((str(row[0]).strip(), "" if row[1] is None else str(row[1]))
                 for row in cursor.fetchall())


def read_application_url(url: str, timeout: int = 5) -> str | None:
    """Connect once (blocking, read-only use) and read the application URL;
    for ``oro-sync config-from-oro``.  Raises the driver's errors."""
    import importlib

    from oro_sync.auth.sql_url import parse_database_url

    parsed = parse_database_url(url)
    module = importlib.import_module(parsed.dbapi_name)
    kwargs = dict(parsed.connect_kwargs, connect_timeout=timeout)
    conn = module.connect(**kwargs)
    try:
        cursor = conn.cursor()
        try:
            return fetch_application_url(cursor)
        finally:
            cursor.close()
    finally:
        conn.close()
