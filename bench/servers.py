#!/usr/bin/env python3
"""The servers under test, each run as its own process: ``servers.py KIND --port-file F``.

Kinds:

``oro``       oro-sync's WAMP v1 front end (``WampServerFactory`` with the benchmark
              topics registered for pub/sub), imported from this repository, so the
              numbers are those of the tree being benchmarked.
``autobahn``  a bare Autobahn broadcast server, no WAMP: each received message is sent
              with ``sendMessage`` to every other client.  Autobahn frames (and copies)
              the payload once per receiver: the limit of "plain Autobahn".
``twisted``   a bare Twisted protocol with a hand-rolled WebSocket handshake and frame
              parser: each received text message is framed once and the same bytes are
              written to every other client.  Nothing can fan out faster on this stack,
              so it is the ceiling oro-sync's pre-framed delivery is measured against.

Every server listens on 127.0.0.1 on a free port (port 0) with a deep accept backlog
(Twisted's default of 50 drops SYNs when thousands of clients connect at once), writes
the port to ``--port-file`` once listening, and raises its fd limit to the hard limit.
``--cprofile OUT`` runs the reactor under cProfile and dumps the stats on SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from common import accept_key, frames, raise_nofile, server_frame, xor_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # benchmark the tree, not whatever is installed

from twisted.internet import epollreactor  # noqa: E402

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402
from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,  # noqa: E402
                            globalLogBeginner, textFileLogObserver)

#: Topics registered on the WAMP servers: the base topic plus base.0 .. base.(MAX_TOPICS-1).
MAX_TOPICS = 1000


# ---------------------------------------------------------------- oro-sync
def oro_factory(topic: str) -> Any:
    from oro_sync.websocket.factory import WampServerFactory
    from oro_sync.websocket.limits import Limits

    # The load generator's publisher stands for Oro's backend, which the
    # per-connection message budget exempts (this server has no tickets).
    factory = WampServerFactory(None, limits=Limits(message_rate=0))
    factory.registerForPubSub(topic)
    for i in range(MAX_TOPICS):
        factory.registerForPubSub(f"{topic}.{i}")
    return factory


# ---------------------------------------------------------------- bare Autobahn
def autobahn_factory(topic: str) -> Any:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Broadcast(WebSocketServerProtocol):
        """Relays each message to every other open connection with sendMessage."""

        def onOpen(self) -> None:
            self.factory.clients[self] = None

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            for c in self.factory.clients:
                if c is not self:
                    c.sendMessage(payload, isBinary)

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            self.factory.clients.pop(self, None)

    factory = WebSocketServerFactory(None)
    factory.protocol = Broadcast
    factory.clients = {}  # insertion-ordered: the sentinel (last to connect) gets events last
    return factory


# ---------------------------------------------------------------- bare Twisted
class PreFramed(protocol.Protocol):
    """Minimal RFC 6455 server: handshake, masked client frames in, one frame out per
    message, the same bytes written to every other client (no fragmentation support;
    the load generator never fragments)."""

    def __init__(self) -> None:
        self.buf = b""
        self.open = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                self.buf = buf
                if len(buf) > 16384:
                    self.transport.loseConnection()
                return
            key = b""
            for line in buf[:i].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = accept_key(key)
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.open = True
            self.factory.clients[self] = None
            buf = buf[i + 4:]
        pos, n = 0, len(buf)
        for b0, start, end, masked in frames(buf):
            if masked:
                payload = xor_mask(buf[start - 4:start], buf[start:end])
            else:
                payload = buf[start:end]
            op = b0 & 0x0F
            if op in (1, 2):
                data_out = server_frame(payload, op)
                for c in self.factory.clients:
                    if c is not self:
                        c.transport.write(data_out)
            elif op == 9:
                self.transport.write(server_frame(payload, 10))
            elif op == 8:
                self.transport.write(server_frame(payload[:2], 8))
                self.transport.loseConnection()
                self.factory.clients.pop(self, None)
                self.buf = b""
                return
            pos = end
        self.buf = buf[pos:] if pos < n else b""

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.clients.pop(self, None)


def twisted_factory(topic: str) -> Any:
    factory = protocol.ServerFactory()
    factory.protocol = PreFramed
    factory.clients = {}
    return factory


def dump_allocations(path: str, top: int = 25) -> None:
    """Where the live Python memory is (by source line), as JSON rows
    [where, KiB, blocks]: what a connection costs, and whose code allocates it."""
    import gc
    import json
    import tracemalloc

    gc.collect()
    snap = tracemalloc.take_snapshot()
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    rows = [["(total traced)", total / 1024, sum(s.count for s in stats)]]
    for s in stats[:top]:
        fr = s.traceback[0]
        where = "/".join(fr.filename.split("/")[-3:]) + f":{fr.lineno}"
        rows.append([where, s.size / 1024, s.count])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f)
    os.replace(tmp, path)


FACTORIES = {"oro": oro_factory, "autobahn": autobahn_factory, "twisted": twisted_factory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(FACTORIES))
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--topic", default="bench.fanout")
    ap.add_argument("--cprofile", default="", help="write cProfile stats here on SIGTERM")
    ap.add_argument("--tracemalloc", default="", help="trace allocations; write the top ones here on SIGUSR1")
    a = ap.parse_args()
    raise_nofile()
    if a.tracemalloc:
        import tracemalloc

        tracemalloc.start(1)
        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(dump_allocations, a.tracemalloc))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr),
                              [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False)
    factory = FACTORIES[a.kind](a.topic)
    port = reactor.listenTCP(0, factory, backlog=4096, interface="127.0.0.1")
    if hasattr(factory, "listeningPort"):
        # oro-sync's handshake admission control pauses accepting through the
        # port; twistd's OroSyncService sets it, a hand-built factory must too.
        factory.listeningPort = port
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port.getHost().port))
    os.replace(tmp, a.port_file)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    if a.cprofile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        reactor.run(installSignalHandlers=False)
        prof.disable()
        prof.dump_stats(a.cprofile)
    else:
        reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
