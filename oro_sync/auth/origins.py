"""The Origin allow-list, as Oro checks it (host comparison only).

Allowed: ``localhost``, ``127.0.0.1``, the configured origins and the host of
the application URL.  Scheme and port are ignored.  Browsers always send an
Origin; backends and script clients often do not, so a missing Origin is
allowed unless ``allow_missing`` is off (Oro's strict behaviour).
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import urlsplit

DEFAULT_HOSTS = ("localhost", "127.0.0.1")

_ORIGIN_HEADER = re.compile(rb"(?im)^((?:sec-websocket-)?origin:[ \t]*)([^\r\n]*?)(?=[ \t]*\r?$)")


def host_of(value: str) -> str:
    """The host part of an origin or URL, as Oro extracts it.

    ``example`` -> ``example``, ``http://example.com/p`` -> ``example.com``,
    ``//www.example.com`` -> ``www.example.com``, ``127.0.0.1`` -> ``127.0.0.1``.
    Returns "" when there is none.
    """
    value = value.strip()
    if not value:
        return ""
    if "://" not in value and not value.startswith("//"):
        value = "http://" + value
    try:
        return (urlsplit(value).hostname or "").lower()
    except ValueError:
        return ""


# An Origin header is scheme://host[:port] and nothing else (RFC 6454); Oro's
# PHP backend sends a bare host, which fix_schemeless_origin gives a scheme.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_STRICT_ORIGIN = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]{0,15}://)?"            # scheme (optional: a bare host)
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*\.?"            # a DNS name or IPv4 address
    r"|\[[0-9A-Fa-f:.]{2,45}\])"                       # or [IPv6]
    r"(?::[0-9]{1,5})?/?")                             # port; a trailing "/" is tolerated


def origin_host(value: str) -> str:
    """The host of an Origin header parsed strictly, or "" when it is not
    exactly ``scheme://host[:port]`` (or a bare ``host[:port]``).

    Userinfo (``http://evil.com\\@localhost``), paths, queries, fragments,
    backslashes, whitespace or control characters inside, percent-escapes:
    all refused, where a lenient URL parser reads ``localhost`` out of
    ``http://evil.com\\@localhost``."""
    value = value.strip(" \t")
    if len(value) > 300:
        return ""
    match = _STRICT_ORIGIN.fullmatch(value)
    if match is None:
        return ""
    return match.group("host").rstrip(".").strip("[]").lower()


class OriginPolicy:
    """Decides whether a handshake's Origin header may connect."""

    def __init__(self, origins: Iterable[str] = (), application_url: str | None = "http://localhost",
                 allow_missing: bool = True):
        hosts = set(DEFAULT_HOSTS)
        hosts.update(h for h in (host_of(o) for o in origins) if h)
        if application_url:
            host = host_of(application_url)
            if host:
                hosts.add(host)
        self.hosts = frozenset(hosts)
        self.allow_missing = allow_missing

    def replace_hosts(self, origins: Iterable[str] = (), application_url: str | None = None) -> None:
        """Allow these origins and application URL instead, in place: the
        policy the factory holds changes for later handshakes, and open
        connections are not touched (Oro's configuration changed at runtime)."""
        self.hosts = type(self)(origins, application_url, self.allow_missing).hosts

    def check(self, origin: str | None) -> str | None:
        """None when allowed, else the reason for refusing."""
        if origin is None or not origin.strip():
            return None if self.allow_missing else "no Origin header"
        host = origin_host(origin)
        if host and host in self.hosts:
            return None
        return f"origin {origin!r} is not allowed"


def fix_schemeless_origin(head: bytes) -> bytes:
    """Give a scheme to an Origin header that has none (``Origin: 127.0.0.1``).

    Oro's PHP backend client sends such an Origin, which Autobahn's handshake
    parser rejects outright ("No host part"); with ``http://`` in front the
    handshake proceeds and the host is checked by :class:`OriginPolicy` as usual.
    """
    def fix(m: re.Match) -> bytes:
        value = m.group(2)
        if not value or b"://" in value or value.lower() == b"null":
            return m.group(0)
        if value.startswith(b"//"):
            return m.group(1) + b"http:" + value
        return m.group(1) + b"http://" + value

    return _ORIGIN_HEADER.sub(fix, head)
