"""The server configuration file (``oro-sync.yml``) and its validation.

Every problem is a :class:`ConfigError` naming the file and the setting, so
``twistd oro-sync`` can print one clear line instead of a traceback.
Relative paths in the file are relative to the file's own directory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

#: The configuration shipped with the package (also at ``etc/`` in the source tree).
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "etc", "oro-sync.yml")

#: A long listen queue: after a restart every browser reconnects at once.
DEFAULT_LISTEN = "tcp:8080:interface=0.0.0.0:backlog=4096"

_TOP_KEYS = {"server", "parameters", "routing", "services", "auth", "origins", "limits", "broker", "pushers"}
_SERVER_KEYS = {"listen", "strict_subprotocol", "max_message_size", "shutdown_timeout", "wamp2",
                "wamp2_realms", "wamp2_registrations"}
# Operations (oro_sync.ops): the admin listener, the summary line, the log format.
_SERVER_KEYS |= {"admin", "summary_interval", "log_format"}


_AUTH_KEYS = {"secret", "require_ticket", "ticket_ttl", "one_time_tickets", "users", "publishers",
              "clock_leeway"}
_ORIGIN_KEYS = {"check", "allowed", "application_url", "allow_missing", "database_url",
                "reload_interval"}


class ConfigError(Exception):
    """A configuration that cannot be used."""


@dataclass
class ServerSettings:
    listen: str = DEFAULT_LISTEN
    strict_subprotocol: bool = False
    max_message_size: int = 1024 * 1024
    shutdown_timeout: float = 3.0
    #: Serve WAMP v2 (wamp.2.json) beside WAMP v1 on the same port.
    wamp2: bool = True
    #: Realms WAMP v2 clients may join (empty: any).
    wamp2_realms: list = field(default_factory=list)
    #: Who may register procedures over WAMP v2: nobody, backend, users, anyone
    #: (``backends`` and ``everyone`` are read as ``backend`` and ``anyone``).
    wamp2_registrations: str = "backend"
    #: The admin HTTP listener (/health, /metrics, /status); "none" turns it off.
    admin: str = "tcp:9101:interface=127.0.0.1"
    #: Seconds between summary log lines (0: none).
    summary_interval: float = 60.0
    #: "text" (twistd's usual lines) or "json" (one JSON object per line).
    log_format: str = "text"


@dataclass
class Config:
    """Everything ``oro-sync.yml`` says, with paths made absolute."""

    path: str = ""
    server: ServerSettings = field(default_factory=ServerSettings)
    parameters: dict[str, Any] = field(default_factory=dict)
    routing: list[str] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)
    auth: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    #: The ``broker:`` section (read by :mod:`oro_sync.brokers.settings`).
    broker: dict[str, Any] = field(default_factory=dict)
    #: Backend pushers (Redis channel, AMQP, HTTP): see oro_sync.pushers.settings.
    pushers: dict[str, Any] = field(default_factory=dict)


def _expect(value: Any, kind: type | tuple, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where} must be a {names}, not {type(value).__name__}")
    return value


def load_config(path: str | None = None) -> Config:
    """Read and validate a configuration file (the shipped one by default)."""
    path = os.path.abspath(path or DEFAULT_CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        data = {}
    try:
        return parse_config(data, path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_config(data: Any, path: str = "") -> Config:
    _expect(data, dict, "the configuration")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(known: {', '.join(sorted(_TOP_KEYS))})")
    base = os.path.dirname(path) if path else os.getcwd()
    cfg = Config(path=path)

    server = _expect(data.get("server") or {}, dict, "'server'")
    unknown = set(server) - _SERVER_KEYS
    if unknown:
        raise ConfigError(f"unknown server setting(s) {', '.join(sorted(map(str, unknown)))}")
    s = cfg.server
    s.listen = _expect(server.get("listen", s.listen), str, "server.listen")
    s.strict_subprotocol = _expect(server.get("strict_subprotocol", s.strict_subprotocol), bool,
                                   "server.strict_subprotocol")
    s.max_message_size = _expect(server.get("max_message_size", s.max_message_size), int,
                                 "server.max_message_size")
    s.shutdown_timeout = float(_expect(server.get("shutdown_timeout", s.shutdown_timeout), (int, float),
                                       "server.shutdown_timeout"))
    s.wamp2 = _expect(server.get("wamp2", s.wamp2), bool, "server.wamp2")
    s.wamp2_realms = _expect(server.get("wamp2_realms", s.wamp2_realms) or [], list, "server.wamp2_realms")
    if not all(isinstance(r, str) and r for r in s.wamp2_realms):
        raise ConfigError("server.wamp2_realms must be a list of realm names")
    s.wamp2_registrations = _rule(server.get("wamp2_registrations", s.wamp2_registrations),
                                  "server.wamp2_registrations")
    admin = server.get("admin", s.admin)
    s.admin = "none" if admin is None or admin is False else _expect(admin, str, "server.admin")
    interval = server.get("summary_interval", s.summary_interval)
    if not _finite(interval) or interval < 0:
        raise ConfigError("server.summary_interval must be a finite number of seconds >= 0")
    s.summary_interval = float(interval)
    s.log_format = _expect(server.get("log_format", s.log_format), str, "server.log_format")
    if s.log_format not in ("text", "json"):
        raise ConfigError("server.log_format must be text or json")

    cfg.parameters = dict(_expect(data.get("parameters") or {}, dict, "'parameters'"))
    routing = data.get("routing") or []
    if isinstance(routing, str):
        routing = [routing]
    for i, p in enumerate(_expect(routing, list, "'routing'")):
        _expect(p, str, f"routing[{i}]")
    cfg.routing = [resolve_path(p, base) for p in routing]
    cfg.services = dict(_expect(data.get("services") or {}, dict, "'services'"))
    cfg.auth = dict(_expect(data.get("auth") or {}, dict, "'auth'"))
    cfg.origins = dict(_expect(data.get("origins") or {}, dict, "'origins'"))
    cfg.limits = dict(_expect(data.get("limits") or {}, dict, "'limits'"))
    cfg.broker = dict(_expect(data.get("broker") or {}, dict, "'broker'"))
    cfg.pushers = dict(_expect(data.get("pushers") or {}, dict, "'pushers'"))
    validate_sections(cfg)
    return cfg


def _rule(value: Any, where: str) -> str:
    from oro_sync.auth.rules import normalize_rule

    try:
        return normalize_rule(_expect(value, str, where))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def validate_sections(cfg: Config) -> None:
    """Check the ``auth``, ``origins`` and ``limits`` sections (also after a
    program changed them): unknown keys and wrong types are ConfigErrors."""
    build_limits(cfg.limits)
    from oro_sync.brokers.settings import parse_broker

    parse_broker(cfg.broker)
    unknown = set(cfg.origins) - _ORIGIN_KEYS
    if unknown:
        raise ConfigError(f"unknown origins setting(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("check", "allow_missing"):
        if key in cfg.origins and not isinstance(cfg.origins[key], bool):
            raise ConfigError(f"origins.{key} must be true or false")
    if "application_url" in cfg.origins and not isinstance(cfg.origins["application_url"], str):
        raise ConfigError("origins.application_url must be a URL")
    if "database_url" in cfg.origins and not isinstance(cfg.origins["database_url"], str):
        raise ConfigError("origins.database_url must be a database URL")
    if "reload_interval" in cfg.origins and (not _finite(cfg.origins["reload_interval"])
                                             or cfg.origins["reload_interval"] < 0):
        raise ConfigError("origins.reload_interval must be a finite number of seconds >= 0")
    allowed = cfg.origins.get("allowed") or []
    if not isinstance(allowed, list) or not all(isinstance(o, str) for o in allowed):
        raise ConfigError("origins.allowed must be a list of hosts or URLs")
    from oro_sync.pushers.settings import parse_pushers

    parse_pushers(cfg.pushers, str((cfg.auth or {}).get("secret") or ""))
    if not cfg.auth:
        return
    unknown = set(cfg.auth) - _AUTH_KEYS
    if unknown:
        raise ConfigError(f"unknown auth setting(s) {', '.join(sorted(map(str, unknown)))}")
    secret = cfg.auth.get("secret")
    if not isinstance(secret, str) or not secret:
        raise ConfigError("auth.secret (the application secret) is required")
    if "publishers" in cfg.auth:
        cfg.auth["publishers"] = _rule(cfg.auth["publishers"], "auth.publishers")
    users = cfg.auth.get("users")
    if users is not None and (not isinstance(users, dict) or len(users) != 1
                              or not set(users) <= {"file", "url"}):
        raise ConfigError("auth.users must be {file: users.yml} or {url: postgresql://...}")
    for key in ("ticket_ttl", "clock_leeway"):
        if key not in cfg.auth:
            continue
        value = cfg.auth[key]
        if not _finite(value) or value < 0 or (key == "ticket_ttl" and value == 0):
            raise ConfigError(f"auth.{key} must be a finite number of seconds"
                              + (" > 0" if key == "ticket_ttl" else " >= 0"))
    for key in ("require_ticket", "one_time_tickets"):
        if key in cfg.auth and not isinstance(cfg.auth[key], bool):
            raise ConfigError(f"auth.{key} must be true or false")
    if users is not None and not isinstance(next(iter(users.values())), str):
        raise ConfigError("auth.users: the file or URL must be a string")


def _finite(value: Any) -> bool:
    """A real number (not a bool, NaN or infinity): what every duration and limit must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_limits(settings: dict[str, Any]) -> Any:
    """The :class:`~oro_sync.websocket.limits.Limits` of a ``limits`` section."""
    from oro_sync.websocket.limits import Limits

    limits = Limits()
    known = {f.name for f in fields(Limits)}
    for key, value in settings.items():
        if key not in known:
            raise ConfigError(f"unknown limit {key!r} (known: {', '.join(sorted(known))})")
        if not _finite(value) or value < 0:
            raise ConfigError(f"limits.{key} must be a finite number >= 0")
        setattr(limits, key, type(getattr(limits, key))(value))
    # The RPC fairness bound holds only while what callers may queue for one
    # callee fits in its output buffer (else callers get it cut off again).
    # (A 0 bound turns that protection off knowingly.)
    queued = limits.max_callee_invocations * limits.max_call_size
    if queued and limits.max_output_buffer and queued >= limits.max_output_buffer:
        raise ConfigError(
            f"limits.max_callee_invocations x limits.max_call_size ({queued} bytes) must stay under "
            f"limits.max_output_buffer ({limits.max_output_buffer}): callers could get a callee "
            "cut off as a slow consumer")
    return limits


def resolve_path(p: str, base: str) -> str:
    p = os.path.expanduser(p)
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
