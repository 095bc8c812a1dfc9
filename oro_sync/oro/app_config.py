"""``oro-sync config-from-oro``: an ``oro-sync.yml`` from an Oro application.

Pure functions from what the application's files say (see
:mod:`oro_sync.oro.app_env`) to oro-sync settings, and a :class:`Findings`
record of what was found and what was not, for the command to print.  The
one database read (the application URL) is :mod:`oro_sync.oro.oro_db`'s.

What maps to what:

* ``ORO_SECRET`` (``secret``) -> ``auth.secret``, never printed;
* ``ORO_WEBSOCKET_SERVER_DSN`` (``websocket_bind_address``/``_port``) ->
  ``server.listen``; the frontend and backend DSNs are what browsers and the
  PHP backend connect to, checked and reported;
* ``ORO_DB_DSN``/``ORO_DB_URL`` (``database_*``) -> ``auth.users.url`` in the
  SQL user provider's format (Doctrine-only options dropped);
* every bundle's ``Resources/config/oro/websocket_routing.yml`` under
  ``vendor/`` and ``src/`` -> ``routing``, with a handler declared for each
  callback oro-sync does not ship (SecuredTopic for per-user channels,
  BroadcastTopic otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import yaml

from oro_sync.config import DEFAULT_CONFIG

#: Oro's defaults when a websocket DSN is empty (as in the shipped .env-app).
DEFAULT_DSNS = {"ORO_WEBSOCKET_SERVER_DSN": "//0.0.0.0:8080",
                "ORO_WEBSOCKET_FRONTEND_DSN": "//*:8080/ws",
                "ORO_WEBSOCKET_BACKEND_DSN": "tcp://127.0.0.1:8080"}

ROUTING_FILE = os.path.join("Resources", "config", "oro", "websocket_routing.yml")
#: Not bundles the application loads (test bundles, assets, VCS data).
_SKIP_DIRS = {"Tests", "tests", "node_modules", ".git", "public", "var", "cache"}

#: Query options of a Doctrine DSN that PostgreSQL's libpq also understands.
_LIBPQ_OPTIONS = {"sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "connect_timeout",
                  "target_session_attrs", "application_name", "options", "host"}
_MYSQL_OPTIONS = {"unix_socket", "charset", "connect_timeout", "ssl_ca", "ssl_cert", "ssl_key"}
_PG_SCHEMES = {"postgres", "postgresql", "pgsql", "pdo-pgsql", "pdo_pgsql"}
_MY_SCHEMES = {"mysql", "mysql2", "mariadb", "pdo-mysql", "pdo_mysql"}


class WebsocketDsn(NamedTuple):
    """``[scheme:]//host[:port][/path]`` as Oro's websocket settings write it."""

    scheme: str
    host: str
    #: None: the scheme's default (a frontend DSN such as ``//example.com/ws``).
    port: int | None
    path: str

    def __str__(self) -> str:
        scheme = f"{self.scheme}:" if self.scheme else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{scheme}//{self.host}{port}{self.path}"


@dataclass
class Findings:
    """What the application had (name -> text shown) and what it lacked."""

    found: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, what: str, text: str) -> None:
        self.found.append((what, text))

    def lack(self, text: str) -> None:
        self.missing.append(text)


def parse_websocket_dsn(dsn: str) -> WebsocketDsn:
    """``//0.0.0.0:8080``, ``//*:8080/ws``, ``tcp://127.0.0.1:8080``,
    ``//shop.example.com/ws``, ``ssl://*:443/ws?context_options[...]=...``"""
    text = dsn.strip()
    if "//" not in text:
        raise ValueError(f"not a websocket DSN (//host:port[/path]): {dsn!r}")
    parts = urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    host, port = netloc, None
    if not netloc.endswith("]") and ":" in netloc:
        host, _, number = netloc.rpartition(":")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ValueError(f"bad port in websocket DSN: {dsn!r}")
        port = int(number)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"websocket DSN without a host: {dsn!r}")
    return WebsocketDsn(parts.scheme.lower(), host, port, parts.path)


def listen_endpoint(server: WebsocketDsn) -> str:
    """The Twisted endpoint for the server DSN (``0.0.0.0`` and ``*``: every address)."""
    if server.port is None:
        raise ValueError(f"the server DSN {server} has no port")
    interface = "0.0.0.0" if server.host in ("*", "") else server.host
    interface = interface.replace(":", "\\:")  # IPv6: colons escaped in endpoint strings
    return f"tcp:{server.port}:interface={interface}:backlog=4096"


def database_url(dsn: str) -> tuple[str, list[str]]:
    """Oro's ``ORO_DB_DSN`` as a URL for ``auth.users.url``, and the query
    options dropped (Doctrine's ``serverVersion``, ``charset``...)."""
    parts = urlsplit(dsn.strip())
    scheme = parts.scheme.lower()
    if scheme in _PG_SCHEMES:
        scheme, keep = "postgresql", _LIBPQ_OPTIONS
    elif scheme in _MY_SCHEMES:
        scheme, keep = "mysql", _MYSQL_OPTIONS
    else:
        raise ValueError(f"not a PostgreSQL or MySQL database DSN (scheme {parts.scheme!r})")
    options = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in options if k in keep]
    dropped = [k for k, v in options if k not in keep]
    query = f"?{urlencode(kept)}" if kept else ""
    return f"{scheme}://{parts.netloc}{parts.path}{query}", dropped


def database_url_from_parameters(p: Mapping[str, Any]) -> str | None:
    """The ``database_*`` parameters of Oro 3.x/4.x as a URL, or None."""
    from urllib.parse import quote

    driver = str(p.get("database_driver") or "")
    name = p.get("database_name")
    if not name or driver not in ("pdo_pgsql", "pdo_mysql"):
        return None
    scheme = "postgresql" if driver == "pdo_pgsql" else "mysql"
    auth = ""
    if p.get("database_user"):
        auth = quote(str(p["database_user"]), safe="")
        if p.get("database_password") not in (None, ""):
            auth += ":" + quote(str(p["database_password"]), safe="")
        auth += "@"
    port = f":{p['database_port']}" if p.get("database_port") not in (None, "", "~") else ""
    return f"{scheme}://{auth}{p.get('database_host') or '127.0.0.1'}{port}/{quote(str(name), safe='')}"


def dsns_from_parameters(p: Mapping[str, Any]) -> dict[str, str]:
    """Oro 3.x/4.x ``websocket_*`` parameters written as the 5.1+ DSNs."""
    def get(*names: str, default: Any = None) -> Any:
        for name in names:
            if p.get(name) not in (None, ""):
                return p[name]
        return default

    port = get("websocket_bind_port", "websocket_port", default=8080)
    dsns = {"ORO_WEBSOCKET_SERVER_DSN": f"//{get('websocket_bind_address', default='0.0.0.0')}:{port}"}
    front = (f"//{get('websocket_frontend_host', 'websocket_host', default='*')}:"
             f"{get('websocket_frontend_port', 'websocket_port', default=port)}"
             f"{get('websocket_frontend_path', 'websocket_path', default='')}")
    transport = get("websocket_backend_transport", default="tcp")
    host = get("websocket_backend_host", "websocket_host", default="127.0.0.1")
    back = (f"{transport}://{'127.0.0.1' if host == '*' else host}:"
            f"{get('websocket_backend_port', 'websocket_port', default=port)}"
            f"{get('websocket_backend_path', 'websocket_path', default='')}")
    dsns["ORO_WEBSOCKET_FRONTEND_DSN"] = front
    dsns["ORO_WEBSOCKET_BACKEND_DSN"] = back
    return dsns


def find_routing_files(app_dir: str, roots: Iterable[str] = ("vendor", "src")) -> list[str]:
    """Every bundle's ``Resources/config/oro/websocket_routing.yml`` under
    ``roots`` of ``app_dir`` (absolute paths): ``vendor/`` first, then the
    application's own ``src/``, each sorted, so that a route an application
    bundle redefines replaces the vendor's."""
    found: list[str] = []
    for root in roots:
        top = os.path.join(app_dir, root)
        here: list[str] = []
        for directory, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            if "websocket_routing.yml" in files and directory.endswith(os.path.dirname(ROUTING_FILE)):
                here.append(os.path.abspath(os.path.join(directory, "websocket_routing.yml")))
        found += sorted(here)
    return found


def shipped_config() -> dict[str, Any]:
    """The packaged ``oro-sync.yml`` as data (its services: Oro's handlers)."""
    with open(DEFAULT_CONFIG, encoding="utf-8") as f:
        return yaml.safe_load(f)


def handler_names(services: Mapping[str, Any]) -> set[str]:
    """The names (first argument, ``getName()``) the declared handlers answer to."""
    return {str(spec["arguments"][0]) for spec in services.values()
            if isinstance(spec, dict) and spec.get("arguments")}


def guessed_service(callback: str, channel: str) -> dict[str, Any]:
    """A handler for a route's callback oro-sync does not know: per-user
    channels (``{user_id}``) only for that user, others broadcast."""
    if "{user_id}" in channel:
        return {"class": "oro_sync.oro.topics.SecuredTopic",
                "arguments": [callback, "@logger", "%oro_sync.security.denial_frame%"]}
    return {"class": "oro_sync.oro.topics.BroadcastTopic", "arguments": [callback]}


def build_config(base: dict[str, Any], *, secret: str, listen: str | None,
                 users_url: str | None, application_url: str | None,
                 routing: list[str], services: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (the shipped configuration) with the application's settings."""
    data = {key: (dict(value) if isinstance(value, dict) else value) for key, value in base.items()}
    data["server"] = dict(base.get("server") or {})
    if listen:
        data["server"]["listen"] = listen
    data["auth"] = dict(base.get("auth") or {})
    data["auth"]["secret"] = secret
    if users_url:
        data["auth"]["users"] = {"url": users_url}
    else:  # backend tickets only: the shipped users.yml is an example
        data["auth"].pop("users", None)
    data["origins"] = dict(base.get("origins") or {})
    if application_url:
        data["origins"]["application_url"] = application_url
    data["routing"] = list(routing)
    data["services"] = {**(base.get("services") or {}), **services}
    return data


HEADER = """\
# oro-sync configuration written by `oro-sync config-from-oro {app}`.
# It holds the application's secret: keep it readable by oro-sync only.
# Every setting is explained in oro-sync's own etc/oro-sync.yml.
"""


def render(data: dict[str, Any], app_dir: str) -> str:
    return HEADER.format(app=app_dir) + yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                                                       allow_unicode=True)
