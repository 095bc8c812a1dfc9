"""bench/ticket_storm.py's load: a minimal WebSocket + WAMP v1 client that connects
with a ``?ticket=``, and the two timed phases, churn (connect, WELCOME, close, again
and again) and the reconnect storm (subscribers listening while many clients connect
at once; the storm's clients run in a process of their own).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import json
import os
import signal
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from common import accept_key, client_frame, frames, mono, percentile
from common import upgrade_request as ws_upgrade_request
from ticket_storm_server import CpuMeter

try:  # optional: a faster event loop keeps the load generator out of the way
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

TOPIC = "oro/maintenance"

# ------------------------------------------------------------------ WebSocket client


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def upgrade_request(port: int, ticket: str | None) -> tuple[bytes, bytes]:
    """The HTTP upgrade request and the Sec-WebSocket-Accept it must yield."""
    key = base64.b64encode(os.urandom(16))
    path = "/" if ticket is None else "/?ticket=" + quote(ticket, safe="")
    return ws_upgrade_request("127.0.0.1", port, path, key, "wamp"), accept_key(key)


CLOSE_NORMAL = client_frame((1000).to_bytes(2, "big"), 8)


class WampV1Client(asyncio.Protocol):
    """Just enough WebSocket + WAMP v1 for the benchmark.

    Why hand-written: a full client library costs more CPU per message than
    the server does, and on a 2-core machine the load generator would become
    the bottleneck.  Server frames are unmasked and small, so parsing is a
    few slices; pings are answered so the server's auto-ping never drops us.
    """

    def __init__(self, request: bytes, accept: bytes,
                 on_event: Callable[[bytes, int], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[int] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.t_tcp = 0
        self.on_event = on_event
        self._request = request
        self._accept = accept
        self._buf = bytearray()
        self._upgraded = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t_tcp = mono()
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc if isinstance(exc, Exception) else ConnectionResetError("closed before WELCOME"))

    def _fail(self, exc: Exception) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(exc)
            self.welcome.exception()  # mark retrieved: the awaiter may have timed out
        self.abort()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._fail(HandshakeRefused("oversized-response"))
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            status = head.split(b"\r\n", 1)[0].split(b" ")
            code = status[1].decode("ascii", "replace") if len(status) > 1 else "?"
            if code != "101":
                self._fail(HandshakeRefused(f"http-{code}"))
                return
            if self._accept not in head:
                self._fail(HandshakeRefused("bad-accept"))
                return
            self._upgraded = True
        self._frames()

    def _frames(self) -> None:
        buf = self._buf
        pos = 0
        for b0, start, end, _masked in frames(buf):
            payload = bytes(buf[start:end])
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1:
                self._message(payload)
            elif opcode == 9 and self.transport is not None:
                self.transport.write(client_frame(payload, 10))
            elif opcode == 8:
                self.close()
        if pos:
            del buf[:pos]

    def _message(self, payload: bytes) -> None:
        now = mono()
        if payload.startswith(b"[8,"):  # EVENT: the hot path, no full parse here
            if self.on_event is not None:
                self.on_event(payload, now)
        elif payload.startswith(b"[0,") and not self.welcome.done():
            self.welcome.set_result(now)

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(client_frame(text.encode("utf-8")))

    def close(self) -> None:
        """Close frame, then drop the TCP connection: a client that has what
        it came for and leaves, like Oro's PHP backend after a publish."""
        if self.transport is not None and not self._closing:
            self._closing = True
            if self._upgraded:
                self.transport.write(CLOSE_NORMAL)
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closing = True
            self.transport.abort()


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, HandshakeRefused):
        return exc.kind
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout-after-tcp-connect" if getattr(exc, "tcp_connected", False) else "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno:
        return "oserror-" + errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


async def open_client(port: int, ticket: str | None, timeout: float,
                      on_event: Callable[[bytes, int], None] | None = None) -> WampV1Client:
    """TCP connect, upgrade with ``?ticket=``, wait for WELCOME (or raise)."""
    loop = asyncio.get_running_loop()
    request, accept = upgrade_request(port, ticket)
    proto = WampV1Client(request, accept, on_event)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
            await proto.welcome
    except BaseException as e:
        # Tells "never got through the listen queue" from "connected, then no
        # WELCOME": the latter is what a full accept queue does to a client
        # whose final ACK the kernel dropped (tcp_abort_on_overflow=0).
        e.tcp_connected = bool(proto.t_tcp)  # type: ignore[union-attr]
        proto.abort()
        raise
    return proto


def use_fast_loop() -> None:
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())




def summary_ms(values_ns: list[int] | array) -> dict[str, Any]:
    """n, p50, p99 and max in milliseconds of nanosecond samples."""
    vals = sorted(v / 1e6 for v in values_ns)
    if not vals:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(vals), "p50": round(percentile(vals, 50), 2),
            "p99": round(percentile(vals, 99), 2), "max": round(vals[-1], 2)}


# ------------------------------------------------------------------ phase 1: churn


async def churn(port: int, next_ticket: Callable[[], str | None], concurrency: int,
                duration: float, meter: CpuMeter) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each connect -> WELCOME -> close,
    again and again, for ``duration`` seconds (or until tickets run out)."""
    latencies = array("q")
    tcp = array("q")
    failures: Counter[str] = Counter()
    exhausted = False
    deadline = time.monotonic() + duration

    async def client_loop() -> None:
        nonlocal exhausted
        while time.monotonic() < deadline:
            ticket = next_ticket()
            if ticket is None:
                exhausted = True
                return
            t0 = mono()
            try:
                proto = await open_client(port, ticket, 15.0)
            except Exception as e:  # noqa: BLE001 - counted, the loop goes on
                failures[failure_kind(e)] += 1
                continue
            latencies.append(proto.welcome.result() - t0)
            tcp.append(proto.t_tcp - t0)
            proto.close()

    meter.start()
    t0 = time.monotonic()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    cpu = meter.stop()
    await asyncio.sleep(0.3)  # let the server finish the last closes
    return {
        "concurrency": concurrency,
        "connections": len(latencies),
        "seconds": round(elapsed, 2),
        "connections_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "handshake_ms": summary_ms(latencies),
        "tcp_connect_ms": summary_ms(tcp),
        "failures": dict(failures),
        "tickets_exhausted": exhausted,
        "cpu": cpu,
    }


# ------------------------------------------------------------------ phase 2: storm


def storm_child(conn: Any, port: int, tickets: list[str], timeout: float) -> None:
    """The storm's clients, in their own process so that opening 2,000
    connections does not delay the subscribers' receive loop (which is what
    measures delivery latency).  Forked before any event loop exists; waits
    for "go", connects everything at once, reports, waits for "close"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if conn.recv() != "go":
        return
    use_fast_loop()
    asyncio.run(_storm_main(conn, port, tickets, timeout))


async def _storm_main(conn: Any, port: int, tickets: list[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    opened: list[WampV1Client] = []
    t_go = mono()

    async def one(ticket: str) -> tuple[int, int, str]:
        t0 = mono()
        try:
            proto = await open_client(port, ticket, timeout)
        except Exception as e:  # noqa: BLE001 - reported per kind
            return 0, 0, failure_kind(e)
        opened.append(proto)
        return proto.t_tcp - t0, proto.welcome.result() - t_go, ""

    results = await asyncio.gather(*(one(t) for t in tickets))
    conn.send({"t_go": t_go, "t_done": mono(), "results": results})
    await loop.run_in_executor(None, conn.recv)  # "close"
    for proto in opened:
        proto.close()
    await asyncio.sleep(0.5)


@dataclass
class EventLog:
    """Every EVENT received by the subscribers: send and receive times."""

    sent: array = field(default_factory=lambda: array("q"))
    received: array = field(default_factory=lambda: array("q"))
    seen_by: Counter = field(default_factory=Counter)

    def recorder(self, index: int) -> Callable[[bytes, int], None]:
        sent, received, seen_by = self.sent, self.received, self.seen_by

        def on_event(payload: bytes, now: int) -> None:
            # [8,"oro/maintenance",{"ts":...,"seq":...}]
            event = json.loads(payload)[2]
            sent.append(event["ts"])
            received.append(now)
            seen_by[index] += 1
        return on_event

    def timeline(self, origin: int, start: int, end: int, step_ms: int = 500) -> list[dict[str, Any]]:
        """Delivery latency by publish time in ``step_ms`` buckets (time
        relative to ``origin``, the storm's start): shows *when* subscribers
        waited, e.g. a burst of handshakes right after the storm began."""
        step = step_ms * 1_000_000
        buckets: dict[int, list[int]] = {}
        for s, r in zip(self.sent, self.received):
            if start <= s < end:
                buckets.setdefault((s - origin) // step, []).append(r - s)
        out = []
        for b in sorted(buckets):
            lat = sorted(buckets[b])
            out.append({"t_s": round(b * step / 1e9, 2), "n": len(lat),
                        "p50_ms": round(lat[len(lat) // 2] / 1e6, 1),
                        "max_ms": round(lat[-1] / 1e6, 1)})
        return out

    def window(self, start: int, end: int, published: int, subscribers: int) -> dict[str, Any]:
        lat = [r - s for s, r in zip(self.sent, self.received) if start <= s < end]
        out = summary_ms(lat)
        out["published"] = published
        out["expected"] = published * subscribers
        out["missing"] = max(0, out["expected"] - out["n"])
        return out


async def storm(port: int, sub_tickets: list[str], pub_ticket: str, conn: Any,
                storm_size: int, args: argparse.Namespace, meter: CpuMeter,
                ) -> dict[str, Any]:
    """Subscribers + publisher, a quiet window, the storm, a window after."""
    events = EventLog()
    subs: list[WampV1Client] = []
    sub_failures: Counter[str] = Counter()

    async def subscribe(i: int, ticket: str) -> None:
        try:
            proto = await open_client(port, ticket, 60.0, events.recorder(i))
        except Exception as e:  # noqa: BLE001
            sub_failures[failure_kind(e)] += 1
            return
        proto.send_text(json.dumps([5, TOPIC]))
        subs.append(proto)

    t_sub = time.monotonic()
    await asyncio.gather(*(subscribe(i, t) for i, t in enumerate(sub_tickets)))
    subscribe_s = time.monotonic() - t_sub
    publisher = await open_client(port, pub_ticket, 30.0)
    publish_times = array("q")
    stop = asyncio.Event()
    interval = args.publish_interval_ms / 1000.0

    async def publish_loop() -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        seq = 0
        while not stop.is_set():
            ts = mono()
            publisher.send_text(f'[7,"{TOPIC}",{{"ts":{ts},"seq":{seq}}}]')
            publish_times.append(ts)
            seq += 1
            next_at += interval
            delay = next_at - loop.time()
            if delay < 0:  # late: do not burst to catch up, keep the rate
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    pub_task = asyncio.create_task(publish_loop())
    # WAMP v1 has no SUBSCRIBED: a subscription is confirmed by its first event.
    confirm_deadline = time.monotonic() + 20
    while len(events.seen_by) < len(subs) and time.monotonic() < confirm_deadline:
        await asyncio.sleep(0.05)
    confirmed = len(events.seen_by)

    t_before = mono()
    meter.start()
    await asyncio.sleep(args.before_seconds)
    cpu_before = meter.stop()

    loop = asyncio.get_running_loop()
    meter.start()
    t_storm = mono()
    conn.send("go")
    report = await asyncio.wait_for(loop.run_in_executor(None, conn.recv), args.storm_timeout + 30)
    t_all = mono()
    cpu_storm = meter.stop()

    meter.start()
    await asyncio.sleep(args.after_seconds)
    t_end = mono()
    stop.set()
    await pub_task
    cpu_after = meter.stop()
    await asyncio.sleep(1.0)  # stragglers of the last events
    conn.send("close")

    def published(a: int, b: int) -> int:
        return sum(1 for t in publish_times if a <= t < b)

    n = len(subs)
    windows = {
        "before": events.window(t_before, t_storm, published(t_before, t_storm), n),
        "during": events.window(t_storm, t_all, published(t_storm, t_all), n),
        "after": events.window(t_all, t_end, published(t_all, t_end), n),
    }
    # The storm's first seconds (every handshake arriving at once) and the
    # rest (verifications draining) stress different things: report both.
    split = min(t_all, t_storm + int(args.storm_head_seconds * 1e9))
    windows["during_head"] = events.window(t_storm, split, published(t_storm, split), n)
    windows["during_tail"] = events.window(split, t_all, published(split, t_all), n)
    results = report["results"]
    ok = [r for r in results if not r[2]]
    welcomed_by = Counter(int(r[1] // 500_000_000) for r in ok)  # storm clients per 0.5 s
    timeline = events.timeline(t_storm, t_storm - 2_000_000_000, t_end)
    for row in timeline:
        row["storm_welcomed"] = welcomed_by.get(int(round(row["t_s"] * 2)), 0)
    welcome = sorted(r[1] / 1e6 for r in ok)
    tcp_ms = sorted(r[0] / 1e6 for r in ok)
    limit_ms = args.shipped_handshake_timeout * 1000
    storm_out = {
        "clients": storm_size,
        "connected": len(ok),
        "failures": dict(Counter(r[2] for r in results if r[2])),
        "all_connected_s": round(welcome[-1] / 1000, 2) if welcome else None,
        "storm_wall_s": round((report["t_done"] - report["t_go"]) / 1e9, 2),
        "connections_per_s": round(len(ok) / (welcome[-1] / 1000), 1) if welcome else None,
        "welcome_ms": {"p50": percentile(welcome, 50), "p99": percentile(welcome, 99),
                       "max": welcome[-1] if welcome else None},
        "tcp_connect_ms": {"p50": percentile(tcp_ms, 50), "p99": percentile(tcp_ms, 99),
                           "max": tcp_ms[-1] if tcp_ms else None,
                           "over_900ms": sum(t > 900 for t in tcp_ms)},
        "over_shipped_handshake_timeout": sum(w > limit_ms for w in welcome),
    }
    for key in ("welcome_ms", "tcp_connect_ms"):
        storm_out[key] = {k: (round(v, 1) if isinstance(v, float) else v)
                          for k, v in storm_out[key].items()}
    for proto in subs:
        proto.close()
    publisher.close()
    await asyncio.sleep(0.5)
    return {
        "subscribers": {"requested": len(sub_tickets), "connected": n, "confirmed": confirmed,
                        "failures": dict(sub_failures), "connect_s": round(subscribe_s, 2)},
        "publish_interval_ms": args.publish_interval_ms,
        "delivery_ms": windows,
        "timeline": timeline,
        "storm": storm_out,
        "cpu": {"before": cpu_before, "storm": cpu_storm, "after": cpu_after},
    }
