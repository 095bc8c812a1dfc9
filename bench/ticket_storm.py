#!/usr/bin/env python3
"""ticket_storm.py: what Oro sync tickets cost a real oro-sync server.

Why this exists (issue 4, "Cost" under "Sync tickets"): verifying one ticket
is 5,000 sha512 rounds, ~10 ms of CPU.  Oro's PHP backend opens a new
WebSocket with a fresh ticket for every publish, and after a restart every
browser reconnects at once.  The server promises that verification runs in
worker processes (using the other cores), that identical tickets are checked
once, and that the reactor keeps serving already-connected clients meanwhile.
This script measures exactly those promises against a real ``twistd
oro-sync`` process:

1. **churn**: closed-loop clients each open a WebSocket with a *fresh*
   ticket (unique nonce; anonymous backend and ``admin`` user tickets
   alternately), wait for WELCOME and close; then the same with *identical*
   tickets reused (the outcome-cache path).  Reports connections/s,
   handshake latency, and the CPU of the server process and of its digest
   worker processes (children of the server pid) from ``/proc``.
2. **storm**: N subscribers (user tickets) on ``oro/maintenance`` and a
   backend publisher (anonymous ticket) publishing every 10 ms an event
   carrying its send time; then M clients connect at once, each with a fresh
   distinct ticket.  Reports the subscribers' delivery latency before,
   during and after the storm (a reactor blocked by ticket checks would show
   as a jump), the time until all M are connected, and failures.

The load generator is deliberately lean so the server is the bottleneck: a
minimal hand-written WebSocket client on asyncio (uvloop when importable),
the storm clients in their own process, and every ticket pre-generated in a
multiprocessing pool before anything is timed (generating one costs as much
as verifying it).

Usage (from the repository root; ~1.5-3 minutes)::

    .venv/bin/python bench/ticket_storm.py

Prints the figures, writes ``bench/TICKETS.md`` (unless ``--no-markdown``)
and ``bench/results/tickets-<stamp>.json``.  Everything is bounded: phases
have fixed durations, waits have timeouts, and ``--max-seconds`` is a hard
watchdog that still stops the server.

The JSON also holds a delivery-latency timeline of the storm (0.5 s buckets),
which shows *when* subscribers waited.  Options for experiments (results go
to the JSON; use ``--no-markdown`` so TICKETS.md keeps the default run):
``--backlog N`` (listen backlog; by default the shipped ``listen``'s, 0 for
Twisted's 50), ``--handshake-timeout S`` (by default the shipped one, so
clients the server would drop are dropped), ``--renice-workers N`` (lower the digest
workers' priority, as a worker initializer calling ``os.nice`` would) and
``--server-script S`` (run ``python S CONFIG LISTEN`` instead of twistd, to
measure a candidate patch without touching ``oro_sync/``).  Hand-written
analysis below a marker line in TICKETS.md survives re-runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import hashlib
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

try:  # optional: a faster event loop keeps the load generator out of the way
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the checked-out oro_sync, for issue_ticket and the shipped files

import yaml  # noqa: E402  (a dependency of oro-sync itself)

from oro_sync.auth.tickets import issue_ticket  # noqa: E402

SHIPPED_CONFIG = os.path.join(REPO, "oro_sync", "etc", "oro-sync.yml")
SHIPPED_ROUTES = os.path.join(REPO, "oro_sync", "etc", "websocket_routing.yml")
SHIPPED_USERS = os.path.join(REPO, "oro_sync", "etc", "users.yml")
TOPIC = "oro/maintenance"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLK_TCK = os.sysconf("SC_CLK_TCK")
mono = time.monotonic_ns  # CLOCK_MONOTONIC: shared by every process on the host


# ------------------------------------------------------------------ tickets


def _one_ticket(spec: tuple[str, str, str | None]) -> str:
    """Pool worker: one ticket (top-level so multiprocessing can ship it)."""
    secret, username, password_hash = spec
    return issue_ticket(secret, username, password_hash)


def make_tickets(specs: list[tuple[str, str, str | None]], processes: int) -> list[str]:
    """Pre-generate tickets on every core.

    Each costs the same 5,000 sha512 rounds as its verification, so making
    them during a timed phase would steal the CPU the server is measured on.
    ``issue_ticket`` draws a random nonce for each, so all are distinct.
    """
    if not specs:
        return []
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(_one_ticket, specs, chunksize=max(1, len(specs) // (processes * 8)))


def load_admin_hash(users_file: str) -> str:
    """The stored password hash user tickets for ``admin`` are signed with."""
    with open(users_file, encoding="utf-8") as f:
        users = yaml.safe_load(f)["users"]
    for user in users:
        if user["username"] == "admin":
            return str(user["password"])
    raise SystemExit(f"{users_file}: no user 'admin'")


# ------------------------------------------------------------------ /proc


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent``: the server's digest workers (and
    multiprocessing's resource tracker, told apart by :func:`proc_role`)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None and st[0] == parent:
                out.append(int(name))
    return sorted(out)


def proc_role(pid: int) -> str:
    """What a child of the server is, from its command line, so that the
    report counts digest workers and not multiprocessing's resource tracker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "gone"
    if "resource_tracker" in cmd:
        return "resource-tracker"
    if "spawn_main" in cmd or "forkserver" in cmd:
        return "digest-worker"
    return "child"


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def listen_overflows() -> dict[str, int]:
    """TcpExt ListenOverflows/ListenDrops: SYNs dropped because a listen
    queue was full (system-wide counters)."""
    with open("/proc/net/netstat", encoding="ascii") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:])))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {}


class CpuMeter:
    """CPU used by the server, each of its children, this benchmark's own
    processes and everything else on the machine over one phase.

    "Everything else" (machine busy time minus ours) shows whether other work
    competed for the cores, which the report must say.
    """

    def __init__(self, server_pid: int, own_pids: list[int]) -> None:
        self.server_pid = server_pid
        self.own_pids = own_pids
        self.start()

    def _snapshot(self) -> dict[int, int]:
        snap = {}
        for pid in [self.server_pid, *child_pids(self.server_pid), *self.own_pids]:
            st = proc_stat(pid)
            if st is not None:
                snap[pid] = st[1]
        return snap

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._ticks0 = self._snapshot()
        self._machine0 = machine_busy_ticks()
        self._net0 = listen_overflows()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        ticks1 = self._snapshot()
        busy1, total1 = machine_busy_ticks()
        net1 = listen_overflows()

        def pct(pid: int) -> float:
            used = ticks1.get(pid, 0) - self._ticks0.get(pid, 0)
            return round(100.0 * used / CLK_TCK / wall, 1) if wall > 0 else 0.0

        children = {pid: (proc_role(pid), pct(pid)) for pid in ticks1
                    if pid != self.server_pid and pid not in self.own_pids}
        workers = [p for role, p in children.values() if role == "digest-worker"]
        machine = 100.0 * (busy1 - self._machine0[0]) / max(1, total1 - self._machine0[1])
        ncpu = os.cpu_count() or 1
        ours = pct(self.server_pid) + sum(p for _, p in children.values()) + \
            sum(pct(p) for p in self.own_pids)
        return {
            "wall_s": round(wall, 2),
            "server_main_pct": pct(self.server_pid),
            "digest_workers_pct": workers,
            "digest_workers_total_pct": round(sum(workers), 1),
            "other_children_pct": {str(pid): [role, p] for pid, (role, p) in children.items()
                                   if role != "digest-worker"},
            "loadgen_pct": round(sum(pct(p) for p in self.own_pids), 1),
            # /proc/stat is per machine: 100% = all cores busy.  Converted to
            # "% of one core" like the per-process figures.
            "machine_busy_pct_of_one_core": round(machine * ncpu, 1),
            "other_work_pct_of_one_core": round(max(0.0, machine * ncpu - ours), 1),
            "listen_overflows": {k: net1.get(k, 0) - self._net0.get(k, 0) for k in net1},
        }


# ------------------------------------------------------------------ server


@dataclass
class Server:
    """A ``twistd -n oro-sync`` subprocess on 127.0.0.1."""

    proc: subprocess.Popen
    port: int
    log_path: str
    workdir: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def count_in_log(self, needle: str) -> int:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return sum(needle in line for line in f)
        except OSError:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port() -> int:
    """A port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(workdir: str, handshake_timeout: float) -> str:
    """A temp copy of the shipped config: same auth (tickets required, the
    shipped secret and users), routing pointing at the shipped routes file,
    and limits that allow the load (the handshake timeout is raised because
    a 2,000-client storm queues verifications longer than the shipped 10 s
    on a small machine; the report counts how many would have exceeded it)."""
    with open(SHIPPED_CONFIG, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["routing"] = [SHIPPED_ROUTES]
    cfg["auth"]["users"] = {"file": SHIPPED_USERS}
    cfg["auth"]["require_ticket"] = True
    cfg["auth"]["one_time_tickets"] = False  # the cached phase reuses tickets
    limits = cfg.setdefault("limits", {})
    limits.update(max_connections=0, max_connections_per_address=0, publish_rate=0,
                  handshake_timeout=handshake_timeout)
    path = os.path.join(workdir, "oro-sync.yml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def start_server(workdir: str, config: str, port: int, backlog: int | None,
                 timeout: float = 30.0, script: str | None = None) -> Server:
    """Start the server and wait until it accepts and its digest workers run.

    ``PYTHONPATH`` puts the checked-out tree first, so the benchmark measures
    this commit even if the virtualenv holds an older install.
    """
    twistd = os.path.join(REPO, ".venv", "bin", "twistd")
    if not os.path.exists(twistd):
        twistd = shutil.which("twistd") or "twistd"
    listen = f"tcp:{port}:interface=127.0.0.1" + (f":backlog={backlog}" if backlog else "")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = os.path.join(workdir, "server.log")
    with open(log_path, "wb") as log:
        if script:  # a candidate patch wrapped in a script: SCRIPT CONFIG LISTEN
            cmd = [os.path.join(os.path.dirname(twistd), "python"), script, config, listen]
        else:
            cmd = [twistd, "-n", "--pidfile=", "oro-sync", "--config", config, "--listen", listen]
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path, workdir)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{server.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise SystemExit(f"server did not listen within {timeout}s:\n{server.log_tail()}")
            time.sleep(0.1)
    want = os.cpu_count() or 1
    while time.monotonic() < deadline:  # the verifier warms its workers at start-up
        if sum(proc_role(p) == "digest-worker" for p in child_pids(proc.pid)) >= want:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # let the warm-up digests finish
    return server


# ------------------------------------------------------------------ WebSocket client


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def upgrade_request(port: int, ticket: str | None) -> tuple[bytes, bytes]:
    """The HTTP upgrade request and the Sec-WebSocket-Accept it must yield."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    path = "/" if ticket is None else "/?ticket=" + quote(ticket, safe="")
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp\r\n\r\n")
    return request.encode("ascii"), accept


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (clients must mask, RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if not n:
        return head + key
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")
    return head + key + masked


CLOSE_NORMAL = client_frame(8, (1000).to_bytes(2, "big"))


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
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, hdr = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + hdr + length
            if end > size:
                break
            payload = bytes(buf[pos + hdr:end])
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1:
                self._message(payload)
            elif opcode == 9 and self.transport is not None:
                self.transport.write(client_frame(10, payload))
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
            self.transport.write(client_frame(1, text.encode("utf-8")))

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


# ------------------------------------------------------------------ statistics


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


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


# ------------------------------------------------------------------ report


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, CPU model, versions, load, commit."""
    from run import cpu_model  # bench/run.py, beside this script
    model = cpu_model() or "?"
    import autobahn
    import twisted
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[:3]
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
        "python": platform.python_version(), "twisted": twisted.__version__,
        "autobahn": autobahn.__version__, "uvloop": getattr(uvloop, "__version__", None),
        "loadavg_at_start": load, "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def fmt(v: Any) -> str:
    """A table cell: a dash rather than "None" when a figure is missing."""
    return "–" if v is None else f"{v}"


def markdown(res: dict[str, Any]) -> str:
    """The generated part of TICKETS.md: machine, load, both tables, findings."""
    m = res["machine"]
    lines = [
        "# Sync tickets under load (`bench/ticket_storm.py`)",
        "",
        "Measured against a real `twistd -n oro-sync` process (a temp copy of the shipped "
        "config: tickets required, shipped secret, `users.yml`, shipped routes; connection and "
        f"publish limits opened up; {server_settings(res['settings'])}). "
        "Load generator: hand-written asyncio WebSocket client"
        f"{' on uvloop' if m['uvloop'] else ''}, storm clients in a separate process, every "
        "ticket generated before timing. Reproduce: `.venv/bin/python bench/ticket_storm.py`.",
        "",
        f"Machine: {m['nproc']} × {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}, "
        f"Twisted {m['twisted']}, Autobahn {m['autobahn']}, uvloop {fmt(m['uvloop'])}; "
        f"commit {m['commit']}, {m['date']}.",
        "",
    ]
    other = res["other_work"]
    if other["busy"]:
        lines += [
            f"**Other work was running on the machine at the same time** (load average "
            f"{' '.join(m['loadavg_at_start'])} at start, {' '.join(res['loadavg_at_end'])} at end; "
            f"other processes used on average {other['mean_pct_of_one_core']}% of one core during "
            f"the timed phases, up to {other['max_pct_of_one_core']}%). With {m['nproc']} cores, "
            "figures are lower bounds and latencies include CPU contention.",
            "",
        ]
    else:
        lines += [f"Machine otherwise quiet (load average {' '.join(m['loadavg_at_start'])} at start).", ""]

    lines += [
        "## 1. Connections per second with tickets (connect → WELCOME → close)",
        "",
        "| tickets | clients in flight | connections | conn/s | handshake p50 ms | p99 ms | "
        "failures | server main CPU % | digest workers CPU % (each) | other work % |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for label, key in (("fresh (unique nonce each)", "fresh"), ("identical, reused (cache)", "cached")):
        r = res["churn"][key]
        cpu = r["cpu"]
        lines.append(
            f"| {label} | {r['concurrency']} | {r['connections']} | **{r['connections_per_s']}** | "
            f"{fmt(r['handshake_ms']['p50'])} | {fmt(r['handshake_ms']['p99'])} | "
            f"{r['failures'] or 0} | {cpu['server_main_pct']} | "
            f"{cpu['digest_workers_total_pct']} ({', '.join(map(str, cpu['digest_workers_pct']))}) | "
            f"{cpu['other_work_pct_of_one_core']} |")
    fresh = res["churn"]["fresh"]
    lines += [
        "",
        "Fresh tickets alternate anonymous (backend) and `admin` user tickets. CPU is % of one "
        "core over the phase, from `/proc/<pid>/stat` of the server and of its children."
        + (" The fresh phase ran out of pre-generated tickets before its time was up."
           if fresh["tickets_exhausted"] else ""),
        "",
    ]
    st = res["storm"]
    s = st["storm"]
    lines += [
        f"## 2. Reconnect storm: {s['clients']} clients at once, {st['subscribers']['connected']} "
        f"subscribers listening",
        "",
        f"{st['subscribers']['connected']} subscribers (user tickets) on `{TOPIC}`, a backend "
        f"publisher (anonymous ticket) publishing every {st['publish_interval_ms']} ms an event "
        "carrying its send time; then every storm client connects at once with its own fresh "
        "`admin` ticket. Delivery latency = receive − send time at the subscribers (same host, "
        "CLOCK_MONOTONIC), by when the event was published.",
        "",
        "| window | events published | deliveries | missing | p50 ms | p99 ms | max ms | "
        "server main CPU % | digest workers CPU % | other work % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    head = res["settings"]["storm_head_seconds"]
    for name, label in (("before", "before storm"), ("during", "**during storm**"),
                        ("during_head", f"  during: first {head:g} s"),
                        ("during_tail", f"  during: after {head:g} s"), ("after", "after storm")):
        w = st["delivery_ms"][name]
        cpu = st["cpu"].get({"during": "storm"}.get(name, name))
        cpu_cells = (f"{cpu['server_main_pct']} | {cpu['digest_workers_total_pct']} | "
                     f"{cpu['other_work_pct_of_one_core']}") if cpu else "| |"
        lines.append(
            f"| {label} | {w['published']} | {w['n']} | {w['missing']} | {fmt(w['p50'])} | "
            f"{fmt(w['p99'])} | {fmt(w['max'])} | {cpu_cells} |")
    storm_cpu = st["cpu"]["storm"]
    lines += [
        "",
        "| storm | value |",
        "|---|---|",
        f"| clients connected / attempted | {s['connected']} / {s['clients']} |",
        f"| failures | {s['failures'] or 'none'} |",
        f"| time until all connected | **{fmt(s['all_connected_s'])} s** "
        f"({fmt(s['connections_per_s'])} conn/s) |",
        f"| WELCOME after the storm began, p50 / p99 / max | {fmt(s['welcome_ms']['p50'])} / "
        f"{fmt(s['welcome_ms']['p99'])} / {fmt(s['welcome_ms']['max'])} ms |",
        f"| TCP connect p50 / p99 / max | {fmt(s['tcp_connect_ms']['p50'])} / "
        f"{fmt(s['tcp_connect_ms']['p99'])} / {fmt(s['tcp_connect_ms']['max'])} ms "
        f"({s['tcp_connect_ms']['over_900ms']} took > 0.9 s, i.e. a SYN retransmit) |",
        f"| listen queue overflows (system-wide) | {storm_cpu['listen_overflows']} |",
        (f"| would exceed the shipped handshake_timeout ({res['settings']['shipped_handshake_timeout']} s) | "
         if timeout_raised(res["settings"]) else
         f"| WELCOME more than the handshake_timeout ({res['settings']['shipped_handshake_timeout']} s) "
         "after the storm began (the server's timer starts at accept) | ")
        + f"{s['over_shipped_handshake_timeout']} |",
    ]
    log = res.get("server_log")
    if log:
        lines.append(f"| server log (whole run): refusals / tracebacks / worker restarts | "
                     f"{log['refusals']} / {log['tracebacks']} / {log['worker_restarts']} |")
    lines += [
        "",
    ]
    if res.get("findings"):
        lines += ["## Findings", ""] + [f"- {f}" for f in res["findings"]] + [""]
    lines += [f"Raw figures: `bench/results/{os.path.basename(res['json_path'])}` (git-ignored).", ""]
    return "\n".join(lines)


#: Everything from this line on in TICKETS.md is hand-written analysis that a
#: re-run keeps; only the generated part above it is replaced.
NOTES_MARKER = "<!-- notes below are kept when ticket_storm.py rewrites this file -->"


def write_markdown(path: str, generated: str) -> None:
    notes = ""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    except OSError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(generated.rstrip("\n") + "\n\n" + (notes or NOTES_MARKER + "\n"))


def timeout_raised(settings: dict[str, Any]) -> bool:
    """Whether the run gave the server a longer handshake timeout than the shipped one."""
    return settings["handshake_timeout"] > settings["shipped_handshake_timeout"]


def server_settings(settings: dict[str, Any]) -> str:
    """The server's storm-relevant settings, as the report's intro states them."""
    ht = settings["handshake_timeout"]
    parts = [f"handshake timeout {ht:g} s"
             + (f" (raised from the shipped {settings['shipped_handshake_timeout']:g} s)"
                if timeout_raised(settings) else " (shipped)")]
    parts.append(f"listen backlog {settings['backlog']}" if settings.get("backlog")
                 else "listen backlog: Twisted's default, 50")
    mph = settings.get("max_pending_handshakes")
    if mph is not None:
        parts.append(f"max_pending_handshakes {mph} (shipped)")
    if settings.get("renice_workers"):
        parts.append(f"digest workers reniced by a further {settings['renice_workers']}")
    if settings.get("server_script"):
        parts.append(f"server: `{os.path.basename(settings['server_script'])}` instead of twistd")
    return ", ".join(parts)


def findings(res: dict[str, Any]) -> list[str]:
    """Plain statements derived from the numbers (no judgement beyond them)."""
    out = []
    fresh, cached = res["churn"]["fresh"], res["churn"]["cached"]
    if fresh["connections_per_s"] and cached["connections_per_s"]:
        out.append(f"Reused tickets connect {cached['connections_per_s'] / fresh['connections_per_s']:.1f}× "
                   f"faster than fresh ones ({cached['connections_per_s']} vs "
                   f"{fresh['connections_per_s']} conn/s): the outcome cache works, and fresh-ticket "
                   "throughput is bounded by the sha512 digests.")
    workers = fresh["cpu"]["digest_workers_total_pct"]
    out.append(f"With fresh tickets the digest workers used {workers}% of one core in total "
               f"(the server's own process {fresh['cpu']['server_main_pct']}%): verification runs "
               "outside the reactor process" + (" and uses more than one core." if workers > 100 else "."))
    st = res["storm"]
    before, during = st["delivery_ms"]["before"], st["delivery_ms"]["during"]
    if before["p99"] is not None and during["p99"] is not None:
        head, tail = st["delivery_ms"]["during_head"], st["delivery_ms"]["during_tail"]
        out.append(f"Subscribers' delivery latency p99 went from {before['p99']} ms before the storm to "
                   f"{during['p99']} ms during it (max {during['max']} ms; first "
                   f"{res['settings']['storm_head_seconds']:g} s: p99 {head['p99']} ms, afterwards: "
                   f"p99 {tail['p99']} ms); {during['missing']} deliveries missing.")
    s = st["storm"]
    if s["failures"]:
        out.append(f"Storm failures: {s['failures']}.")
        lost = s["failures"].get("timeout-after-tcp-connect", 0)
        if lost and any(st["cpu"]["storm"]["listen_overflows"].values()):
            out.append(f"{lost} storm clients completed the TCP handshake on their side yet got no "
                       f"answer within {res['settings']['storm_timeout']:g} s while the digest workers "
                       f"were mostly idle ({st['cpu']['storm']['digest_workers_total_pct']}% of one "
                       "core): with the listen queue full the kernel drops the client's final ACK, "
                       "so the server never accepted these connections.")
    if s["over_shipped_handshake_timeout"] and not timeout_raised(res["settings"]):
        out.append(f"{s['over_shipped_handshake_timeout']} of {s['clients']} storm clients got WELCOME "
                   f"more than the shipped handshake_timeout "
                   f"({res['settings']['shipped_handshake_timeout']} s) after the storm began, and "
                   f"the run used that timeout: the server's timer starts when it accepts a "
                   f"connection, so these waited in the listen queue, not in the server.")
    elif s["over_shipped_handshake_timeout"]:
        out.append(f"{s['over_shipped_handshake_timeout']} of {s['clients']} storm clients got WELCOME "
                   f"later than the shipped handshake_timeout "
                   f"({res['settings']['shipped_handshake_timeout']} s); with the shipped config the "
                   "server would have dropped them (the timeout runs while the ticket waits for a "
                   "digest worker) and they would have had to retry.")
    if s["tcp_connect_ms"]["over_900ms"]:
        out.append(f"{s['tcp_connect_ms']['over_900ms']} TCP connects took over 0.9 s (SYN retransmits): "
                   f"the listen queue overflowed ({st['cpu']['storm']['listen_overflows']}; "
                   f"listen backlog: {res['settings']['backlog'] or 'Twisted default, 50'}).")
    elif s["tcp_connect_ms"]["over_900ms"]:
        out.append(f"{s['tcp_connect_ms']['over_900ms']} TCP connects took over 0.9 s "
                   "(SYN retransmits) without a listen-queue overflow being counted.")
    return out


# ------------------------------------------------------------------ main


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: 2,000+ sockets per process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--concurrency", type=int, default=8, help="churn clients in flight")
    p.add_argument("--fresh-seconds", type=float, default=8.0)
    p.add_argument("--fresh-tickets", type=int, default=1600,
                   help="pre-generated fresh tickets for the churn phase (ends it early if used up)")
    p.add_argument("--cached-seconds", type=float, default=5.0)
    p.add_argument("--subscribers", type=int, default=200)
    p.add_argument("--storm", type=int, default=2000, help="clients connecting at once")
    p.add_argument("--publish-interval-ms", type=float, default=10.0)
    p.add_argument("--before-seconds", type=float, default=5.0)
    p.add_argument("--after-seconds", type=float, default=3.0)
    p.add_argument("--storm-head-seconds", type=float, default=5.0,
                   help="the storm's first seconds, reported separately")
    p.add_argument("--storm-timeout", type=float, default=90.0,
                   help="per storm client: connect + WELCOME")
    p.add_argument("--handshake-timeout", type=float, default=None,
                   help="the server's limits.handshake_timeout for this run (default: the shipped "
                        "config's; a larger one hides clients the server would drop)")
    p.add_argument("--shipped-handshake-timeout", type=float, default=None,
                   help="compare WELCOME times with this (default: the shipped config's)")
    p.add_argument("--backlog", type=int, default=None,
                   help="listen backlog for the server (default: the shipped config's `listen`; "
                        "0: Twisted's default, 50)")
    p.add_argument("--renice-workers", type=int, default=0,
                   help="experiment: renice the server's digest workers by this much after start "
                        "(what a worker initializer calling os.nice() would do)")
    p.add_argument("--server-script", default=None,
                   help="experiment: run `python SCRIPT CONFIG LISTEN` instead of `twistd oro-sync` "
                        "(to measure a candidate patch without touching oro_sync/)")
    p.add_argument("--keep-server-log", action="store_true",
                   help="copy the server's log next to the JSON results")
    p.add_argument("--max-seconds", type=int, default=300, help="hard watchdog for the whole run")
    p.add_argument("--no-markdown", action="store_true", help="do not rewrite bench/TICKETS.md")
    p.add_argument("--out-dir", default=os.path.join(REPO, "bench", "results"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate tickets, fork the storm process, start the server, run the
    phases, always stop the server, then report."""
    args = parse_args(argv)
    with open(SHIPPED_CONFIG, encoding="utf-8") as f:
        shipped = yaml.safe_load(f)
    shipped_limits = shipped.get("limits") or {}
    if args.shipped_handshake_timeout is None:
        args.shipped_handshake_timeout = float(shipped_limits.get("handshake_timeout", 10))
    if args.handshake_timeout is None:  # the shipped timeout: the server drops what exceeds it
        args.handshake_timeout = args.shipped_handshake_timeout
    if args.backlog is None:  # the shipped `listen` string's backlog, if it sets one
        listen = str((shipped.get("server") or {}).get("listen", ""))
        args.backlog = next((int(part.split("=", 1)[1]) for part in listen.split(":")
                             if part.startswith("backlog=")), 0)
    args.max_pending_handshakes = shipped_limits.get("max_pending_handshakes")

    def watchdog(signum: int, frame: Any) -> None:
        raise SystemExit(f"watchdog: run exceeded {args.max_seconds} s")

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(args.max_seconds)
    nofile = raise_nofile()
    need = args.storm + args.subscribers + 64
    if nofile[0] < need:
        print(f"warning: RLIMIT_NOFILE {nofile[0]} < {need}: some connections will fail", file=sys.stderr)
    t_run = time.monotonic()
    machine = machine_info()
    print(f"machine: {machine['nproc']} x {machine['cpu_model']}, loadavg {machine['loadavg_at_start']}, "
          f"nofile {nofile}", flush=True)

    with open(SHIPPED_CONFIG, encoding="utf-8") as f:
        secret = yaml.safe_load(f)["auth"]["secret"]
    admin_hash = load_admin_hash(SHIPPED_USERS)
    anon = (secret, "", None)
    user = (secret, "admin", admin_hash)
    ncpu = os.cpu_count() or 1
    t = time.monotonic()
    specs = ([anon if i % 2 else user for i in range(args.fresh_tickets)]
             + [anon, user]                                   # the reused pair
             + [user] * args.subscribers + [anon]             # subscribers, publisher
             + [user] * args.storm)                           # the storm
    tickets = make_tickets(specs, ncpu)
    assert len(set(tickets)) == len(tickets), "tickets must all be distinct"
    fresh = tickets[:args.fresh_tickets]
    reused = tickets[args.fresh_tickets:args.fresh_tickets + 2]
    rest = tickets[args.fresh_tickets + 2:]
    sub_tickets, pub_ticket = rest[:args.subscribers], rest[args.subscribers]
    storm_tickets = rest[args.subscribers + 1:]
    print(f"generated {len(tickets)} tickets in {time.monotonic() - t:.1f} s", flush=True)

    port = args.port or free_port()
    # Fork the storm process now, before any event loop or server exists.
    parent_conn, child_conn = multiprocessing.get_context("fork").Pipe()
    storm_proc = multiprocessing.get_context("fork").Process(
        target=storm_child, args=(child_conn, port, storm_tickets, args.storm_timeout), daemon=True)
    storm_proc.start()
    workdir = tempfile.mkdtemp(prefix="oro-ticket-storm-")
    server: Server | None = None
    try:
        config = write_config(workdir, args.handshake_timeout)
        server = start_server(workdir, config, port, args.backlog, script=args.server_script)
        workers = [p for p in child_pids(server.pid) if proc_role(p) == "digest-worker"]
        print(f"server pid {server.pid} on 127.0.0.1:{port}, digest workers {workers}", flush=True)
        if args.renice_workers:
            for pid in workers:
                os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid)
                               + args.renice_workers)
        meter = CpuMeter(server.pid, [os.getpid(), storm_proc.pid])
        use_fast_loop()
        results = asyncio.run(run_phases(args, port, fresh, reused, sub_tickets, pub_ticket,
                                         parent_conn, meter))
        if server.proc.poll() is not None:
            print(f"server died during the run:\n{server.log_tail()}", file=sys.stderr)
        results["server_log"] = {
            "refusals": server.count_in_log("refusing"),
            "tracebacks": server.count_in_log("Traceback"),
            "worker_restarts": server.count_in_log("worker process died"),
            "lines": server.count_in_log(""),
        }
    finally:
        signal.alarm(0)
        if server is not None:
            server.stop()
            if args.keep_server_log:
                os.makedirs(args.out_dir, exist_ok=True)
                shutil.copy(server.log_path, os.path.join(
                    args.out_dir, f"tickets-server-{time.strftime('%Y%m%d-%H%M%S')}.log"))
        if storm_proc.is_alive():
            storm_proc.terminate()
        storm_proc.join(5)
        shutil.rmtree(workdir, ignore_errors=True)

    with open("/proc/loadavg", encoding="ascii") as f:
        results["loadavg_at_end"] = f.read().split()[:3]
    results["machine"] = machine
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("out_dir",)}
    results["settings"]["handshake_timeout"] = args.handshake_timeout
    cpus = [results["churn"]["fresh"]["cpu"], results["churn"]["cached"]["cpu"],
            *results["storm"]["cpu"].values()]
    other = [c["other_work_pct_of_one_core"] for c in cpus]
    results["other_work"] = {
        "mean_pct_of_one_core": round(sum(other) / len(other), 1),
        "max_pct_of_one_core": max(other),
        # 20% of one core: more than housekeeping noise.  (Not the load average: it
        # lags by a minute and still counts a benchmark that just finished.)
        "busy": max(other) > 20,
    }
    results["run_seconds"] = round(time.monotonic() - t_run, 1)
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(args.out_dir, f"tickets-{stamp}.json")
    results["json_path"] = json_path
    results["findings"] = findings(results)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    md = markdown(results)
    print()
    print(md)
    if not args.no_markdown:
        write_markdown(os.path.join(REPO, "bench", "TICKETS.md"), md)
    print(f"wrote {json_path}; run took {results['run_seconds']} s")
    return 0


async def run_phases(args: argparse.Namespace, port: int, fresh: list[str], reused: list[str],
                     sub_tickets: list[str], pub_ticket: str, conn: Any,
                     meter: CpuMeter) -> dict[str, Any]:
    """Churn (fresh, then reused tickets), then the storm, on one server so
    that the storm meets a server warmed up like a production one."""
    fresh_iter: Iterator[str] = iter(fresh)
    print(f"churn with fresh tickets: {args.fresh_seconds} s, {args.concurrency} in flight", flush=True)
    fresh_res = await churn(port, lambda: next(fresh_iter, None), args.concurrency,
                            args.fresh_seconds, meter)
    print(f"  {fresh_res['connections_per_s']} conn/s, handshake {fresh_res['handshake_ms']}, "
          f"failures {fresh_res['failures']}, cpu main {fresh_res['cpu']['server_main_pct']}% "
          f"workers {fresh_res['cpu']['digest_workers_pct']}", flush=True)
    counter = 0

    def next_reused() -> str:
        nonlocal counter
        counter += 1
        return reused[counter % 2]

    print(f"churn with identical tickets: {args.cached_seconds} s", flush=True)
    cached_res = await churn(port, next_reused, args.concurrency, args.cached_seconds, meter)
    print(f"  {cached_res['connections_per_s']} conn/s, handshake {cached_res['handshake_ms']}, "
          f"failures {cached_res['failures']}, cpu main {cached_res['cpu']['server_main_pct']}% "
          f"workers {cached_res['cpu']['digest_workers_pct']}", flush=True)
    print(f"storm: {args.subscribers} subscribers, then {args.storm} clients at once", flush=True)
    storm_res = await storm(port, sub_tickets, pub_ticket, conn, args.storm, args, meter)
    d = storm_res["delivery_ms"]
    print(f"  delivery before {d['before']}, during {d['during']}, after {d['after']}", flush=True)
    print(f"  storm {storm_res['storm']}", flush=True)
    return {"churn": {"fresh": fresh_res, "cached": cached_res}, "storm": storm_res}


if __name__ == "__main__":
    sys.exit(main())
