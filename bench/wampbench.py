#!/usr/bin/env python3
"""
wampbench.py - fan-out benchmark for WAMP v1 servers, WAMP v2 routers (WebSocket,
wamp.2.json) and bare WebSocket broadcast servers (--proto raw).

Derived from the project's shared load generator (shared/bench/wampbench.py); this copy
adds a WAMP v1 mode, several topics, short-lived publisher connections and an idle
(memory per connection) mode, so that every figure of bench/RESULTS.md comes from one
harness and compares.

Stdlib only (uses uvloop if importable). One coordinator process, W subscriber
worker processes (each holds N/W connections, lean asyncio.Protocol WebSocket
client with a hand-written frame parser), and one publisher process.

WAMP1 mode: every subscriber: (subprotocol "wamp") WELCOME -> [5, topic] (SUBSCRIBE) ->
            [2, id, "bench:barrier"] (a CALL to nothing): v1 has no SUBSCRIBED, but a
            server handles one connection's messages in order, so the CALLRESULT/CALLERROR
            proves the subscription is in place.
            publisher: WELCOME -> PUBLISH [7, topic, [ts_ns, seq, step, "pad"]] (Autobahn
            profile: excludeMe, the publisher is not subscribed anyway).
            EVENT frames are [8, topic, [ts_ns, seq, step, "pad"]].
WAMP mode:  every subscriber: HELLO(realm) -> WELCOME -> SUBSCRIBE(topic) -> SUBSCRIBED.
            publisher: HELLO -> PUBLISH [16, req, {}, topic, [ts_ns, seq, step, "pad"]]
            (never acknowledge:true; flow control is end-to-end, see wNN).
RAW mode:   subscribers just open the WebSocket (no subprotocol). The publisher opens
            url + "?pub" and sends a frame shaped like a WAMP EVENT
            [36, subid, pubid, {}, [ts_ns, seq, step, "pad"]]; the server must relay it
            verbatim to every other connection (it may answer the sender; ignored).

--topics K (WAMP modes): subscriber i subscribes to topic "<topic>.<i mod K>", event
            seq s is published to topic "<topic>.<s mod K>"; the sentinel subscribes to all.
            K=1 uses "<topic>" itself.

Steps (--steps): comma list of  rNNN  (open-loop NNN publishes/s for --duration s)
                             or  wNN   (closed-loop: at most NN publishes in flight, i.e. not yet
                                        received by a sentinel subscriber in the publisher process)
                             or  hNN   (open loop at NN% of the best delivered events/s of the
                                        steps before it: "latency at half saturation" is h50)
                             or  cNN   (short-lived publishers: NN concurrent loops of
                                        connect, handshake, WELCOME, one PUBLISH, close;
                                        reports connections/s; the way Oro's backend publishes).
Before each step, --probes sequential probe events are published and each awaited at the
sentinel: this checks the server is quiescent (drained) and gives an idle latency.
Each step is drained (until all expected events arrived or counts stop moving) before
the next. With --stop-when-saturated, once a step ends with the server more than
--saturated-lag seconds behind, the remaining open-loop steps are skipped (their backlog
would only cost drain time); w and c steps still run.
Latency = CLOCK_MONOTONIC(recv) - CLOCK_MONOTONIC(publish) (same host, all
processes share the clock), recorded on every --sample-every'th subscriber connection.
Server RSS / CPU is read from /proc for --server-pid (auto-detected from the listening
port if omitted; several pids allowed, e.g. crossbar controller + router worker).

Idle mode (--idle-steps 1000,5000,...): no publishing; subscribers are connected (and
subscribed) in increments up to each count, and the server RSS is sampled after each,
giving RSS per idle connection.

Everything is bounded: steps have fixed durations, drains have timeouts, --max-seconds
stops everything.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import time
from array import array
from typing import Any
from urllib.parse import urlparse

try:
    import uvloop  # optional
except Exception:  # pragma: no cover
    uvloop = None

#: fastscan.c compiled and loaded (see build_fastscan), or None.
FASTSCAN: Any = None


def build_fastscan(disabled: bool = False) -> str | None:
    """Compile bench/fastscan.c (once; again when the source changes) and load it.

    Returns a description for the report; None when it is off or no compiler worked."""
    global FASTSCAN
    if disabled:
        return None
    import ctypes
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(here, "fastscan.c")
    with open(src, "rb") as f:
        tag = hashlib.sha1(f.read()).hexdigest()[:12]
    lib = os.path.join(here, ".build", f"fastscan-{tag}.so")
    if not os.path.exists(lib):
        os.makedirs(os.path.dirname(lib), exist_ok=True)
        tmp = lib + f".{os.getpid()}.tmp"
        try:
            subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", tmp, src],
                           check=True, capture_output=True, timeout=120)
            os.replace(tmp, lib)
        except (OSError, subprocess.SubprocessError) as e:
            print(f"(fastscan.c not built, events are parsed in Python: {e})", file=sys.stderr)
            return None
    dll = ctypes.CDLL(lib)
    fn = dll.ws_scan
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_long,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_int64,
                   ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
    FASTSCAN = dll
    return "events counted in C (bench/fastscan.c)"


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
mono = time.monotonic_ns


def raise_nofile() -> tuple[int, int]:
    """Lift the soft fd limit to the hard one: 10,000+ sockets per process need it,
    and an unprivileged process cannot go past the hard limit anyway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def topic_names(base: str, k: int) -> list[str]:
    return [base] if k <= 1 else [f"{base}.{i}" for i in range(k)]


# ---------------------------------------------------------------- websocket bits
def mask_payload(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n == 0:
        return key
    k = (key * (n // 4 + 1))[:n]
    return key + (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        hdr = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        hdr = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        hdr = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return hdr + mask_payload(payload)


#: The WebSocket subprotocol each load mode offers (raw offers none).
SUBPROTOCOLS = {"wamp": "wamp.2.json", "wamp1": "wamp"}


class WSClient(asyncio.Protocol):
    """Minimal RFC6455 client protocol. Subclasses implement on_open() and on_message(buf, s, e, now)."""

    subprotocol: str | None = None
    #: fastscan.c's event loop for this connection (None: every frame in Python).
    scan = None
    record = False

    def __init__(self, host, port, path, done_fut):
        self.host, self.port, self.path = host, port, path
        self.done = done_fut  # resolved when "ready" (handshake + app-level setup)
        self.transport = None
        self.buf = b""
        self.open = False
        self.key = base64.b64encode(os.urandom(16))
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: " + self.key.decode(),
            "Sec-WebSocket-Version: 13",
        ]
        if self.subprotocol:
            req.append("Sec-WebSocket-Protocol: " + self.subprotocol)
        transport.write(("\r\n".join(req) + "\r\n\r\n").encode())

    def connection_lost(self, exc):
        self.closed = True
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def fail(self, why):
        if not self.done.done():
            self.done.set_exception(ConnectionError(why))
        if self.transport:
            self.transport.close()

    def send(self, payload: bytes, opcode=1):
        self.transport.write(client_frame(payload, opcode))

    def data_received(self, data):
        now = mono()
        if not self.open:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                if len(self.buf) > 16384:
                    self.fail("handshake too large")
                return
            head, self.buf = self.buf[:i].decode("latin1"), self.buf[i + 4:]
            lines = head.split("\r\n")
            if " 101 " not in lines[0] + " ":
                self.fail("handshake refused: " + lines[0])
                return
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            acc = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest()).decode()
            if hdrs.get("sec-websocket-accept") != acc:
                self.fail("bad Sec-WebSocket-Accept")
                return
            if self.subprotocol and hdrs.get("sec-websocket-protocol") != self.subprotocol:
                self.fail("subprotocol not agreed: %r" % hdrs.get("sec-websocket-protocol"))
                return
            self.open = True
            self.on_open()
            if not self.buf:
                return
            data = b""
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        scan = self.scan
        while n - pos >= 2:
            if scan is not None:  # events in C; the frame it stops at, below
                pos, status = scan(buf, n, pos, now, self.record)
                if status == 0:
                    break
                if status == 3:
                    continue
                if status == 2:
                    self.fail("masked server frame")
                    return
                if n - pos < 2:
                    break
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                hdr = 10
            if buf[pos + 1] & 0x80:  # servers must not mask
                self.fail("masked server frame")
                return
            end = pos + hdr + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op == 1 or op == 2 or op == 0:
                self.on_message(buf, pos + hdr, end, now)
            elif op == 9:
                self.send(buf[pos + hdr:end], 10)
            elif op == 8:
                if not self.closed:
                    try:
                        self.send(buf[pos + hdr:end], 8)
                    except Exception:
                        pass
                    self.transport.close()
                    self.closed = True
            pos = end
        self.buf = buf[pos:] if pos < n else b""

    def on_open(self):
        pass

    def on_message(self, buf, s, e, now):
        pass

    def close(self):
        if self.transport and not self.closed:
            try:
                self.send(b"\x03\xe8", 8)
            except Exception:
                pass
            self.transport.close()
            self.closed = True


# ---------------------------------------------------------------- subscriber side
class SubStats:
    """One worker's counts; fixed-size arrays, so that fastscan.c can write into them."""

    def __init__(self, nsteps):
        self.count = array("q", [0]) * nsteps
        self.first = array("q", [0]) * nsteps
        self.last = array("q", [0]) * nsteps
        self.lat = [array("q") for _ in range(nsteps)]
        self.other = 0
        self._scan = None

    def scanner(self, lib, record):
        """A ``scan(buf, n, pos, now) -> (pos, status)`` over fastscan.c's ws_scan, or None."""
        if lib is None:
            return None
        if self._scan is None:
            import ctypes

            nsteps = len(self.count)
            addr = [a.buffer_info()[0] for a in (self.count, self.first, self.last)]
            out = (ctypes.c_int64 * 2)()
            cap = 1 << 14
            latbuf = (ctypes.c_int64 * (2 * cap))()
            fn = lib.ws_scan
            lat = self.lat

            def scan(buf, n, pos, now, record):
                pos = fn(buf, n, pos, addr[0], addr[1], addr[2], nsteps, now,
                         latbuf if record else None, cap, out)
                k = out[0]
                if k:
                    for i in range(0, 2 * k, 2):
                        lat[latbuf[i]].append(latbuf[i + 1])
                return pos, out[1]

            self._scan = scan
        return self._scan


class Subscriber(WSClient):
    """One subscribed connection; counts events per step and samples their latency."""

    def __init__(self, host, port, path, done_fut, proto, realm, topics, stats, record):
        super().__init__(host, port, path, done_fut)
        self.proto, self.realm, self.topics = proto, realm, topics
        self.stats, self.record = stats, record
        self.subscribed = False
        self.pending = 0
        self.subprotocol = SUBPROTOCOLS.get(proto)

    def on_open(self):
        if self.proto == "wamp":
            self.send(json.dumps([1, self.realm, {"roles": {"subscriber": {}, "publisher": {}}}]).encode())
        elif self.proto == "raw":
            self.ready()

    def ready(self):
        self.subscribed = True
        self.scan = self.stats.scanner(FASTSCAN, self.record)
        if not self.done.done():
            self.done.set_result(True)

    def on_message(self, buf, s, e, now):
        if self.subscribed:
            i = buf.rfind(b"[", s, e)
            if i > s:
                p = buf[i + 1:e].split(b",", 3)
                try:
                    ts = int(p[0]); step = int(p[2])
                except (ValueError, IndexError):
                    self.stats.other += 1
                    return
                st = self.stats
                if st.count[step] == 0:
                    st.first[step] = now
                st.count[step] += 1
                st.last[step] = now
                if self.record:
                    st.lat[step].append(now - ts)
                return
            self.stats.other += 1
            return
        msg = json.loads(buf[s:e])
        if self.proto == "wamp1":
            if msg[0] == 0:  # WELCOME: subscribe, then a CALL as an in-order barrier
                for t in self.topics:
                    self.send(json.dumps([5, t]).encode())
                self.send(b'[2,"b","bench:barrier"]')
            elif msg[0] in (3, 4) and msg[1] == "b":  # CALLRESULT / CALLERROR of the barrier
                self.ready()
            return
        if msg[0] == 2:  # WELCOME
            for i, t in enumerate(self.topics):
                self.send(json.dumps([32, i + 1, {}, t]).encode())
            self.pending = len(self.topics)
        elif msg[0] == 33:  # SUBSCRIBED
            self.pending -= 1
            if self.pending <= 0:
                self.ready()
        elif msg[0] in (3, 8):  # ABORT / ERROR
            self.fail("router said: %r" % (msg,))


def worker_main(wid, conn, cfg):
    raise_nofile()
    if uvloop and not cfg["no_uvloop"]:
        uvloop.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    nsteps = len(cfg["steps"]) + 1  # last bucket: probe events
    stats = SubStats(nsteps)
    protos = []
    names = cfg["topic_names"]
    # Each worker connects from its own loopback address: connect() to one server port finds
    # free ephemeral ports slowly once ~half the range is taken (Linux prefers one parity for
    # connect), which made the last thousands of 20,000 connections crawl.
    local_addr = (f"127.0.0.{10 + wid}", 0) if cfg["host"] == "127.0.0.1" else None

    async def connect_all(indices):
        sem = asyncio.Semaphore(cfg["connect_concurrency"])
        ok = fail = 0
        errs: dict[str, int] = {}
        per_topic = [0] * len(names)

        async def one(idx):
            nonlocal ok, fail
            async with sem:
                fut = loop.create_future()
                tix = idx % len(names)
                try:
                    _, p = await asyncio.wait_for(loop.create_connection(
                        lambda: Subscriber(cfg["host"], cfg["port"], cfg["path"], fut, cfg["proto"],
                                           cfg["realm"], [names[tix]], stats, idx % cfg["sample_every"] == 0),
                        cfg["host"], cfg["port"], local_addr=local_addr), 30)
                    protos.append(p)
                    await asyncio.wait_for(fut, 30)
                    ok += 1
                    per_topic[tix] += 1
                except Exception as ex:
                    fail += 1
                    k = repr(ex)[:120]
                    errs[k] = errs.get(k, 0) + 1

        t0 = time.time()
        await asyncio.gather(*(one(i) for i in indices))
        return ok, fail, time.time() - t0, errs, per_topic

    stop = loop.create_future()

    def on_cmd():
        os.set_blocking(conn.fileno(), True)
        try:
            cmd = conn.recv()
        except EOFError:
            if not stop.done():
                stop.set_result(True)
            return
        c = cmd[0]
        if c == "connect":
            async def doit():
                res = await connect_all(cmd[1])
                os.set_blocking(conn.fileno(), True)
                conn.send(("ready",) + res)
            loop.create_task(doit())
        elif c == "stats":
            conn.send(("stats", list(stats.count), stats.other, sum(1 for p in protos if not p.closed)))
        elif c == "report":
            conn.send(("report", list(stats.count), list(stats.first), list(stats.last),
                       [a.tobytes() for a in stats.lat], stats.other))
        elif c == "quit":
            for p in protos:
                p.close()
            loop.call_later(0.3, lambda: stop.done() or stop.set_result(True))

    loop.add_reader(conn.fileno(), on_cmd)
    os.set_blocking(conn.fileno(), True)  # the loop may have made it non-blocking; big replies need blocking writes
    loop.run_until_complete(stop)
    loop.close()


# ---------------------------------------------------------------- publisher side
def publish_payload(proto: str, topic: bytes, req: int, ts: int, seq: int, step: int, pad: bytes) -> bytes:
    if proto == "wamp1":
        return b'[7,"%s",[%d,%d,%d,"%s"]]' % (topic, ts, seq, step, pad)
    if proto == "wamp":
        return b'[16,%d,{},"%s",[%d,%d,%d,"%s"]]' % (req, topic, ts, seq, step, pad)
    return b'[36,7500921998246805,%d,{},[%d,%d,%d,"%s"]]' % (5086731923286831 + seq, ts, seq, step, pad)


class Publisher(WSClient):
    """The long-lived publishing connection of r and w steps (and the probes)."""

    def __init__(self, host, port, path, done_fut, proto, realm, topics):
        super().__init__(host, port, path, done_fut)
        self.proto, self.realm = proto, realm
        self.topics = [t.encode() for t in topics]
        self.req = 0
        self.errors = 0
        self.subprotocol = SUBPROTOCOLS.get(proto)

    def on_open(self):
        if self.proto == "wamp":
            self.send(json.dumps([1, self.realm, {"roles": {"publisher": {}}}]).encode())
        elif self.proto == "raw" and not self.done.done():
            self.done.set_result(True)

    def on_message(self, buf, s, e, now):
        if not self.done.done():
            msg = json.loads(buf[s:e])
            if (self.proto == "wamp" and msg[0] == 2) or (self.proto == "wamp1" and msg[0] == 0):
                self.done.set_result(True)
            else:
                self.fail("router said: %r" % (msg,))
            return
        if self.proto == "wamp" and buf[s + 1:s + 3] == b"8,":
            self.errors += 1

    def publish(self, seq, step, pad):
        self.req += 1
        self.send(publish_payload(self.proto, self.topics[seq % len(self.topics)], self.req, mono(), seq, step, pad))


class ChurnPublisher(WSClient):
    """A short-lived publisher: connect, handshake, WELCOME, one PUBLISH, close.

    Oro's PHP backend opens one connection per publish, so connection set-up and
    tear-down are as much the server's hot path as fan-out is."""

    def __init__(self, host, port, path, done_fut, proto, realm, topic: bytes, seq, step, pad):
        super().__init__(host, port, path, done_fut)
        self.proto, self.realm, self.topic = proto, realm, topic
        self.seq, self.step, self.pad = seq, step, pad
        self.subprotocol = SUBPROTOCOLS.get(proto)

    def on_open(self):
        if self.proto == "wamp":
            self.send(json.dumps([1, self.realm, {"roles": {"publisher": {}}}]).encode())
        elif self.proto == "raw":
            self.fire()

    def fire(self):
        self.send(publish_payload(self.proto, self.topic, 1, mono(), self.seq, self.step, self.pad))
        self.close()
        if not self.done.done():
            self.done.set_result(True)

    def on_message(self, buf, s, e, now):
        if self.done.done():
            return
        msg = json.loads(buf[s:e])
        if (self.proto == "wamp" and msg[0] == 2) or (self.proto == "wamp1" and msg[0] == 0):
            self.fire()
        else:
            self.fail("server said: %r" % (msg,))


class Sentinel(Subscriber):
    """Subscriber living in the publisher process: gives the publisher end-to-end feedback
    (closed-loop window mode, quiescence probes)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.last_seq = 0
        self.last_lat = 0
        self.waiter = None

    def ready(self):
        super().ready()
        self.scan = None  # it reads each event's seq itself

    def on_message(self, buf, s, e, now):
        if not self.subscribed:
            return Subscriber.on_message(self, buf, s, e, now)
        i = buf.rfind(b"[", s, e)
        p = buf[i + 1:e].split(b",", 3)
        try:
            ts = int(p[0]); seq = int(p[1])
        except (ValueError, IndexError):
            return
        self.last_seq = seq
        self.last_lat = now - ts
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_seq(self, seq, timeout):
        """wait until an event with sequence >= seq was seen; returns True on success."""
        loop = asyncio.get_running_loop()
        t_end = time.monotonic() + timeout
        while self.last_seq < seq:
            left = t_end - time.monotonic()
            if left <= 0:
                return False
            self.waiter = loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, left)
            except asyncio.TimeoutError:
                return False
        return True


def pctl(sorted_list: list, q: float) -> float:
    if not sorted_list:
        return float("nan")
    return sorted_list[min(len(sorted_list) - 1, int(q * len(sorted_list)))]


def publisher_main(conn, cfg):
    raise_nofile()
    if uvloop and not cfg["no_uvloop"]:
        uvloop.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pad = b"x" * cfg["pad"]
    names = cfg["topic_names"]
    bnames = [t.encode() for t in names]

    async def churn(step: int, conc: int, tend: int, seq0: int) -> tuple[int, int, int, list, dict]:
        """conc loops of one-publish connections until tend; returns (sent, last seq, errors,
        cycle times ns, error kinds)."""
        state = {"seq": seq0, "sent": 0, "errors": 0}
        cycles: list[int] = []
        errs: dict[str, int] = {}
        path = cfg["path"] + ("?pub" if cfg["proto"] == "raw" else "")

        async def one_loop():
            while mono() < tend:
                state["seq"] += 1
                seq = state["seq"]
                fut = loop.create_future()
                c0 = mono()
                try:
                    tr, _ = await asyncio.wait_for(loop.create_connection(
                        lambda: ChurnPublisher(cfg["host"], cfg["port"], path, fut, cfg["proto"], cfg["realm"],
                                               bnames[seq % len(bnames)], seq, step, pad),
                        cfg["host"], cfg["port"]), 10)
                    await asyncio.wait_for(fut, 10)
                    state["sent"] += 1
                    cycles.append(mono() - c0)
                except Exception as ex:
                    state["errors"] += 1
                    k = repr(ex)[:100]
                    errs[k] = errs.get(k, 0) + 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one_loop() for _ in range(conc)))
        return state["sent"], state["seq"], state["errors"], cycles, errs

    async def run():
        fut = loop.create_future()
        path = cfg["path"] + ("?pub" if cfg["proto"] == "raw" else "")
        _, p = await loop.create_connection(
            lambda: Publisher(cfg["host"], cfg["port"], path, fut, cfg["proto"], cfg["realm"], names),
            cfg["host"], cfg["port"])
        await asyncio.wait_for(fut, 20)
        fut2 = loop.create_future()
        _, sen = await loop.create_connection(
            lambda: Sentinel(cfg["host"], cfg["port"], cfg["path"], fut2, cfg["proto"], cfg["realm"], names,
                             SubStats(len(cfg["steps"]) + 1), False),
            cfg["host"], cfg["port"])
        await asyncio.wait_for(fut2, 30)
        conn.send(("ready",))
        seq = 0
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd[0] == "quit":
                p.close(); sen.close()
                await asyncio.sleep(0.1)
                return
            if cmd[0] == "probe":
                # quiescence + idle latency: k sequential probe events (step index == nsteps:
                # the "probe" bucket), each awaited at the sentinel.
                _, k, timeout = cmd
                lats = []
                t0 = time.monotonic()
                ok = True
                for _ in range(k):
                    seq += 1
                    p.publish(seq, len(cfg["steps"]), pad)
                    if not await sen.wait_seq(seq, timeout):
                        ok = False
                        break
                    lats.append(sen.last_lat)
                conn.send(("probed", ok, time.monotonic() - t0, lats))
                continue
            _, step, kind, val, dur = cmd
            t0 = mono()
            tend = t0 + int(dur * 1e9)
            sent = 0
            blocked = 0
            seq_first = seq + 1
            extra: dict[str, Any] = {}
            if kind == "r":  # open loop at val msgs/s
                while True:
                    now = mono()
                    if now >= tend:
                        break
                    target = int((now - t0) * val / 1e9) + 1
                    if p.transport.get_write_buffer_size() > 4 << 20:
                        blocked += 1  # server not reading: we are being back-pressured
                        await asyncio.sleep(0.001)
                        continue
                    while sent < target:
                        seq += 1
                        p.publish(seq, step, pad)
                        sent += 1
                    # sleep until the next publish is due (>= 1 ms: event-loop timer granularity)
                    nxt = t0 + int(sent * 1e9 / val)
                    await asyncio.sleep(max(0.001, (nxt - mono()) / 1e9))
            elif kind == "w":  # closed loop: at most val publishes not yet seen by the sentinel subscriber
                while mono() < tend:
                    while seq - sen.last_seq < val:
                        seq += 1
                        p.publish(seq, step, pad)
                        sent += 1
                    if not await sen.wait_seq(seq - val + 1, 30):
                        blocked += 1
                        break
                await sen.wait_seq(seq, 30)
            else:  # churn: short-lived publisher connections
                sent, seq, errors, cycles, errs = await churn(step, val, tend, seq)
                cycles.sort()
                extra = dict(conn_errors=errors, conn_error_kinds=errs,
                             cycle_p50_ms=pctl(cycles, 0.5) / 1e6, cycle_p99_ms=pctl(cycles, 0.99) / 1e6)
            t1 = mono()
            conn.send(("done", sent, t0, t1, blocked, p.errors, seq_first, seq, extra))

    try:
        loop.run_until_complete(run())
    except Exception as ex:
        conn.send(("error", repr(ex)))
    loop.close()


# ---------------------------------------------------------------- /proc helpers
def proc_cpu_rss(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        cpu = (int(parts[11]) + int(parts[12])) / CLK_TCK
        rss = int(parts[21]) * PAGE
        return cpu, rss
    except Exception:
        return 0.0, 0


def pids_listening_on(port):
    inodes = set()
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[3] == "0A" and int(p[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(p[9])
        except FileNotFoundError:
            pass
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    l = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if l.startswith("socket:[") and l[8:-1] in inodes:
                    pids.add(int(pid))
                    break
        except (PermissionError, FileNotFoundError):
            pass
    return sorted(pids)


def cpu_times():
    """(total, idle, steal) jiffies of the whole machine"""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4], v[7] if len(v) > 7 else 0


def pct(sorted_arr, q):
    if not sorted_arr:
        return float("nan")
    i = min(len(sorted_arr) - 1, int(q * len(sorted_arr)))
    return sorted_arr[i]


# ---------------------------------------------------------------- coordinator
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:18080/ws")
    ap.add_argument("--proto", choices=["wamp1", "wamp", "raw"], default="wamp")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--topic", default="bench.fanout")
    ap.add_argument("--topics", type=int, default=1, help="number of topics (WAMP modes)")
    ap.add_argument("-n", "--subscribers", type=int, default=100)
    ap.add_argument("-w", "--workers", type=int, default=2, help="subscriber processes")
    ap.add_argument("--steps", default="r10,r50,r100,w10")
    ap.add_argument("--idle-steps", default="", help="idle mode: connection counts to sample RSS at")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    ap.add_argument("--pad", type=int, default=20, help="bytes of padding string in the event args")
    ap.add_argument("--sample-every", type=int, default=0, help="record latency on every k-th connection (default: ~100 conns)")
    ap.add_argument("--connect-concurrency", type=int, default=100)
    ap.add_argument("--drain-timeout", type=float, default=40.0)
    ap.add_argument("--stop-when-saturated", action="store_true")
    ap.add_argument("--saturated-lag", type=float, default=1.0)
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--probes", type=int, default=9, help="sequential probe events before each step (idle latency)")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--no-fastscan", action="store_true",
                    help="parse events in Python, not in bench/fastscan.c (slower clients)")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--label", default="")
    a = ap.parse_args(argv)
    raise_nofile()

    u = urlparse(a.url)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), "loopback targets only"
    steps = []
    for s in a.steps.split(","):
        s = s.strip()
        if not s or a.idle_steps:
            continue
        assert s[0] in "rwch", s
        steps.append((s[0], int(s[1:])))
    idle_steps = [int(x) for x in a.idle_steps.split(",") if x.strip()]
    if idle_steps:
        a.subscribers = max(idle_steps)
    names = topic_names(a.topic, a.topics if a.proto != "raw" else 1)
    cfg = dict(host=u.hostname, port=u.port or 80, path=(u.path or "/"), proto=a.proto, realm=a.realm,
               topic_names=names, steps=steps, pad=a.pad, connect_concurrency=a.connect_concurrency,
               sample_every=a.sample_every or max(1, a.subscribers // 100), no_uvloop=a.no_uvloop)
    spids = a.server_pid or pids_listening_on(cfg["port"])
    deadline = time.time() + a.max_seconds
    out: dict[str, Any] = {
        "label": a.label, "url": a.url, "proto": a.proto, "subscribers": a.subscribers, "topics": len(names),
        "workers": a.workers, "server_pids": spids, "uvloop": bool(uvloop) and not a.no_uvloop,
        "duration": a.duration, "pad": a.pad, "steps": [], "idle": []}

    def server_sample():
        cpu = rss = 0
        for pid in spids:
            c, r = proc_cpu_rss(pid)
            cpu += c
            rss += r
        return cpu, rss

    print(f"# {a.label} proto={a.proto} url={a.url} N={a.subscribers} topics={len(names)} workers={a.workers} "
          f"server_pids={spids} uvloop={out['uvloop']}", flush=True)
    _, rss0 = server_sample()
    out["server_rss_idle_mb"] = rss0 / 2**20

    out["client_loop"] = build_fastscan(a.no_fastscan) or "events parsed in Python"
    ctx = mp.get_context("fork")  # the workers inherit the loaded library
    workers = []
    for w in range(a.workers):
        pc, cc = ctx.Pipe()
        pr = ctx.Process(target=worker_main, args=(w, cc, cfg), daemon=True)
        pr.start()
        workers.append((pr, pc))
    pub = None
    pc = None
    if not idle_steps:
        pc, cc = ctx.Pipe()
        pub = ctx.Process(target=publisher_main, args=(cc, cfg), daemon=True)
        pub.start()
    allchild = [p for p, _ in workers] + ([pub] if pub else [])

    def child_cpu():
        return sum(proc_cpu_rss(p.pid)[0] for p in allchild)

    def connect(lo: int, hi: int) -> tuple[int, int, dict, list]:
        """Connect subscribers lo..hi-1, spread round-robin over the workers."""
        for w, (_, c) in enumerate(workers):
            c.send(("connect", [i for i in range(lo, hi) if i % a.workers == w]))
        ok = fail = 0
        errs: dict[str, int] = {}
        per_topic = [0] * len(names)
        for _, c in workers:
            r = c.recv()
            ok += r[1]; fail += r[2]
            for k, v in r[4].items():
                errs[k] = errs.get(k, 0) + v
            for i, v in enumerate(r[5]):
                per_topic[i] += v
        return ok, fail, errs, per_topic

    try:
        if idle_steps:
            ok_total = 0
            lo = 0
            c_start = server_sample()[0]
            for target in idle_steps:
                t0 = time.time()
                ok, fail, errs, _ = connect(lo, target)
                tconn = time.time() - t0
                ok_total += ok
                time.sleep(1.0)  # let the server settle (GC, buffers) before sampling
                _, rss = server_sample()
                open_now = 0
                for _, c in workers:
                    c.send(("stats",))
                for _, c in workers:
                    open_now += c.recv()[3]
                row = dict(target=target, connected=ok_total, open=open_now, failed=fail, errors=errs,
                           connect_s=tconn, conn_per_s=ok / tconn if tconn else 0, rss_mb=rss / 2**20,
                           kb_per_conn=(rss - rss0) / max(ok_total, 1) / 1024)
                out["idle"].append(row)
                print(f"idle {target}: connected {ok_total} (open {open_now}, failed {fail}) in {tconn:.1f}s "
                      f"({row['conn_per_s']:.0f}/s); server RSS {rss0 / 2**20:.1f} -> {rss / 2**20:.1f} MB "
                      f"= {row['kb_per_conn']:.2f} KB/conn" + (f"  errors {errs}" if errs else ""), flush=True)
                lo = target
                if fail or time.time() > deadline:
                    break
            out["server_cpu_connect_s"] = server_sample()[0] - c_start
            out["connected"] = ok_total
            return out

        # connect subscribers
        t0 = time.time()
        ok, fail, errs, per_topic = connect(0, a.subscribers)
        tconn = time.time() - t0
        _, rss1 = server_sample()
        out.update(connected=ok, connect_failed=fail, connect_errors=errs, connect_s=tconn,
                   server_rss_connected_mb=rss1 / 2**20,
                   kb_per_subscriber=(rss1 - rss0) / max(ok, 1) / 1024)
        print(f"connected {ok}/{a.subscribers} (failed {fail}) in {tconn:.2f}s "
              f"({ok / tconn:.0f} conn+sub/s); server RSS idle {rss0 / 2**20:.1f} MB -> {rss1 / 2**20:.1f} MB "
              f"(+{(rss1 - rss0) / max(ok, 1) / 1024:.1f} KB/conn)", flush=True)
        if errs:
            print("  connect errors:", errs)
        r = pc.recv()
        if r[0] != "ready":
            raise SystemExit("publisher failed: %r" % (r,))
        time.sleep(0.5)

        hdr = (f"{'step':>6} {'sent':>7} {'pub/s':>8} {'deliv':>9} {'compl%':>7} {'events/s':>9} "
               f"{'p50ms':>8} {'p99ms':>8} {'maxms':>8} {'srvCPU%':>7} {'cliCPU%':>7} {'srvRSSmax':>9} "
               f"{'idle_ms':>7} {'steal%':>6}")
        saturated = False
        peak_evs = 0.0  # the best delivered events/s of the steps so far (for hNN)
        fanout = ok / len(names)  # deliveries per publish
        for si, (kind, val) in enumerate(steps):
            if time.time() > deadline:
                print("deadline reached; stopping")
                break
            if saturated and kind == "r":
                print(f"  .. step {kind}{val} skipped (server already saturated)", flush=True)
                continue
            # quiescence probe: the server must have drained everything before we measure
            pc.send(("probe", a.probes, 60))
            pr = pc.recv()
            probe_ok, probe_s, probe_lats = pr[1], pr[2], sorted(pr[3])
            if not probe_ok:
                print(f"step {kind}{val}: server did not deliver a probe event within 60s; stopping", flush=True)
                break
            c0, _ = server_sample()
            cc0 = child_cpu()
            m0 = cpu_times()
            w0 = time.time()
            extra_h: dict[str, Any] = {}
            if kind == "h":  # open loop at val% of the saturation seen so far
                if not peak_evs:
                    print(f"  .. step h{val} skipped (no earlier step to take the saturation from)", flush=True)
                    continue
                rate = max(1, round(peak_evs * val / 100 / max(fanout, 1)))
                extra_h = dict(of_peak_events_per_s=peak_evs, rate=rate)
                print(f"  .. step h{val}: {val}% of {peak_evs:,.0f} events/s = {rate} publishes/s", flush=True)
                pc.send(("step", si, "r", rate, a.duration))
            else:
                pc.send(("step", si, kind, val, a.duration))
            rss_max = 0
            # sample RSS while publishing
            while not pc.poll(0.2):
                rss_max = max(rss_max, server_sample()[1])
            r = pc.recv()
            if r[0] != "done":
                raise SystemExit("publisher error: %r" % (r,))
            _, sent, pt0, pt1, blocked, perr, seq_first, seq_last, extra = r
            tpub_end = time.time()
            # every event seq goes to topic seq % K, which has per_topic[seq % K] subscribers
            expected = sum(per_topic[q % len(names)] for q in range(seq_first, seq_last + 1)) \
                if kind != "c" else sent * ok  # churn: one topic per publish, seqs of failed cycles unused
            if kind == "c" and len(names) > 1:
                expected = round(sent * ok / len(names))
            # drain: until all expected arrived, or counts stop moving for 2s while the server is
            # idle too (an overloaded server may spend seconds in one read, fanning out hundreds of
            # buffered publishes before its first write reaches a socket)
            prev, still_since = -1, time.time()
            cpu_prev = server_sample()[0]
            tdrain_end = time.time() + a.drain_timeout
            tot = 0
            while time.time() < tdrain_end:
                tot = 0
                for _, c in workers:
                    c.send(("stats",))
                for _, c in workers:
                    m = c.recv()
                    tot += m[1][si]
                rss_max = max(rss_max, server_sample()[1])
                if tot >= expected:
                    break
                cpu_now = server_sample()[0]
                if tot != prev or cpu_now - cpu_prev > 0.05:
                    prev, still_since, cpu_prev = tot, time.time(), cpu_now
                elif time.time() - still_since > 2.0:
                    break
                time.sleep(0.05)
            drain_s = time.time() - tpub_end
            if kind != "c" and tot:
                # a first estimate (the report recomputes it from the arrival times)
                took = max((pt1 - pt0) / 1e9, time.monotonic() - pt0 / 1e9 - 0.05)
                peak_evs = max(peak_evs, tot / took)
            if a.stop_when_saturated and kind == "r" and drain_s > a.saturated_lag:
                saturated = True
            c1, _ = server_sample()
            cc1 = child_cpu()
            m1 = cpu_times()
            w1 = time.time()
            dt_j = max(1, m1[0] - m0[0])
            out["steps"].append(dict(kind=kind, val=val, sent=sent, pub_t0=pt0, pub_t1=pt1, blocked=blocked,
                                     probe_s=probe_s, idle_lat_ms=pct(probe_lats, 0.5) / 1e6,
                                     machine_idle_pct=100 * (m1[1] - m0[1]) / dt_j,
                                     steal_pct=100 * (m1[2] - m0[2]) / dt_j, drain_s=drain_s,
                                     pub_errors=perr, expected=expected, server_cpu_s=c1 - c0,
                                     client_cpu_s=cc1 - cc0, wall_s=w1 - w0, server_rss_max_mb=rss_max / 2**20,
                                     step_index=si, **extra, **extra_h))
            st = out["steps"][-1]
            print(f"  .. step {kind}{val} done: sent {sent}, drained {tot}/{expected} {drain_s:.1f}s after, "
                  f"probe idle latency p50 {st['idle_lat_ms']:.2f} ms (quiescent after {probe_s:.2f}s)"
                  + (f", {sent / ((pt1 - pt0) / 1e9):.0f} conn/s, {extra.get('conn_errors', 0)} failed"
                     if kind == "c" else ""), flush=True)
            time.sleep(0.2)

        # collect
        nst = len(steps)
        agg_count = [0] * nst
        agg_first: list = [None] * nst
        agg_last = [0] * nst
        lats = [array("q") for _ in range(nst)]
        other = 0
        for _, c in workers:
            c.send(("report",))
        for _, c in workers:
            m = c.recv()
            for i in range(nst):
                agg_count[i] += m[1][i]
                if m[2][i]:
                    agg_first[i] = m[2][i] if agg_first[i] is None else min(agg_first[i], m[2][i])
                agg_last[i] = max(agg_last[i], m[3][i])
                a_ = array("q")
                a_.frombytes(m[4][i])
                lats[i].extend(a_)
            other += m[5]
        print(hdr, flush=True)
        for st in out["steps"]:
            i = st["step_index"]
            kind, val = st["kind"], st["val"]
            ls = sorted(lats[i])
            deliv = agg_count[i]
            span = (agg_last[i] - st["pub_t0"]) / 1e9 if agg_last[i] else float("nan")
            evs = deliv / span if span and span == span and span > 0 else 0
            pubrate = st["sent"] / ((st["pub_t1"] - st["pub_t0"]) / 1e9)
            st.update(delivered=deliv, completeness=deliv / st["expected"] if st["expected"] else 0,
                      lost=max(0, st["expected"] - deliv), duplicated=max(0, deliv - st["expected"]),
                      events_per_s=evs, pub_per_s=pubrate, lat_samples=len(ls),
                      p50_ms=pct(ls, 0.5) / 1e6, p90_ms=pct(ls, 0.9) / 1e6, p99_ms=pct(ls, 0.99) / 1e6,
                      max_ms=(ls[-1] / 1e6 if ls else float("nan")),
                      server_cpu_pct=100 * st["server_cpu_s"] / st["wall_s"],
                      client_cpu_pct=100 * st["client_cpu_s"] / st["wall_s"])
            print(f"{kind + str(val):>6} {st['sent']:>7} {pubrate:>8.0f} {deliv:>9} {100 * st['completeness']:>7.2f} "
                  f"{evs:>9.0f} {st['p50_ms']:>8.2f} {st['p99_ms']:>8.2f} {st['max_ms']:>8.1f} "
                  f"{st['server_cpu_pct']:>7.0f} {st['client_cpu_pct']:>7.0f} {st['server_rss_max_mb']:>9.1f} "
                  f"{st['idle_lat_ms']:>7.2f} {st['steal_pct']:>6.1f}"
                  + (f"  (publisher back-pressured {st['blocked']}x)" if st["blocked"] else "")
                  + (f"  (pub errors {st['pub_errors']})" if st["pub_errors"] else ""), flush=True)
        out["unparsed_frames"] = other
        _, rss2 = server_sample()
        out["server_rss_end_mb"] = rss2 / 2**20
        print(f"server RSS at end {rss2 / 2**20:.1f} MB; unparsed frames {other}", flush=True)
    finally:
        for _, c in workers:
            try:
                c.send(("quit",))
            except Exception:
                pass
        if pc is not None:
            try:
                pc.send(("quit",))
            except Exception:
                pass
        for p in allchild:
            p.join(5)
            if p.is_alive():
                p.kill()
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
