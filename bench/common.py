"""What the benchmark scripts share: WebSocket framing, ports and processes, the fd
limit, percentiles, /proc readings and what the machine is.

Stdlib only, and no Twisted or asyncio: the servers under test (servers.py), the load
generators (wampbench*.py, ticket_storm*.py) and the orchestration (run.py) all import it.
The scripts run as ``python bench/NAME.py``, so bench/ is on ``sys.path`` and this is
``import common``.
"""
from __future__ import annotations

import base64
import hashlib
import math
import os
import resource
import signal
import socket
import subprocess
import time

#: CLOCK_MONOTONIC in ns: shared by every process on the host, so a send time stamped in
#: one process and a receive time in another subtract to a latency.
mono = time.monotonic_ns
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- WebSocket (RFC 6455)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server answers to Sec-WebSocket-Key ``key``."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def upgrade_request(host: str, port: int, path: str, key: bytes, subprotocol: str | None) -> bytes:
    """A client's HTTP upgrade request (``key`` already base64)."""
    req = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + key.decode(),
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        req.append("Sec-WebSocket-Protocol: " + subprotocol)
    return ("\r\n".join(req) + "\r\n\r\n").encode()


def xor_mask(key: bytes, data: bytes) -> bytes:
    """``data`` masked (or unmasked: the same XOR) with the 4-byte ``key``."""
    n = len(data)
    if not n:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def _frame_head(opcode: int, n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, mask_bit | n))
    if n < 65536:
        return bytes((0x80 | opcode, mask_bit | 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, mask_bit | 127)) + n.to_bytes(8, "big")


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One unmasked, unfragmented frame (servers must not mask)."""
    return _frame_head(opcode, len(payload), 0) + payload


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked, unfragmented frame with a random key (clients must mask, RFC 6455 5.3)."""
    key = os.urandom(4)
    return _frame_head(opcode, len(payload), 0x80) + key + xor_mask(key, payload)


def frame_header(buf: bytes | bytearray, pos: int, n: int) -> tuple[int, int] | None:
    """(header length before any mask key, payload length) of the frame at ``buf[pos]``,
    or None while its extended length has not all arrived.  Needs ``n - pos >= 2``."""
    ln = buf[pos + 1] & 0x7F
    if ln == 126:
        if n - pos < 4:
            return None
        return 4, int.from_bytes(buf[pos + 2:pos + 4], "big")
    if ln == 127:
        if n - pos < 10:
            return None
        return 10, int.from_bytes(buf[pos + 2:pos + 10], "big")
    return 2, ln


def frames(buf: bytes | bytearray):
    """Each complete frame of ``buf``, in order, as (first byte, payload start, payload end,
    masked); a masked frame's key is the 4 bytes before its payload.  Stops at the first
    incomplete frame: the caller keeps ``buf`` from the last end it was given."""
    pos, n = 0, len(buf)
    while n - pos >= 2:
        head = frame_header(buf, pos, n)
        if head is None:
            return
        hdr, ln = head
        masked = buf[pos + 1] & 0x80
        start = pos + hdr + (4 if masked else 0)
        end = start + ln
        if end > n:
            return
        yield buf[pos], start, end, masked
        pos = end


# ---------------------------------------------------------------- ports, processes, fds
def free_port() -> int:
    """A 127.0.0.1 port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen, grace: float, kill_wait: float | None = None) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (and wait ``kill_wait`` s, None: for ever)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_wait)


def raise_nofile() -> tuple[int, int]:
    """Lift the soft fd limit to the hard one (10,000+ sockets per process need it; an
    unprivileged process cannot go past the hard limit anyway); returns the limits in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ---------------------------------------------------------------- percentiles
# Two definitions, each the one its report has always used: changing either would move
# the published figures.
def quantile(sorted_values, q: float) -> float:
    """The value at index int(q * n) of a sorted sequence (q a fraction); NaN if empty.
    wampbench's latency and cycle-time percentiles."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def percentile(sorted_values, q: float) -> float | None:
    """Nearest-rank percentile (q in percent) of a sorted sequence; None if empty.
    ticket_storm's percentiles."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------- /proc
def proc_stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [1] ppid, [11] utime, [12] stime (ticks),
    [21] rss (pages); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of a process; (0.0, 0) once it is gone."""
    parts = proc_stat_fields(pid)
    try:
        return (int(parts[11]) + int(parts[12])) / CLK_TCK, int(parts[21]) * PAGE
    except (TypeError, IndexError, ValueError):
        return 0.0, 0


def machine_jiffies() -> list[int]:
    """The machine's CPU time from /proc/stat: user, nice, system, idle, iowait, irq,
    softirq, steal, ... (jiffies, all cores)."""
    with open("/proc/stat", encoding="ascii") as f:
        return [int(v) for v in f.readline().split()[1:]]


def pids_listening_on(port: int) -> list[int]:
    """The processes holding a socket that listens on ``port`` (e.g. Crossbar's router worker)."""
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
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(int(pid))
                    break
        except (PermissionError, FileNotFoundError):
            pass
    return sorted(pids)


# ---------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" if it does not say)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    with open("/proc/loadavg", encoding="ascii") as f:
        return f.read().split()[:3]


def git_commit(repo: str) -> str | None:
    """The short commit checked out in ``repo`` ("" if git says nothing, None if it fails)."""
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
