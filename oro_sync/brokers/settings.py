"""The ``broker:`` section of ``oro-sync.yml`` (and ``--broker``).

``url`` is ``memory`` (the default: one process, no Redis), one Redis URL,
or a list of them: topics are then spread over the Redis servers by a hash
of the topic URI (:mod:`oro_sync.brokers.shards`).  URLs are
``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` for TLS.
Every problem is a :class:`~oro_sync.config.ConfigError` naming the setting.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from oro_sync.config import ConfigError

_KEYS = {"url", "node_id", "buffer", "buffer_bytes", "channel_prefix", "presence_interval", "presence_ttl",
         "reconnect_max_delay", "tls_ca"}


@dataclass(frozen=True)
class RedisURL:
    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False

    def __str__(self) -> str:
        """The URL without its password (for log lines)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


@dataclass
class BrokerSettings:
    #: Redis servers (empty: the in-memory broker).
    urls: list[RedisURL] = field(default_factory=list)
    #: This node's name in the cluster (random per process unless set).
    node_id: str = ""
    #: Publications for other nodes held while Redis is away; beyond, dropped and counted.
    buffer: int = 10000
    #: ... and at most this many bytes of them (0: no byte bound).
    buffer_bytes: int = 64 * 1024 * 1024
    #: Prefix of every Redis channel and key this server uses.
    channel_prefix: str = "oro-sync:"
    #: Seconds between this node's presence updates, and how long they live.
    presence_interval: float = 1.0
    presence_ttl: float = 5.0
    #: Longest wait between two reconnection attempts.
    reconnect_max_delay: float = 10.0
    #: PEM file of the certificate authority that signed rediss:// servers'
    #: certificates ("": the system's trusted authorities).
    tls_ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


def parse_redis_url(url: Any, where: str = "broker.url") -> RedisURL:
    if not isinstance(url, str):
        raise ConfigError(f"{where} must be a redis:// URL, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where}: {url!r} is not a valid URL ({e})") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} must look like redis://[:password@]host:port/db "
                          "(or rediss:// for TLS)")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(f"{where}: the database in {url!r} must be a number")
    return RedisURL(host=parts.hostname, port=port or 6379, db=int(path or 0),
                    password=unquote(parts.password) if parts.password else None,
                    username=unquote(parts.username) if parts.username else None,
                    tls=parts.scheme == "rediss")


def parse_broker(section: Any, override_url: str | None = None) -> BrokerSettings:
    """Read a ``broker:`` section; ``override_url`` is ``--broker``'s value
    (a URL, several separated by commas, or ``memory``)."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError("'broker' must be a mapping")
    unknown = set(section) - _KEYS
    if unknown:
        raise ConfigError(f"unknown broker setting(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(known: {', '.join(sorted(_KEYS))})")
    s = BrokerSettings()
    url = section.get("url", "memory") if override_url is None else override_url
    if isinstance(url, str):
        url = [u.strip() for u in url.split(",") if u.strip()] if url != "memory" else []
    if not isinstance(url, list):
        raise ConfigError("broker.url must be 'memory', a redis:// URL or a list of them")
    s.urls = [parse_redis_url(u, f"broker.url[{i}]" if len(url) > 1 else "broker.url")
              for i, u in enumerate(url)]
    if len(set(s.urls)) != len(s.urls):
        raise ConfigError("broker.url names the same Redis twice")
    node_id = section.get("node_id") or secrets.token_hex(6)
    if not isinstance(node_id, str) or not node_id.isprintable() or '"' in node_id or "\\" in node_id:
        raise ConfigError("broker.node_id must be a printable name without quotes or backslashes")
    s.node_id = node_id
    buffer = section.get("buffer", s.buffer)
    if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 0:
        raise ConfigError("broker.buffer must be a whole number >= 0")
    s.buffer = buffer
    buffer_bytes = section.get("buffer_bytes", s.buffer_bytes)
    if not isinstance(buffer_bytes, int) or isinstance(buffer_bytes, bool) or buffer_bytes < 0:
        raise ConfigError("broker.buffer_bytes must be a whole number >= 0")
    s.buffer_bytes = buffer_bytes
    prefix = section.get("channel_prefix", s.channel_prefix)
    if not isinstance(prefix, str):
        raise ConfigError("broker.channel_prefix must be a string")
    s.channel_prefix = prefix
    for key in ("presence_interval", "presence_ttl", "reconnect_max_delay"):
        value = section.get(key, getattr(s, key))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or value <= 0:
            raise ConfigError(f"broker.{key} must be a number of seconds > 0")
        setattr(s, key, float(value))
    tls_ca = section.get("tls_ca") or ""
    if not isinstance(tls_ca, str):
        raise ConfigError("broker.tls_ca must be the path of a PEM file")
    if tls_ca:
        try:
            with open(tls_ca, "rb") as f:
                if b"-----BEGIN CERTIFICATE-----" not in f.read():
                    raise ConfigError(f"broker.tls_ca: {tls_ca} holds no PEM certificate")
        except OSError as e:
            raise ConfigError(f"broker.tls_ca: cannot read {tls_ca} ({e.strerror})") from None
    s.tls_ca = tls_ca
    if s.presence_ttl <= s.presence_interval:
        raise ConfigError("broker.presence_ttl must be longer than broker.presence_interval")
    return s
