"""The ``oro-sync config-from-oro APP_DIR`` command: gather, report, write.

:func:`gather` reads an Oro application (its settings files, the
environment, its bundles' routing files and, when reachable, its database)
and returns the configuration as data with the :class:`Findings`;
:func:`run` prints them and writes the file.  The secret is written to
the file (mode 0600) and never printed.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, TextIO

from oro_sync.auth.sql_pool import describe_error
from oro_sync.auth.sql_url import parse_database_url
from oro_sync.config import ConfigError, parse_config
from oro_sync.oro import app_config as ac
from oro_sync.oro.app_env import EnvFileError, load_app_env, load_parameters
from oro_sync.oro.routing import RoutingError, load_routing_file

#: ``read_url(database_url) -> application URL or None``; raises when unreachable.
UrlReader = Callable[[str], "str | None"]


def _default_reader(url: str) -> str | None:
    from oro_sync.oro.oro_db import read_application_url

    return read_application_url(url)


def gather(app_dir: str, environ: Mapping[str, str], read_url: UrlReader | None = _default_reader
           ) -> tuple[dict[str, Any], ac.Findings]:
    """The configuration for ``app_dir`` as data, and what was (not) found.

    ``read_url`` None: the database is not asked.  Raises ConfigError when
    no usable configuration can be made (no secret).
    """
    app_dir = os.path.abspath(app_dir)
    if not os.path.isdir(app_dir):
        raise ConfigError(f"{app_dir}: not a directory")
    f = ac.Findings()
    try:
        values, files = load_app_env(app_dir, environ)
        parameters, pfile = load_parameters(app_dir) if not files else ({}, None)
    except EnvFileError as e:
        raise ConfigError(str(e)) from None
    if files:
        f.add("settings", "Oro 5.1+ dotenv files " + ", ".join(files)
              + " (real environment variables win)")
    elif pfile:
        f.add("settings", f"Oro 3.x/4.x {pfile}")
    else:
        f.lack("no .env-app files and no parameters.yml: only ORO_* environment variables were read")

    secret = values.get("ORO_SECRET") or (str(parameters["secret"]) if parameters.get("secret") else "")
    if not secret:
        raise ConfigError("no ORO_SECRET (or parameters.yml secret) found: tickets cannot be checked")
    f.add("secret", "ORO_SECRET (not shown)" if values.get("ORO_SECRET") else "secret (not shown)")

    listen = _websocket(f, values, parameters, bool(pfile and not files))
    users_url = _database(f, values, parameters)
    application_url = None
    if users_url and read_url is not None:
        try:
            application_url = read_url(users_url)
        except Exception as e:  # any driver error: unreachable, no table...
            f.lack(f"application URL: cannot read it from the database ({describe_error(e)}); "
                   "origins.application_url stays http://localhost")
        else:
            if application_url:
                f.add("application URL", f"{application_url} (oro_config_value oro_ui/application_url)")
            else:
                f.lack("application URL: not set in the database (Oro uses http://localhost)")
    elif users_url:
        f.lack("application URL: database not asked (--no-database)")
    base = ac.shipped_config()
    routing, services = _routing(f, app_dir, base)
    data = ac.build_config(base, secret=secret, listen=listen, users_url=users_url,
                           application_url=application_url, routing=routing, services=services)
    return data, f


def _websocket(f: ac.Findings, values: Mapping[str, str], parameters: Mapping[str, Any],
               old: bool) -> str | None:
    dsns = ac.dsns_from_parameters(parameters) if old else {}
    parsed: dict[str, ac.WebsocketDsn] = {}
    notes: dict[str, str] = {}
    for name, default in ac.DEFAULT_DSNS.items():
        text = dsns.get(name) or values.get(name) or ""
        note = name if text else f"{name} empty: Oro's default"
        try:
            parsed[name] = ac.parse_websocket_dsn(text or default)
        except ValueError as e:
            f.lack(f"{name}: {e}")
            continue
        notes[name] = note
    listen = None
    server = parsed.get("ORO_WEBSOCKET_SERVER_DSN")
    if server is not None and server.port is None:
        f.lack(f"ORO_WEBSOCKET_SERVER_DSN {server} has no port: server.listen left at its default")
        server = None
    if server is not None:
        listen = ac.listen_endpoint(server)
        f.add("listen", f"{listen} ({notes['ORO_WEBSOCKET_SERVER_DSN']} {server})")
        if server.scheme in ("ssl", "tls"):
            f.lack("the server DSN asks for TLS: set server.listen to "
                   f"ssl:{server.port}:privateKey=KEY.pem:certKey=CERT.pem by hand")
    front = parsed.get("ORO_WEBSOCKET_FRONTEND_DSN")
    if front is not None:
        f.add("browsers connect to", f"{front} ({notes['ORO_WEBSOCKET_FRONTEND_DSN']})")
        if server is not None and front.port != server.port:
            f.add("note", f"browsers use port {front.port or 'the default (80/443)'}, the server "
                          f"listens on {server.port}: a proxy (nginx) must forward it")
    back = parsed.get("ORO_WEBSOCKET_BACKEND_DSN")
    if back is not None:
        f.add("backend publishes to", f"{back} ({notes['ORO_WEBSOCKET_BACKEND_DSN']})")
        if server is not None and back.port not in (server.port, None) and back.scheme in ("", "tcp"):
            f.lack(f"the backend DSN's port {back.port} is not the server's {server.port}: "
                   "the PHP backend would not reach oro-sync")
    return listen


def _database(f: ac.Findings, values: Mapping[str, str], parameters: Mapping[str, Any]) -> str | None:
    name = next((n for n in ("ORO_DB_DSN", "ORO_DB_URL") if values.get(n)), None)
    dsn = values[name] if name else ac.database_url_from_parameters(parameters)
    if not dsn:
        f.lack("database: no ORO_DB_DSN/ORO_DB_URL (or database_* parameters): users come from no "
               "provider, only backend tickets are accepted")
        return None
    try:
        url, dropped = ac.database_url(dsn)
        description = parse_database_url(url).description
    except ValueError as e:
        f.lack(f"database: {e}")
        return None
    extra = f"; dropped Doctrine options {', '.join(dropped)}" if dropped else ""
    f.add("users", f"{description} ({name or 'database_* parameters'}{extra})")
    return url


def _routing(f: ac.Findings, app_dir: str, base: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    known = ac.handler_names(base.get("services") or {})
    files, services, routes = [], {}, 0
    for path in ac.find_routing_files(app_dir):
        try:
            loaded = load_routing_file(path)
        except RoutingError as e:
            f.lack(f"routing: {e} (file left out)")
            continue
        files.append(path)
        routes += len(loaded)
        for route in loaded:
            for callback in route.callbacks:
                if callback in known:
                    continue
                known.add(callback)
                spec = ac.guessed_service(callback, route.channel)
                services[f"oro_sync.generated.{callback}"] = spec
                f.lack(f"handler {callback!r} (route {route.name}, {route.channel}): not shipped "
                       f"with oro-sync, declared as {spec['class'].rsplit('.', 1)[1]}; check it")
    if files:
        f.add("routing", f"{routes} routes in {len(files)} websocket_routing.yml files under vendor/, src/")
        return files, services
    f.lack("routing: no Resources/config/oro/websocket_routing.yml under vendor/ or src/: "
           "oro-sync's own Oro platform routes are used")
    return [os.path.join(os.path.dirname(ac.DEFAULT_CONFIG), "websocket_routing.yml")], services


def run(app_dir: str, output: str, force: bool = False, database: bool = True,
        environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """The command: 0 when the file was written."""
    out = out if out is not None else sys.stdout
    output = os.path.abspath(output)
    if os.path.exists(output) and not force:
        raise ConfigError(f"{output} exists (--force replaces it)")
    data, findings = gather(app_dir, os.environ if environ is None else environ,
                            _default_reader if database else None)
    parse_config(data, output)  # what is written must load
    width = max(len(what) for what, _ in findings.found) if findings.found else 0
    print(f"Found in {os.path.abspath(app_dir)}:", file=out)
    for what, text in findings.found:
        print(f"  {what:<{width}}  {text}", file=out)
    if findings.missing:
        print("Not found or not done:", file=out)
        for text in findings.missing:
            print(f"  - {text}", file=out)
    # The file holds the secret: written 0600 next to the target and renamed
    # over it, so an existing file's wider mode (--force) is not inherited.
    text = ac.render(data, os.path.abspath(app_dir))
    tmp = f"{output}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"Wrote {output}", file=out)
    return 0
