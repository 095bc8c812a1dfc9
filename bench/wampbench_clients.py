"""The load generator's client side for bench/wampbench.py: the WebSocket client, the
subscriber worker processes and the publisher process (the coordinator that starts and
drives them, and prints and saves the figures, is wampbench.py).

A lean asyncio.Protocol WebSocket client with a hand-written frame parser, so that the
clients cost less CPU than the server they measure; subscribers count events in C
(bench/fastscan.c, see build_fastscan) when a compiler is there, else in Python.

``--proto wampmsgpack``: subscribers (and the sentinel) speak wamp.2.msgpack, so
the server encodes each EVENT once in MessagePack; the publisher still speaks
wamp.2.json, so that the row differs from the JSON v2 row in the subscribers'
serializer only.  That mode needs the ``msgpack`` package (oro-sync's own
dependency); the others are stdlib only.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import sys
import time
from array import array
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    # common.py when loaded by path (tests/test_bench_fastscan.py); appended, so that
    # bench/'s modules never shadow the importer's own
    sys.path.append(HERE)

from common import accept_key, client_frame, frame_header, mono, quantile, raise_nofile, upgrade_request  # noqa: E402

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

    src = os.path.join(HERE, "fastscan.c")
    with open(src, "rb") as f:
        tag = hashlib.sha1(f.read()).hexdigest()[:12]
    lib = os.path.join(HERE, ".build", f"fastscan-{tag}.so")
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
    for fn in (dll.ws_scan, dll.ws_scan_msgpack):
        fn.restype = ctypes.c_long
        fn.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_long,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
    FASTSCAN = dll
    return "events counted in C (bench/fastscan.c)"


#: The WebSocket subprotocol each load mode offers (raw offers none).
SUBPROTOCOLS = {"wamp": "wamp.2.json", "wamp1": "wamp", "wampmsgpack": "wamp.2.msgpack"}
#: The WAMP v2 load modes (HELLO, SUBSCRIBE, PUBLISH [16, ...]).
V2 = ("wamp", "wampmsgpack")


def decode(proto: str, data: bytes) -> Any:
    """A non-event message of ``proto`` (MessagePack for wampmsgpack, else JSON)."""
    if proto == "wampmsgpack":
        import msgpack
        return msgpack.unpackb(data)
    return json.loads(data)


def send_msg(client: "WSClient", proto: str, msg: Any) -> None:
    if proto == "wampmsgpack":
        import msgpack
        client.send(msgpack.packb(msg), 2)
    else:
        client.send(json.dumps(msg).encode())


def event_fields(proto: str, buf: bytes, s: int, e: int) -> tuple[int, int, int] | None:
    """(ts, seq, step) of an EVENT payload buf[s:e], or None if it is not one."""
    if proto == "wampmsgpack":
        try:
            msg = decode(proto, buf[s:e])
            ts, seq, step = msg[4][:3]
            return int(ts), int(seq), int(step)
        except Exception:
            return None
    i = buf.rfind(b"[", s, e)
    if i <= s:
        return None
    p = buf[i + 1:e].split(b",", 3)
    try:
        return int(p[0]), int(p[1]), int(p[2])
    except (ValueError, IndexError):
        return None


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
        transport.write(upgrade_request(self.host, self.port, self.path, self.key, self.subprotocol))

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
            acc = accept_key(self.key).decode()
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
            head = frame_header(buf, pos, n)
            if head is None:
                break
            hdr, ln = head
            b0 = buf[pos]
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

    def scanner(self, lib, record, msgpack=False):
        """A ``scan(buf, n, pos, now) -> (pos, status)`` over fastscan.c's ws_scan (or
        ws_scan_msgpack), or None."""
        if lib is None:
            return None
        if self._scan is None:
            import ctypes

            nsteps = len(self.count)
            addr = [a.buffer_info()[0] for a in (self.count, self.first, self.last)]
            out = (ctypes.c_int64 * 2)()
            cap = 1 << 14
            latbuf = (ctypes.c_int64 * (2 * cap))()
            fn = lib.ws_scan_msgpack if msgpack else lib.ws_scan
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
        if self.proto in V2:
            send_msg(self, self.proto, [1, self.realm, {"roles": {"subscriber": {}, "publisher": {}}}])
        elif self.proto == "raw":
            self.ready()

    def ready(self):
        self.subscribed = True
        self.scan = self.stats.scanner(FASTSCAN, self.record, self.proto == "wampmsgpack")
        if not self.done.done():
            self.done.set_result(True)

    def on_message(self, buf, s, e, now):
        if self.subscribed:
            fields = event_fields(self.proto, buf, s, e)
            if fields is not None:
                ts, _, step = fields
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
        msg = decode(self.proto, buf[s:e])
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
                send_msg(self, self.proto, [32, i + 1, {}, t])
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
        proto = "wamp" if proto == "wampmsgpack" else proto  # publishes in JSON (see the docstring)
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
        proto = "wamp" if proto == "wampmsgpack" else proto
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
        fields = event_fields(self.proto, buf, s, e)
        if fields is None:
            return
        ts, seq, _ = fields
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


def publisher_main(conn, cfg):
    raise_nofile()
    if uvloop and not cfg["no_uvloop"]:
        uvloop.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pad = b"x" * cfg["pad"]
    names = cfg["topic_names"]
    bnames = [t.encode() for t in names]
    # The publisher may connect to another node than the subscribers (--pub-url).
    ph, pp = cfg.get("pub_host", cfg["host"]), cfg.get("pub_port", cfg["port"])

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
                        lambda: ChurnPublisher(ph, pp, path, fut, cfg["proto"], cfg["realm"],
                                               bnames[seq % len(bnames)], seq, step, pad),
                        ph, pp), 10)
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
            lambda: Publisher(ph, pp, path, fut, cfg["proto"], cfg["realm"], names), ph, pp)
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
                             cycle_p50_ms=quantile(cycles, 0.5) / 1e6, cycle_p99_ms=quantile(cycles, 0.99) / 1e6)
            t1 = mono()
            conn.send(("done", sent, t0, t1, blocked, p.errors, seq_first, seq, extra))

    try:
        loop.run_until_complete(run())
    except Exception as ex:
        conn.send(("error", repr(ex)))
    loop.close()

