"""A raw-socket client that behaves like Oro >= 5.1's backend client.

``Oro\\Bundle\\SyncBundle\\Client`` on gos/websocket-client 1.5 (Oro 5.1.8,
6.1.11, 7.0.4), byte for byte where the server can tell: the request line
``GET /ws?ticket=... HTTP/1.1``, ``Upgrade: WebSocket``, ``Origin:
127.0.0.1`` (no scheme); it reads once, taking the 101 and WELCOME from that
read, and never reads again -- the socket stays open for the life of the
PHP process (a message-queue consumer) and only masked text frames
``[7, uri, payload, [], []]`` are written to it.  Not reading is done by
stopping the reactor from reading the TCP socket (under TLS too), so the
kernel's buffers fill exactly as they do under the PHP process.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, endpoints, protocol, reactor


def masked_text_frame(payload: bytes) -> bytes:
    """A client's masked text frame, with 16- or 64-bit lengths as needed."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _first_frame(data: bytes) -> bytes | None:
    """The payload of the first complete unmasked server frame in ``data``."""
    if len(data) < 2:
        return None
    n, at = data[1] & 0x7F, 2
    if n == 126:
        if len(data) < 4:
            return None
        n, at = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        if len(data) < 10:
            return None
        n, at = int.from_bytes(data[2:10], "big"), 10
    return data[at:at + n] if len(data) >= at + n else None


class OroBackendClient(protocol.Protocol):
    """Connect with :func:`connect_backend`; ``welcomed`` fires with the
    WELCOME message once the one read is done, ``lost`` when TCP goes."""

    def __init__(self, host: str, port: int, ticket: str, path: str = "/ws"):
        self.request = (f"GET {path}?ticket={quote(ticket, safe='')} HTTP/1.1\r\n"
                        f"Host: {host}:{port}\r\n"
                        "Upgrade: WebSocket\r\n"
                        "Connection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Protocol: wamp\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        "Origin: 127.0.0.1\r\n\r\n").encode()
        self.received = b""
        self.reads = 0
        self.welcomed: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.reads += 1
        self.received += data
        head, sep, rest = self.received.partition(b"\r\n\r\n")
        if not sep:
            return
        if not head.startswith(b"HTTP/1.1 101 "):
            self.stop_reading()
            self.welcomed.errback(RuntimeError(f"upgrade refused: {head[:200]!r}"))
            return
        frame = _first_frame(rest)
        if frame is None:
            return  # the 101 and WELCOME leave the server in one send()
        self.stop_reading()  # never reads again
        self.welcomed.callback(json.loads(frame))

    def stop_reading(self) -> None:
        transport = self.transport
        while not hasattr(transport, "socket"):  # under TLS: the TCP transport
            transport = transport.transport
        transport.stopReading()

    def publish(self, topic: str, payload: Any) -> None:
        self.transport.write(masked_text_frame(json.dumps([7, topic, payload, [], []]).encode()))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.welcomed.called:
            self.welcomed.errback(reason)
        self.lost.callback(None)


@defer.inlineCallbacks
def connect_backend(port: int, ticket: str, tls: Any = None, path: str = "/ws"):
    """An :class:`OroBackendClient` connected to 127.0.0.1:``port`` (over
    TLS with ``tls``, client connection options), after its one read."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    if tls is not None:
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    client = OroBackendClient("127.0.0.1", port, ticket, path)
    yield endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    welcome = yield client.welcomed
    return client, welcome
