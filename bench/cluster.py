#!/usr/bin/env python3
"""cluster.py - what scaling out costs and gives: one process, two nodes through Redis,
and ``--workers 2``, side by side in one run, driven by bench/wampbench.py (WAMP v1,
1,000 subscribers of one topic, the Oro maintenance route, an open hub without tickets).

Configurations (each a real ``twistd oro-sync`` and, where used, a redis-server started
here on a free port, all on 127.0.0.1):

- ``one``: one process, in-memory broker (the default);
- ``two-local``: nodes A and B with ``--broker redis://``, publisher and subscribers on A
  (every delivery local; A still PUBLISHes each event to Redis, nobody else listens);
- ``two-cross``: the same nodes, publisher on A, subscribers on B: every delivery crosses
  Redis (A -> Redis -> B);
- ``workers2``: ``--workers 2 --broker redis://`` on one port; the kernel spreads the
  subscribers (and the publisher) over the two workers.

Steps: ``w50`` (closed loop, 50 publishes in flight: saturation), then ``rN`` at half of
the one-process saturation rate, the same load for every configuration (latency local vs
cross-node at half saturation).  Server CPU is the sum over the oro-sync processes and
redis-server (also shown apart).  Prints a Markdown section for bench/RESULTS.md and
saves the raw figures under bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from common import free_port, git_commit, listening, loadavg, proc_cpu_rss, stop_process  # noqa: E402

PY = sys.executable
TWISTD = [PY, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "oro-sync",
          "--admin", "none"]
TOPIC = "oro/maintenance"


def open_config(directory: str) -> str:
    """The shipped configuration without tickets (an open hub: anyone publishes)."""
    import yaml

    sys.path.insert(0, ROOT)
    from oro_sync.config import DEFAULT_CONFIG

    with open(DEFAULT_CONFIG) as f:
        data = yaml.safe_load(f)
    data.pop("auth", None)
    base = os.path.dirname(DEFAULT_CONFIG)
    routing = data.get("routing") or []
    data["routing"] = [os.path.join(base, p) for p in ([routing] if isinstance(routing, str) else routing)]
    data.setdefault("limits", {})["max_subscriptions"] = 0
    path = os.path.join(directory, "open.yml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s")


class Redis:
    def __init__(self, directory: str):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait(lambda: listening(self.port), "redis-server")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True, timeout=10).stdout

    def publish_calls(self) -> int:
        m = re.search(r"cmdstat_publish:calls=(\d+)", self.cli("INFO", "commandstats"))
        return int(m.group(1)) if m else 0

    def net_output(self) -> int:
        m = re.search(r"total_net_output_bytes:(\d+)", self.cli("INFO", "stats"))
        return int(m.group(1)) if m else 0


class Node:
    """One twistd oro-sync (or a --workers parent); ``pids`` are the serving processes."""

    def __init__(self, config: str, logdir: str, name: str, broker: str = "", workers: int = 0):
        self.port = free_port()
        self.log = os.path.join(logdir, f"{name}.log")
        argv = TWISTD + ["--config", config, "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                         "--log-level", "warn" if not workers else "info"]
        if broker:
            argv += ["--broker", broker]
        if workers:
            argv += ["--workers", str(workers)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=logdir)
        if workers:
            def ready():
                with open(self.log, errors="replace") as f:
                    return f.read().count("oro-sync listening on") >= workers
            wait(ready, f"{name}'s {workers} workers")
            with open(self.log, errors="replace") as f:
                self.pids = [int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)\)", f.read())]
        else:
            wait(lambda: listening(self.port), name)
            self.pids = [self.proc.pid]
        self.url = f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_process(self.proc, 10, 5)


def bench(label: str, url: str, pub_url: str, pids: list[int], steps: str, a, logdir: str) -> dict:
    out = os.path.join(logdir, f"{label}.json")
    argv = [PY, os.path.join(HERE, "wampbench.py"), "--proto", "wamp1", "--url", url, "--pub-url", pub_url,
            "--topic", TOPIC, "-n", str(a.subscribers), "-w", "2", "--steps", steps,
            "--duration", str(a.duration), "--json-out", out, "--label", label, "--probes", "5",
            "--max-seconds", "240"]
    for pid in pids:
        argv += ["--server-pid", str(pid)]
    print(f"## {label}: {' '.join(argv[2:])}", flush=True)
    subprocess.run(argv, check=True, timeout=300)
    with open(out) as f:
        return json.load(f)


def figures(result: dict, kind: str) -> dict:
    for st in result["steps"]:
        if st["kind"] == kind:
            cpu = st["server_cpu_s"]
            return dict(step=f"{st['kind']}{st['val']}", pub_per_s=st["pub_per_s"], events_per_s=st["events_per_s"],
                        per_cpu=st["delivered"] / cpu if cpu else 0.0, server_cpu_pct=st["server_cpu_pct"],
                        p50=st["p50_ms"], p99=st["p99_ms"], lost=st["lost"],
                        idle=st.get("machine_idle_pct", float("nan")))
    raise KeyError(kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--subscribers", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--nice", type=int, default=-10, help="priority of the whole run (see run.py)")
    ap.add_argument("--report-only", default="", help="print the report of a saved run (its JSON)")
    a = ap.parse_args()
    if a.report_only:
        with open(a.report_only) as f:
            print(report(json.load(f), os.path.abspath(a.report_only)))
        return
    from run import own_priority

    own_priority(a.nice)  # a session (CFS autogroup) of its own, ahead of other work
    if not shutil.which("redis-server"):
        sys.exit("redis-server is needed (Debian: apt-get install redis-server)")
    logdir = tempfile.mkdtemp(prefix="oro-sync-cluster-bench-")
    config = open_config(logdir)
    started = time.time()
    load0 = loadavg()
    results: dict[str, dict] = {}
    redis_cpu: dict[str, float] = {}
    publishes: dict[str, tuple[int, int]] = {}
    w = f"w{a.window}"

    # 1. one process (no Redis): its saturation sets the common open-loop rate.
    one = Node(config, logdir, "one")
    try:
        r = bench("one", one.url, one.url, one.pids, w, a, logdir)
    finally:
        one.stop()
    half = max(50, int(figures(r, "w")["pub_per_s"] / 2))
    steps = f"{w},r{half}"
    one = Node(config, logdir, "one-b")
    try:
        results["one"] = bench("one", one.url, one.url, one.pids, steps, a, logdir)
    finally:
        one.stop()

    redis = Redis(logdir)
    try:
        na = Node(config, logdir, "node-a", broker=redis.url)
        nb = Node(config, logdir, "node-b", broker=redis.url)
        try:
            for label, url in (("two-local", na.url), ("two-cross", nb.url)):
                c0, p0, n0 = proc_cpu_rss(redis.proc.pid)[0], redis.publish_calls(), redis.net_output()
                results[label] = bench(label, url, na.url, na.pids + nb.pids + [redis.proc.pid], steps, a, logdir)
                redis_cpu[label] = proc_cpu_rss(redis.proc.pid)[0] - c0
                publishes[label] = (redis.publish_calls() - p0, redis.net_output() - n0)
        finally:
            na.stop()
            nb.stop()
        wk = Node(config, logdir, "workers2", broker=redis.url, workers=2)
        try:
            c0, p0, n0 = proc_cpu_rss(redis.proc.pid)[0], redis.publish_calls(), redis.net_output()
            results["workers2"] = bench("workers2", wk.url, wk.url, wk.pids + [redis.proc.pid], steps, a, logdir)
            redis_cpu["workers2"] = proc_cpu_rss(redis.proc.pid)[0] - c0
            publishes["workers2"] = (redis.publish_calls() - p0, redis.net_output() - n0)
        finally:
            wk.stop()
    finally:
        stop_process(redis.proc, 5, 5)

    raw = dict(commit=git_commit(ROOT), started=started, minutes=(time.time() - started) / 60,
               loadavg_start=load0, loadavg_end=loadavg(), subscribers=a.subscribers, half_rate=half,
               results=results, redis_cpu_s=redis_cpu, redis_publish_calls_and_bytes=publishes)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime("cluster-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(raw, f, indent=1)
    print(report(raw, path))


def report(raw: dict, path: str) -> str:
    names = {"one": "one process (in-memory broker)", "two-local": "two nodes, subscribers on the publisher's node",
             "two-cross": "two nodes, subscribers on the other node (all through Redis)",
             "workers2": "`--workers 2` (one port, SO_REUSEPORT)"}
    lines = [f"Commit `{raw['commit']}`, {raw['subscribers']:,} WAMP v1 subscribers of one topic, "
             f"{raw['minutes']:.1f} minutes, load average {' '.join(raw['loadavg_start'])} at start / "
             f"{' '.join(raw['loadavg_end'])} at end. Raw: `{os.path.relpath(path, ROOT)}`.", "",
             "| configuration | step | publishes/s | delivered events/s | events / server CPU-s | server CPU % "
             "| p50 ms | p99 ms | lost |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, result in raw["results"].items():
        for kind in ("w", "r"):
            f = figures(result, kind)
            lines.append(f"| {names[key]} | {f['step']} | {f['pub_per_s']:,.0f} | {f['events_per_s']:,.0f} | "
                         f"{f['per_cpu']:,.0f} | {f['server_cpu_pct']:.0f} | {f['p50']:.2f} | {f['p99']:.2f} | "
                         f"{f['lost']:,} |")
    one, loc, cross = (figures(raw["results"][k], "r") for k in ("one", "two-local", "two-cross"))
    sat = {k: figures(v, "w") for k, v in raw["results"].items()}
    lines += ["", "Server CPU includes redis-server (where used); its own share: " + ", ".join(
        f"{k} {v:.2f} CPU-s" for k, v in raw["redis_cpu_s"].items()) + ". Redis PUBLISH calls and bytes "
        "sent by Redis: " + ", ".join(f"{k} {c:,} / {b:,}" for k, (c, b) in raw["redis_publish_calls_and_bytes"].items())
        + ".", "",
        f"- CPU per delivered event, cross-node vs local (same two nodes, Redis included): "
        f"{sat['two-local']['per_cpu'] / sat['two-cross']['per_cpu'] - 1:+.1%} at {sat['one']['step']}, "
        f"{loc['per_cpu'] / cross['per_cpu'] - 1:+.1%} at r{raw['half_rate']} (target ≤ +20%); cross-node vs "
        f"one process: {sat['one']['per_cpu'] / sat['two-cross']['per_cpu'] - 1:+.1%} at {sat['one']['step']}, "
        f"{one['per_cpu'] / cross['per_cpu'] - 1:+.1%} at r{raw['half_rate']}.",
        f"- The Redis hop at r{raw['half_rate']} (half of one process's saturation): p50 "
        f"{cross['p50'] - loc['p50']:+.2f} ms, p99 {cross['p99'] - loc['p99']:+.2f} ms (target < 2 ms p99).",
        f"- Saturation ({sat['one']['step']}): workers2 delivers {sat['workers2']['events_per_s'] / sat['one']['events_per_s']:.2f}× "
        f"one process's events/s; two nodes through Redis {sat['two-cross']['events_per_s'] / sat['one']['events_per_s']:.2f}×."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
