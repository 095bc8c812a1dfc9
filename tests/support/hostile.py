"""What the hostile-client tests and the attack benchmark share: raw sockets
that speak just enough HTTP and WebSocket to attack, an oro-sync server in
a child process (so its memory can be read from /proc), and its RSS.

Raw sockets rather than a client library: an attacker does not finish its
upgrade request, or sends thousands of frames in one write, which no
well-behaved library would do.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

import yaml
from twisted.internet import defer, protocol

from oro_sync.config import DEFAULT_CONFIG

LISTENING = re.compile(rb"oro-sync listening on 127\.0\.0\.1:(\d+)")


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def upgrade_request(path: str = "/", protocol_name: str = "wamp", extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol_name}\r\n").encode() + extra + b"\r\n"


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One client-to-server frame (masked, as RFC 6455 requires)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text_frames(messages: list[Any]) -> bytes:
    return b"".join(masked_frame(json.dumps(m).encode("utf-8")) for m in messages)


class Raw(protocol.Protocol):
    """A raw TCP client: what it received, and Deferreds for the first HTTP
    response head and for the connection's end."""

    def __init__(self) -> None:
        self.received = b""
        self.response: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()
        self.is_lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.response.called and b"\r\n\r\n" in self.received:
            self.response.callback(self.received.split(b"\r\n\r\n", 1)[0])

    def connectionLost(self, reason: Any = None) -> None:
        self.is_lost = True
        if not self.response.called:
            self.response.callback(b"")
        self.lost.callback(None)

    @property
    def status(self) -> str:
        """The HTTP status line received, if any."""
        return self.received.split(b"\r\n", 1)[0].decode("latin-1") if self.received else ""


def open_raw(reactor: Any, port: int, source: str = "127.0.0.1") -> defer.Deferred:
    """A connected :class:`Raw` (from ``source``: any 127.x address works on
    Linux, so attackers can have an address of their own)."""
    return protocol.ClientCreator(reactor, Raw).connectTCP(
        "127.0.0.1", port, bindAddress=(source, 0), timeout=10)


def server_config(workdir: str, limits: dict[str, Any] | None = None,
                  log_level: str | None = None) -> str:
    """The shipped configuration for a child server listening on a free port
    of 127.0.0.1, with ``limits`` changed; returns the file's path."""
    with open(DEFAULT_CONFIG) as f:
        data = yaml.safe_load(f)
    base = os.path.dirname(DEFAULT_CONFIG)
    data["server"]["listen"] = "tcp:0:interface=127.0.0.1"
    data["routing"] = [os.path.join(base, p) for p in data["routing"]]
    data["auth"]["users"] = {"file": os.path.join(base, data["auth"]["users"]["file"])}
    data["limits"].update(limits or {})
    path = os.path.join(workdir, "oro-sync.yml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def shipped_secret() -> str:
    with open(DEFAULT_CONFIG) as f:
        return yaml.safe_load(f)["auth"]["secret"]


def shipped_user(name: str = "admin") -> tuple[str, str]:
    """(username, password hash) of a user of the shipped users.yml."""
    with open(os.path.join(os.path.dirname(DEFAULT_CONFIG), "users.yml")) as f:
        users = yaml.safe_load(f)["users"]
    user = next(u for u in users if u["username"] == name)
    return user["username"], user["password"]
