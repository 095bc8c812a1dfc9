"""The ``pushers:`` section of ``oro-sync.yml``, checked.

::

    pushers:
        max_message_size: 1048576       # bytes; bigger messages are dropped
        log_interval: 10                # seconds between summaries of drops
        reconnect_initial_delay: 0.5    # back-off of the Redis/AMQP pushers
        reconnect_max_delay: 10
        redis:  {url: 'redis://127.0.0.1:6379/0', channel: 'oro-sync:push'}
        amqp:   {url: 'amqp://guest:guest@127.0.0.1:5672/%2F',
                 exchange: gos_websocket_exchange, queue: gos_websocket, routing_key: ''}
        http:   {listen: 'tcp:8081:interface=127.0.0.1', path: /publish, secret: ...}

Each pusher is off unless its section is there (``redis.url``,
``amqp.url``, ``http.listen``).  Problems are ConfigErrors naming the
setting, so a bad section stops the start with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from oro_sync.config import ConfigError

DEFAULT_CHANNEL = "oro-sync:push"
DEFAULT_EXCHANGE = "gos_websocket_exchange"
DEFAULT_QUEUE = "gos_websocket"

_TOP = {"max_message_size", "log_interval", "reconnect_initial_delay", "reconnect_max_delay",
        "redis", "amqp", "http"}
_REDIS = {"url", "channel"}
_AMQP = {"url", "exchange", "queue", "routing_key", "prefetch"}
_HTTP = {"listen", "path", "secret"}


@dataclass(frozen=True)
class RedisURL:
    """``redis://[[user]:password@]host[:port][/db]`` (``rediss://``: TLS)."""

    host: str
    port: int
    password: str | None = None
    username: str | None = None
    db: int = 0
    tls: bool = False

    @classmethod
    def parse(cls, url: str, where: str) -> "RedisURL":
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"{where} must be redis://[:password@]host:port/db or rediss://..., "
                              f"not {url!r}")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError(f"{where}: bad port in {url!r}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigError(f"{where}: the database must be a number, not {path!r}")
        return cls(parts.hostname or "127.0.0.1", port,
                   unquote(parts.password) if parts.password is not None else None,
                   unquote(parts.username) if parts.username else None,
                   int(path or 0), parts.scheme == "rediss")


@dataclass(frozen=True)
class RedisPusherSettings:
    url: RedisURL
    channel: str = DEFAULT_CHANNEL


@dataclass(frozen=True)
class AmqpPusherSettings:
    #: A pika URL: ``amqp://user:password@host:port/vhost`` (``amqps://``: TLS).
    url: str
    exchange: str = DEFAULT_EXCHANGE
    queue: str = DEFAULT_QUEUE
    #: The binding of ``queue`` to ``exchange``; Gos's pusher publishes with
    #: an empty routing key.
    routing_key: str = ""
    #: Unacknowledged messages in flight at once.
    prefetch: int = 100


@dataclass(frozen=True)
class HttpPusherSettings:
    listen: str
    path: str = "/publish"
    #: Expected in ``Authorization: Bearer <secret>``; ``auth.secret`` by default.
    secret: str = ""


@dataclass(frozen=True)
class PushersSettings:
    max_message_size: int = 1024 * 1024
    log_interval: float = 10.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 10.0
    redis: RedisPusherSettings | None = None
    amqp: AmqpPusherSettings | None = None
    http: HttpPusherSettings | None = None

    @property
    def any(self) -> bool:
        return bool(self.redis or self.amqp or self.http)


def _section(data: Any, known: set, where: str) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, not {type(data).__name__}")
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown {where} setting(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(known: {', '.join(sorted(known))})")
    return data


def _string(data: dict, key: str, where: str, default: str | None = None,
            empty: bool = False) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or (not value and not empty):
        raise ConfigError(f"{where}.{key} must be a{'' if empty else ' non-empty'} string")
    return value


def _number(data: dict, key: str, default: float, positive: bool = True) -> float:
    value = data.get(key, default)
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0 or (positive and value == 0)):
        raise ConfigError(f"pushers.{key} must be a finite number {'> 0' if positive else '>= 0'}")
    return float(value)


def parse_pushers(data: Any, auth_secret: str = "") -> PushersSettings:
    """Check a ``pushers`` section (``{}`` or None: every pusher off)."""
    if not data:
        return PushersSettings()
    data = _section(data, _TOP, "pushers")
    size = data.get("max_message_size", 1024 * 1024)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError("pushers.max_message_size must be a whole number of bytes >= 0 (0: no limit)")
    initial = _number(data, "reconnect_initial_delay", 0.5)
    most = _number(data, "reconnect_max_delay", 10.0)
    if most < initial:
        raise ConfigError("pushers.reconnect_max_delay must not be below reconnect_initial_delay")
    redis = amqp = http = None
    if data.get("redis") is not None:
        r = _section(data["redis"], _REDIS, "pushers.redis")
        redis = RedisPusherSettings(RedisURL.parse(_string(r, "url", "pushers.redis"), "pushers.redis.url"),
                                    _string(r, "channel", "pushers.redis", DEFAULT_CHANNEL))
    if data.get("amqp") is not None:
        a = _section(data["amqp"], _AMQP, "pushers.amqp")
        url = _string(a, "url", "pushers.amqp")
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ConfigError(f"pushers.amqp.url must be amqp://user:password@host:port/vhost, not {url!r}")
        prefetch = a.get("prefetch", 100)
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or not 1 <= prefetch <= 65535:
            raise ConfigError("pushers.amqp.prefetch must be a whole number from 1 to 65535")
        amqp = AmqpPusherSettings(url, _string(a, "exchange", "pushers.amqp", DEFAULT_EXCHANGE),
                                  _string(a, "queue", "pushers.amqp", DEFAULT_QUEUE),
                                  _string(a, "routing_key", "pushers.amqp", "", empty=True), prefetch)
    if data.get("http") is not None:
        h = _section(data["http"], _HTTP, "pushers.http")
        path = _string(h, "path", "pushers.http", "/publish")
        if not path.startswith("/") or path == "/":
            raise ConfigError("pushers.http.path must be a path such as /publish")
        secret = h.get("secret", auth_secret)
        if not isinstance(secret, str) or not secret:
            raise ConfigError("pushers.http needs a secret (pushers.http.secret, or auth.secret)")
        http = HttpPusherSettings(_string(h, "listen", "pushers.http"), path, secret)
    return PushersSettings(size, _number(data, "log_interval", 10.0), initial, most, redis, amqp, http)
