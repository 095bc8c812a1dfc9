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
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import yaml  # a dependency of oro-sync itself

from common import free_port, loadavg, raise_nofile
from ticket_storm_clients import churn, storm, storm_child, use_fast_loop
from ticket_storm_report import findings, machine_info, markdown, write_markdown
from ticket_storm_server import (REPO, SHIPPED_CONFIG, SHIPPED_USERS, CpuMeter, Server, child_pids,
                                 load_admin_hash, make_tickets, proc_role, start_server, write_config)


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

    results["loadavg_at_end"] = loadavg()
    # Issue 15: what the digest workers can do at most (cores / one digest's CPU
    # time, measured now) against the fresh-ticket connection rate of this run.
    results["digest_capacity"] = capacity = digest_capacity(ncpu)
    fresh_rate = results["churn"]["fresh"]["connections_per_s"]
    capacity["fresh_conn_per_s"] = fresh_rate
    capacity["fresh_vs_capacity"] = round(fresh_rate / capacity["digests_per_s"], 3)
    print(f"digest capacity: {capacity}", flush=True)
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


def digest_capacity(ncpu: int, n: int = 100) -> dict[str, Any]:
    """One digest's CPU time (the mean of ``n``, in this process) and
    ``ncpu`` divided by it: the digests per second the workers could do if
    they had every core to themselves."""
    sys.path.insert(0, REPO)
    from oro_sync.auth.ticket_signing import compute_digest

    t0 = time.process_time()
    for i in range(n):
        compute_digest(f"{i:032x}", "2026-01-01T00:00:00+00:00", "", "secret")
    per = (time.process_time() - t0) / n
    return {"digest_cpu_ms": round(per * 1000, 3), "cores": ncpu,
            "digests_per_s": round(ncpu / per, 1), "loadavg": loadavg()}


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
