#!/usr/bin/env python3
"""attacks.py: what hostile clients cost everybody else (issue 11).

A real ``twistd oro-sync`` (the shipped configuration, tickets required) has
well-behaved subscribers on ``oro/maintenance`` and a backend publishing an
event every 10 ms that carries its send time.  The script measures their
delivery latency (p50/p99) and the server's RSS in three phases of equal
length, one after the other:

1. **baseline**: no attack;
2. **slow-header**: no ticket needed: 300 connections from 127.0.0.2 send
   upgrade requests whose header never ends, half of them fast (4 KiB every
   20 ms, the issue's 200 KB/s per connection), half slowly (50 bytes every
   second); each reconnects as soon as the server drops it;
3. **subscribe-flood**: one logged-in user connection (from 127.0.0.3)
   sends ~28,000 SUBSCRIBE/PREFIX messages per second (unrouted topics,
   another user's topics, CURIEs).

The attacks run in a process of their own, so the subscribers' receive loop
(which measures latency) does not share a core with them.  Prints each
phase beside the baseline, writes ``bench/attacks.md`` and puts it into
``bench/RESULTS.md`` (``bench/report.py`` includes it when it regenerates
that file).  Goal (the issue): p99 under 50 ms and RSS within the budget.

Usage (from the repository root; about a minute)::

    .venv/bin/python bench/attacks.py [--seconds 8] [--subscribers 50] [--no-markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from common import client_frame, free_port, git_commit, loadavg, mono, proc_cpu_rss, raise_nofile
from ticket_storm_clients import EventLog, open_client, summary_ms, use_fast_loop
from ticket_storm_clients import upgrade_request as ticket_upgrade_request
from ticket_storm_server import (REPO, SHIPPED_CONFIG, SHIPPED_USERS, issue_ticket, load_admin_hash,
                                 start_server, write_config)

import yaml  # noqa: E402  (a dependency of oro-sync itself)

TOPIC = "oro/maintenance"
PHASES = ("baseline", "slow-header", "subscribe-flood")
HERE = os.path.dirname(os.path.abspath(__file__))
NOTES_MARKER = "<!-- hand-written notes below survive re-runs -->"


# ------------------------------------------------------------------ the attacker process


class Trickler(asyncio.Protocol):
    """An upgrade request that never ends."""

    def __init__(self, step: int, every: float, done: asyncio.Future, stats: dict) -> None:
        self.step, self.every, self.done, self.stats = step, every, done, stats
        self.transport: Any = None
        self.task: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.stats["opened"] += 1
        transport.write(b"GET /?ticket=none HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        self.task = asyncio.get_running_loop().create_task(self.trickle())

    async def trickle(self) -> None:
        pad = b"a" * self.step
        while self.transport is not None and not self.transport.is_closing():
            self.transport.write(pad)
            self.stats["bytes"] += self.step
            await asyncio.sleep(self.every)

    def data_received(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 431"):
            self.stats["431"] += 1
        elif data.startswith(b"HTTP/1.1 503"):
            self.stats["503"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.done.done():
            self.done.set_result(None)


async def slow_headers(port: int, stop: asyncio.Event, stats: dict) -> None:
    loop = asyncio.get_running_loop()

    async def one(step: int, every: float) -> None:
        while not stop.is_set():
            done = loop.create_future()
            try:
                transport, proto = await loop.create_connection(
                    lambda: Trickler(step, every, done, stats), "127.0.0.1", port,
                    local_addr=("127.0.0.2", 0))
            except OSError:
                stats["connect_errors"] += 1
                await asyncio.sleep(0.1)
                continue
            stopped = loop.create_task(stop.wait())
            await asyncio.wait([done, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            transport.abort()
            if not done.done():
                await done
            stats["dropped"] += 1

    await asyncio.gather(*(one(4096, 0.02) for _ in range(150)),
                         *(one(50, 1.0) for _ in range(150)))


def _subscribe_flood_batch(i: int, n: int) -> bytes:
    out = []
    for k in range(i, i + n):
        kind = k % 3
        if kind == 0:
            msg = f'[5,"unrouted/topic/{k}"]'
        elif kind == 1:
            msg = f'[5,"oro/email_event/2/{k}"]'  # another user's topic: refused
        else:
            msg = f'[1,"p{k % 200}","oro/"]'
        out.append(client_frame(msg.encode()))
    return b"".join(out)


async def subscribe_flood(port: int, ticket: str, stop: asyncio.Event, stats: dict) -> None:
    """~28,000 messages/s on one connection, as long as its socket takes them."""
    loop = asyncio.get_running_loop()
    request, _ = ticket_upgrade_request(port, ticket)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        stats["refused"] = head.split(b"\r\n", 1)[0].decode()
        return

    async def drain_reads() -> None:
        while not reader.at_eof():
            data = await reader.read(65536)
            stats["read_bytes"] += len(data)
    reading = loop.create_task(drain_reads())
    i = 0
    t0 = time.monotonic()
    while not stop.is_set():
        # 280 messages every 10 ms = 28,000/s; once the server stops reading,
        # the kernel buffers fill and the rest waits in ours (bounded here).
        if writer.transport.get_write_buffer_size() < 4 * 1024 * 1024:
            writer.write(_subscribe_flood_batch(i, 280))
            i += 280
        await asyncio.sleep(0.01)
    stats["messages_written"] = i
    stats["seconds"] = round(time.monotonic() - t0, 1)
    reading.cancel()
    writer.transport.abort()


def attacker_child(conn: Any, port: int, ticket: str) -> None:
    """Waits for a phase name, attacks until "stop", reports, repeats."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_fast_loop()
    asyncio.run(_attacker_main(conn, port, ticket))


async def _attacker_main(conn: Any, port: int, ticket: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        phase = await loop.run_in_executor(None, conn.recv)
        if phase == "exit":
            return
        stop = asyncio.Event()
        stats: dict[str, Any] = {k: 0 for k in ("opened", "bytes", "431", "503", "dropped",
                                                "connect_errors", "read_bytes")}
        if phase == "slow-header":
            task = loop.create_task(slow_headers(port, stop, stats))
        elif phase == "subscribe-flood":
            task = loop.create_task(subscribe_flood(port, ticket, stop, stats))
        else:
            task = None
        conn.send("started")
        await loop.run_in_executor(None, conn.recv)  # "stop"
        stop.set()
        if task is not None:
            try:
                await asyncio.wait_for(task, 15)
            except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - reported
                stats["error"] = repr(e)[:200]
        conn.send({k: v for k, v in stats.items() if v})


# ------------------------------------------------------------------ measuring


async def measure(port: int, pid: int, tickets: list[str], backend_tickets: list[str],
                  attacker: Any, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    log = EventLog()
    subscribers = []
    for i, ticket in enumerate(tickets):
        proto = await open_client(port, ticket, 30.0, on_event=log.recorder(i))
        proto.send_text(json.dumps([5, TOPIC]))
        subscribers.append(proto)
    publisher = await open_client(port, backend_tickets[0], 30.0)
    await asyncio.sleep(1.0)
    published = [0]
    rss: list[tuple[int, int]] = []
    running = True

    async def publish() -> None:
        seq = 0
        while running:
            seq += 1
            publisher.send_text(json.dumps([7, TOPIC, {"ts": mono(), "seq": seq}, [], []]))
            published[0] += 1
            await asyncio.sleep(0.01)

    async def sample() -> None:
        while running:
            rss.append((mono(), proc_cpu_rss(pid)[1]))
            await asyncio.sleep(0.1)

    tasks = [loop.create_task(publish()), loop.create_task(sample())]
    results: dict[str, Any] = {}
    await asyncio.sleep(1.0)  # warm-up
    for phase in PHASES:
        attacker.send(phase)
        await loop.run_in_executor(None, attacker.recv)  # "started"
        start, n0 = mono(), published[0]
        await asyncio.sleep(seconds)
        end, n1 = mono(), published[0]
        attacker.send("stop")
        stats = await loop.run_in_executor(None, attacker.recv)
        await asyncio.sleep(1.0)  # late events of the window still arrive
        window = log.window(start, end, n1 - n0, len(subscribers))
        in_window = [r for t, r in rss if start <= t < end]
        window["rss_max_mb"] = round(max(in_window) / 2**20, 1) if in_window else None
        window["rss_after_mb"] = round(rss[-1][1] / 2**20, 1) if rss else None
        window["attack"] = stats
        results[phase] = window
        await asyncio.sleep(1.0)  # recovery gap before the next phase
    running = False
    await asyncio.gather(*tasks)
    attacker.send("exit")
    for proto in subscribers + [publisher]:
        proto.close()
    await asyncio.sleep(0.3)
    return results


# ------------------------------------------------------------------ report


def fmt(v: Any) -> str:
    return "–" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))


def markdown(runs: list[dict[str, Any]]) -> str:
    first = runs[0]
    L = ["## Under attack: other clients' latency and RSS (issue 11)", "",
         f"`bench/attacks.py` on {first['date']} at commit `{first['commit']}` "
         f"({first['subscribers']} subscribers of `{TOPIC}`, one event per 10 ms, {first['seconds']} s per "
         f"phase; load average before the run {' '.join(first['loadavg'])}). "
         "**Caveat**: other engineers were running their own tests and benchmarks on this 2-core "
         "machine at the same time (load average above 2 means the cores were shared), so the "
         "figures are noisy; compare the phases of one run rather than with other runs.", "",
         "| limits | phase | events received / expected | p50 ms | p99 ms | max ms | p99 vs baseline | "
         "server RSS max (MB) | RSS after (MB) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        base = run["phases"]["baseline"]
        for name in PHASES:
            w = run["phases"][name]
            ratio = (f"{w['p99'] / base['p99']:.1f}×" if w.get("p99") and base.get("p99") else "–")
            L.append(f"| {run['config']} | {name} | {fmt(w['n'])} / {fmt(w['expected'])} | {fmt(w['p50'])} | "
                     f"{fmt(w['p99'])} | {fmt(w['max'])} | {ratio} | {fmt(w['rss_max_mb'])} | "
                     f"{fmt(w['rss_after_mb'])} |")
    L += ["", "What the attackers did (counted by the attacking process; `431`: answered "
          "Request Header Fields Too Large, `503`: refused at accept, `dropped`: connections "
          "that ended, each followed by a new one):", ""]
    for run in runs:
        for name in PHASES[1:]:
            L.append(f"- {run['config']}, {name}: `{json.dumps(run['phases'][name]['attack'])}`; "
                     f"server log: {run['server_log_lines']} lines for the whole run")
    verdicts = []
    for run in runs:
        ok = [n for n in PHASES[1:] if (run["phases"][n].get("p99") or 1e9) < 50]
        verdicts.append(f"{run['config']}: met under {', '.join(ok) or 'no attack'}")
    L += ["", f"Goal (p99 < 50 ms under each attack): {'; '.join(verdicts)} in this run. "
          "The budget for buffered input and output is `limits.max_total_input_buffer` + "
          "`max_total_output_buffer` (384 MiB by default); RSS stays far below it because "
          "the per-connection bounds (request header 8 KiB, header deadline 5 s, message budget "
          "100/s) act first.", ""]
    return "\n".join(L)


def splice_results(section: str) -> None:
    """Put ``section`` into RESULTS.md (replacing an earlier one), before "## Profiles"."""
    path = os.path.join(HERE, "RESULTS.md")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = "# oro-sync benchmarks\n"
    title = section.split("\n", 1)[0]
    if title in text:
        start = text.index(title)
        nxt = text.find("\n## ", start + len(title))
        text = text[:start] + section.rstrip() + "\n" + (text[nxt:] if nxt >= 0 else "")
    elif "\n## Profiles" in text:
        i = text.index("\n## Profiles")
        text = text[:i] + "\n" + section.rstrip() + "\n" + text[i:]
    else:
        text = text.rstrip() + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    p.add_argument("--subscribers", type=int, default=50)
    p.add_argument("--no-markdown", action="store_true", help="print only")
    p.add_argument("--configs", default="shipped,hardened",
                   help="whose limits: shipped (etc/oro-sync.yml), hardened (etc/oro-sync.hardened.yml)")
    args = p.parse_args(argv)
    runs = [run_one(args, name) for name in args.configs.split(",")]
    if not args.no_markdown:
        section = markdown(runs)
        path = os.path.join(HERE, "attacks.md")
        if os.path.exists(path):  # hand-written notes below the marker survive re-runs
            with open(path) as f:
                old = f.read()
            if NOTES_MARKER in old:
                section = section.rstrip() + "\n\n" + old[old.index(NOTES_MARKER):]
        with open(path, "w") as f:
            f.write(section)
        splice_results(section)
        print("wrote bench/attacks.md and its section of bench/RESULTS.md")
    return 0


def run_one(args: argparse.Namespace, config_name: str) -> dict[str, Any]:
    raise_nofile()
    with open(SHIPPED_CONFIG) as f:
        secret = yaml.safe_load(f)["auth"]["secret"]
    admin = load_admin_hash(SHIPPED_USERS)
    tickets = [issue_ticket(secret, "admin", admin) for _ in range(args.subscribers)]
    backend = [issue_ticket(secret)]
    flood_ticket = issue_ticket(secret, "admin", admin)
    workdir = tempfile.mkdtemp(prefix="oro-sync-attacks-")
    port = free_port()
    parent, child = multiprocessing.get_context("fork").Pipe()
    attacker = multiprocessing.get_context("fork").Process(
        target=attacker_child, args=(child, port, flood_ticket), daemon=True)
    attacker.start()
    config = write_config(workdir, handshake_timeout=10)
    if config_name == "hardened":
        # The hardened example's limits (per-address and total connection
        # limits, publish rate...), everything else as for the shipped run.
        with open(os.path.join(REPO, "oro_sync", "etc", "oro-sync.hardened.yml")) as f:
            hardened = yaml.safe_load(f)["limits"]
        with open(config) as f:
            cfg = yaml.safe_load(f)
        cfg["limits"].update(hardened)
        cfg["limits"]["publish_rate"] = 0  # the benchmark's backend publishes 100/s
        with open(config, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
    server = start_server(workdir, config, port, backlog=None)
    try:
        use_fast_loop()
        phases = asyncio.run(measure(port, server.pid, tickets, backend, parent, args.seconds))
    finally:
        server.stop()
        attacker.join(10)
        if attacker.is_alive():
            attacker.kill()
        log_lines = sum(1 for _ in open(server.log_path, errors="replace"))
        shutil.rmtree(workdir, ignore_errors=True)
    run = {"config": config_name,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(REPO),
           "loadavg": loadavg(), "seconds": args.seconds, "subscribers": args.subscribers,
           "phases": phases, "server_log_lines": log_lines}
    base = phases["baseline"]
    print(f"-- {config_name} limits")
    print(f"{'phase':<16} {'events':>13} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/base':>9} "
          f"{'RSS max MB':>11}")
    for name in PHASES:
        w = phases[name]
        ratio = f"{w['p99'] / base['p99']:.1f}x" if w.get("p99") and base.get("p99") else "-"
        print(f"{name:<16} {w['n']:>6}/{w['expected']:<6} {fmt(w['p50']):>8} {fmt(w['p99']):>8} "
              f"{fmt(w['max']):>8} {ratio:>9} {fmt(w['rss_max_mb']):>11}")
        if w["attack"]:
            print(f"{'':<16} attack: {json.dumps(w['attack'])}")
    print(f"server log: {log_lines} lines in all")
    return run


if __name__ == "__main__":
    sys.exit(main())
