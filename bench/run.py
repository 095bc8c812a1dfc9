#!/usr/bin/env python3
"""``make bench``: run the standard benchmark set of issue 5 and regenerate bench/RESULTS.md.

Each server under test (bench/servers.py) is started as its own process on a free
127.0.0.1 port; the load comes from bench/wampbench.py (one harness, so that all
figures compare); each (scenario, server) pair gets a fresh server process, so one
run's leftovers (buffers, fragmentation) never weigh on the next.

Outputs:

- ``bench/results/run-<stamp>.json``  everything measured, plus the machine (git-ignored);
- ``bench/RESULTS.md``                tables, ratios to the peers of the same run, targets;
- ``bench/chart-*.png``               throughput and p99 latency per step, per server.

``--report-only FILE`` regenerates RESULTS.md and the charts from a saved JSON.
``--quick`` is a ~1 minute smoke run (small scenarios, short steps); its RESULTS.md
goes to bench/results/ so that it never replaces the committed full-run report.

The standard set stays under 10 minutes on a 2-core machine: steps are short, open-loop
rate ladders stop once the server is saturated (--stop-when-saturated), and the
closed-loop step gives the saturated throughput with bounded latency.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from contextlib import contextmanager

import report
from common import cpu_model, free_port, git_commit, listening, loadavg, pids_listening_on, raise_nofile, stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
PY = sys.executable

#: server kind -> (label in the report, wampbench --proto)
SERVERS: dict[str, tuple[str, str]] = {
    "oro": (report.LABEL["oro"], "wamp1"),
    "oro2": (report.LABEL["oro2"], "wamp"),  # the same server, spoken to in wamp.2.json
    "oro2mp": (report.LABEL["oro2mp"], "wampmsgpack"),  # ... with wamp.2.msgpack subscribers
    "twisted": (report.LABEL["twisted"], "raw"),
    "autobahn": (report.LABEL["autobahn"], "raw"),
    "crossbar": (report.LABEL["crossbar"], "wamp"),
}

#: Crossbar lives in a virtualenv of its own (its pinned dependencies must not touch the
#: project's): ``python3 -m venv bench/.venv-crossbar && bench/.venv-crossbar/bin/pip install crossbar``.
CROSSBAR = os.path.join(HERE, ".venv-crossbar", "bin", "crossbar")


def crossbar_config(port: int) -> dict[str, Any]:
    """A minimal node: one router worker, realm1 open to anonymous pub/sub, WebSocket with
    JSON on 127.0.0.1 (the same wire format the load generator speaks to oro-sync)."""
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [{
                "uri": "", "match": "prefix",
                "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
                "disclose": {"caller": False, "publisher": False}, "cache": True}]}]}],
            "transports": [{"type": "websocket", "serializers": ["json"],
                            "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1",
                                         "backlog": 4096}}],
        }],
    }


#: CPU sets for the server and the load generator (set by --pin; None = the scheduler decides).
SERVER_CPUS: set[int] | None = None
CLIENT_CPUS: set[int] | None = None


def pin(cpus: set[int] | None) -> None:
    """Runs in the child before exec: the single-threaded server gets a core of its own and
    the load generator the rest, so neither preempts the other and server CPU % reads true."""
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass


@dataclass
class Scenario:
    """One load shape; ``servers`` are the kinds it runs against (in that order)."""

    name: str
    title: str
    servers: list[str]
    subscribers: int = 0
    topics: int = 1
    steps: str = ""
    idle_steps: str = ""
    duration: float = 2.5
    workers: int = 2
    extra: list[str] = field(default_factory=list)


def idle_max() -> int:
    """The most connections one server process can hold here: its fd hard limit less
    the handful it needs itself (listening socket, epoll, stdio, waker pipes)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 50


def standard_scenarios(quick: bool) -> list[Scenario]:
    """The set of issue 5.  Open-loop ladders span ~25k..400k deliveries/s whatever the
    fan-out; the closed-loop window keeps ~20k deliveries in flight."""
    all3 = ["oro", "twisted", "autobahn"]
    if quick:
        return [
            Scenario("fanout100", "100 subscribers, one topic", all3, 100, steps="r500,r2000,w200", duration=1.0),
            Scenario("fanout1000", "1,000 subscribers, one topic", all3 + ["oro2", "oro2mp"], 1000,
                     steps="r50,r200,w20,h50", duration=1.0),
            Scenario("topics", "100 topics × 10 subscribers", ["oro"], 1000, topics=100,
                     steps="r2000,w200", duration=1.0),
            Scenario("churn", "short-lived publisher connections (10 subscribers)", all3, 10, steps="c8",
                     duration=1.5),
            Scenario("idle", "idle connections", all3, idle_steps="500,2000", workers=2),
        ]
    top = idle_max()
    cb = ["crossbar"] if os.path.exists(CROSSBAR) else []  # optional peer, in its own virtualenv
    return [
        Scenario("fanout100", "100 subscribers, one topic", all3, 100,
                 steps="r250,r500,r1000,r2000,r4000,w200"),
        Scenario("fanout1000", "1,000 subscribers, one topic", all3 + ["oro2", "oro2mp"] + cb, 1000,
                 steps="r25,r50,r100,r200,r400,w20,h50"),
        Scenario("fanout10000", "10,000 subscribers, one topic", all3, 10000,
                 steps="r3,r5,r10,r20,r40,w3", extra=["--probes", "3"]),
        Scenario("topics", "1,000 topics × 10 subscribers", ["oro"], 10000, topics=1000,
                 steps="r2500,r5000,r10000,r20000,w200"),
        Scenario("churn", "short-lived publisher connections (10 subscribers)", all3, 10, steps="c2,c8",
                 duration=4.0),
        Scenario("idle", "idle connections", all3,
                 idle_steps=",".join(str(x) for x in (1000, 5000, 10000, top) if x <= top), workers=4),
    ]


# ---------------------------------------------------------------- processes
def own_priority(nice: int) -> int:
    """Run the benchmark (this process and all it starts) ahead of other work on the machine.

    With CFS autogroups (Linux's default) a process's nice value only counts inside its
    session's group, and every busy session gets an equal share: parallel test suites in
    other sessions would leave the server a fraction of a core however low its nice.  So
    the benchmark moves into a session (and autogroup) of its own, holding only the
    processes it starts, and gives that group the priority.  Returns the nice in force."""
    # The work goes on in a child that leads the new session; this process stays in the
    # caller's session, so Ctrl-C (or make's SIGTERM) still arrives, and is passed on to the
    # child's whole process group: servers and load generator included.
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        def forward(sig: int, _frame: Any) -> None:
            try:
                os.killpg(pid, sig)
            except OSError:  # the child has not made its group yet, or is gone
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        os._exit(os.waitstatus_to_exitcode(status))
    os.setsid()
    done = 0
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
        done = nice
    except OSError:
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # for kernels without autogroups
        done = nice
    except OSError:
        pass
    if not done:
        print(f"(could not raise the priority to nice {nice}; numbers may show other jobs' load)", flush=True)
    return done



@contextmanager
def crossbar_server(logdir: str) -> Iterator[tuple[int, int]]:
    """Start a Crossbar node (controller + router worker) and yield (port, controller pid)."""
    port = free_port()
    cbdir = os.path.join(logdir, "crossbar")
    os.makedirs(cbdir, exist_ok=True)
    with open(os.path.join(cbdir, "config.json"), "w") as f:
        json.dump(crossbar_config(port), f, indent=1)
    log = open(os.path.join(logdir, "server-crossbar.log"), "ab")
    proc = subprocess.Popen([CROSSBAR, "start", "--cbdir", cbdir, "--loglevel", "warn"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=cbdir, preexec_fn=lambda: pin(SERVER_CPUS))
    try:
        t_end = time.time() + 60
        while not listening(port):
            if proc.poll() is not None or time.time() > t_end:
                raise RuntimeError(f"crossbar did not start (see {log.name})")
            time.sleep(0.2)
        time.sleep(0.5)
        yield port, proc.pid
    finally:
        stop_process(proc, 30)
        log.close()


def server_pids(kind: str, pid: int, port: int) -> list[int]:
    """The processes whose CPU and RSS count as the server's: for Crossbar the controller
    plus the router worker that owns the listening socket."""
    if kind != "crossbar":
        return [pid]
    return sorted({pid, *pids_listening_on(port)})


@contextmanager
def server(kind: str, logdir: str, extra: list[str] | None = None) -> Iterator[tuple[int, int]]:
    """Start ``servers.py kind`` and yield (port, pid); SIGTERM it afterwards."""
    if kind == "crossbar":
        with crossbar_server(logdir) as pp:
            yield pp
        return
    port_file = os.path.join(logdir, f"{kind}.port")
    if os.path.exists(port_file):
        os.unlink(port_file)
    log = open(os.path.join(logdir, f"server-{kind}.log"), "ab")
    program = "oro" if kind in ("oro2", "oro2mp") else kind  # v1 and v2 are one server
    proc = subprocess.Popen([PY, os.path.join(HERE, "servers.py"), program, "--port-file", port_file] + (extra or []),
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            preexec_fn=lambda: pin(SERVER_CPUS))
    try:
        t_end = time.time() + 30
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.time() > t_end:
                raise RuntimeError(f"server {kind} did not start (see {log.name})")
            time.sleep(0.05)
        with open(port_file) as f:
            port = int(f.read())
        time.sleep(0.3)  # let imports settle before the baseline RSS is taken
        yield port, proc.pid
    finally:
        stop_process(proc, 20)
        log.close()


def wampbench(args: list[str], on_line: Callable[[str], None] | None = None, timeout: float = 300) -> int:
    """Run bench/wampbench.py, echoing its output (and handing each line to on_line)."""
    cmd = [PY, os.path.join(HERE, "wampbench.py")] + args
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            preexec_fn=lambda: pin(CLIENT_CPUS))
    t_end = time.time() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write("    " + line)
        sys.stdout.flush()
        if on_line:
            on_line(line)
        if time.time() > t_end:
            proc.kill()
            break
    return proc.wait()


def run_one(sc: Scenario, kind: str, logdir: str, stamp: str) -> dict[str, Any]:
    label, proto = SERVERS[kind]
    out_file = os.path.join(logdir, f"{sc.name}-{kind}.json")
    print(f"== {sc.name} / {label}", flush=True)
    with server(kind, logdir) as (port, pid):
        spids = [a for p in server_pids(kind, pid, port) for a in ("--server-pid", str(p))]
        args = ["--url", f"ws://127.0.0.1:{port}/", "--proto", proto, *spids,
                "--workers", str(sc.workers), "--duration", str(sc.duration), "--json-out", out_file,
                "--label", f"{sc.name}/{kind}", "--max-seconds", "240", "--drain-timeout", "20"]
        if sc.idle_steps:
            args += ["--idle-steps", sc.idle_steps, "--connect-concurrency", "200"]
        else:
            args += ["-n", str(sc.subscribers), "--steps", sc.steps, "--stop-when-saturated",
                     "--topics", str(sc.topics)]
        rc = wampbench(args + sc.extra)
    try:
        with open(out_file) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = {"error": f"wampbench exited {rc} without results"}
    res["server"] = kind
    res["rc"] = rc
    return res


# ---------------------------------------------------------------- profiling
#: Leaf frames that only wrap a system call; the profile names their caller too.
THIN_WRAPPERS = ("untilConcludes ",)


def parse_pyspy_raw(path: str, top: int = 18) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count_s = line.rpartition(" ")
            try:
                count = int(count_s)
            except ValueError:
                continue
            frames = stack.split(";")
            total += count
            leaf = frames[-1]
            if leaf.startswith(THIN_WRAPPERS) and len(frames) > 1:
                # untilConcludes(f) is where Twisted makes its system calls (send, recv,
                # close): name the caller, or every syscall looks like one function
                leaf = f"{leaf} ← {frames[-2].split(' (')[0]}"
            self_c[leaf] = self_c.get(leaf, 0) + count
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + count

    def rank(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    skip = ("<module>", "main (servers.py)", "ReactorBase.run", "ReactorBase.mainLoop")
    inc = [(k, v) for k, v in rank(incl) if not k.startswith(skip)]
    return {"samples": total, "self": rank(self_c), "inclusive": inc[:top]}


def profile_pyspy(logdir: str, tag: str, what: str, bench_args: list[str], seconds: float = 6.0,
                  kind: str = "oro") -> dict[str, Any]:
    """py-spy (sampling, non-blocking, so it hardly slows the server) on an oro-sync
    server under ``bench_args`` load, attached once the subscribers are connected so that
    the profile shows the steady state only."""
    pyspy = os.path.join(os.path.dirname(PY), "py-spy")
    if not os.path.exists(pyspy):
        return {"error": "py-spy not installed in the virtualenv (pip install py-spy)"}
    raw = os.path.join(logdir, f"pyspy-{kind}-{tag}.txt")
    print(f"== profile: {SERVERS[kind][0]}, {what}, py-spy {seconds:.0f}s", flush=True)
    with server(kind, logdir) as (port, pid):
        spy: dict[str, subprocess.Popen] = {}

        def on_line(line: str) -> None:
            if line.startswith("connected") and "spy" not in spy:
                spy["spy"] = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                               "--rate", "200", "--format", "raw", "--nolineno", "--nonblocking",
                                               "-o", raw], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        wampbench(["--url", f"ws://127.0.0.1:{port}/", "--proto", SERVERS[kind][1], "--server-pid", str(pid),
                   "--duration", str(seconds + 2), "--label", f"profile-{kind}-{tag}"] + bench_args, on_line)
        if "spy" in spy:
            spy["spy"].wait(30)
    if not os.path.exists(raw):
        return {"error": "py-spy produced no profile"}
    res = parse_pyspy_raw(raw)
    res["what"] = f"{SERVERS[kind][0]} server, {what}, py-spy {seconds:.0f}s at 200 Hz"
    return res


def profile_memory(logdir: str, connections: int = 2000) -> dict[str, Any]:
    """tracemalloc in the oro-sync server holding ``connections`` idle subscribed
    connections: which allocations make up the per-connection memory."""
    snap = os.path.join(logdir, "tracemalloc-oro.txt")
    print(f"== memory profile: oro-sync, {connections} idle connections, tracemalloc", flush=True)
    with server("oro", logdir, ["--tracemalloc", snap]) as (port, pid):
        def on_line(line: str) -> None:
            if line.startswith(f"idle {connections}:"):
                os.kill(pid, signal.SIGUSR1)
                t_end = time.time() + 60
                while not os.path.exists(snap) and time.time() < t_end:
                    time.sleep(0.2)

        wampbench(["--url", f"ws://127.0.0.1:{port}/", "--proto", "wamp1", "--server-pid", str(pid),
                   "--idle-steps", str(connections), "--label", "memprofile"], on_line)
    if not os.path.exists(snap):
        return {"error": "no tracemalloc snapshot"}
    with open(snap) as f:
        rows = json.load(f)
    return {"connections": connections, "rows": rows}


# ---------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    model = cpu_model()
    versions: dict[str, str] = {}
    for mod in ("twisted", "autobahn", "txaio", "uvloop", "matplotlib"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "-"
    commit = git_commit(REPO) or ""
    try:
        # the servers import oro_sync from the working tree: say if it differs from the commit
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "oro_sync"], cwd=REPO, capture_output=True,
                               text=True).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
    except OSError:
        dirty = []
    load = loadavg()
    return dict(dirty=dirty, nproc=os.cpu_count(), cpu_model=model, python=platform.python_version(), kernel=platform.release(),
                versions=versions, nofile=list(resource.getrlimit(resource.RLIMIT_NOFILE)),
                mem_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                commit=commit, loadavg_start=load)


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run (report goes to bench/results/)")
    ap.add_argument("--scenarios", default="", help="comma list of scenario names (default: all)")
    ap.add_argument("--servers", default="", help="comma list of server kinds: " + ",".join(SERVERS))
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy / tracemalloc profiles")
    ap.add_argument("--nice", type=int, default=-10,
                    help="scheduling priority of the servers and load generator (default -10, needs root; "
                         "0 to leave it): on a shared machine it keeps other jobs from starving the server")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the server to CPU 0 and the load generator to the other CPUs")
    ap.add_argument("--report-only", default="", help="regenerate RESULTS.md and charts from this run JSON")
    ap.add_argument("--out-md", default="", help="where RESULTS.md goes (default: bench/RESULTS.md)")
    a = ap.parse_args()
    if a.report_only:
        with open(a.report_only) as f:
            run = json.load(f)
        out_md = a.out_md or os.path.join(HERE, "RESULTS.md")
        report.write_report(run, out_md, os.path.dirname(out_md), os.path.relpath(a.report_only, REPO))
        return

    raise_nofile()  # inherited by servers and load generator
    nice = own_priority(a.nice) if a.nice else 0
    global SERVER_CPUS, CLIENT_CPUS
    cpus = sorted(os.sched_getaffinity(0))
    if not a.no_pin and len(cpus) >= 2:
        SERVER_CPUS, CLIENT_CPUS = {cpus[0]}, set(cpus[1:])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS_DIR, stamp)
    os.makedirs(logdir, exist_ok=True)
    scenarios = standard_scenarios(a.quick)
    if a.scenarios:
        want = set(a.scenarios.split(","))
        scenarios = [s for s in scenarios if s.name in want]
    only = set(a.servers.split(",")) if a.servers else set(SERVERS)
    run: dict[str, Any] = {"stamp": stamp, "quick": a.quick, "machine": machine_info(), "nice": nice,
                      "pinning": {"server": sorted(SERVER_CPUS or []), "clients": sorted(CLIENT_CPUS or [])},
                      "scenarios": []}
    t0 = time.time()
    run_file = os.path.join(RESULTS_DIR, f"run-{stamp}.json")

    def save() -> None:
        run["elapsed_s"] = time.time() - t0
        with open(run_file, "w") as f:
            json.dump(run, f, indent=1)

    for sc in scenarios:
        entry = {"scenario": asdict(sc), "results": []}
        run["scenarios"].append(entry)
        for kind in sc.servers:
            if kind in only:
                entry["results"].append(run_one(sc, kind, logdir, stamp))
                save()
    if not a.no_profile and not a.quick and "oro" in only:
        run["profile"] = profile_pyspy(logdir, "fanout1000", "1,000 subscribers, closed-loop fan-out (w20)",
                                       ["-n", "1000", "--steps", "w20"])
        save()
        run["profile_twisted"] = profile_pyspy(logdir, "fanout1000", "1,000 subscribers, closed-loop fan-out (w20)",
                                               ["-n", "1000", "--steps", "w20"], kind="twisted")
        save()
        run["profile_topics"] = profile_pyspy(logdir, "topics", "100 topics × 10 subscribers, closed loop (w200)",
                                              ["-n", "1000", "--topics", "100", "--steps", "w200"])
        save()
        run["profile_churn"] = profile_pyspy(logdir, "churn", "short-lived publisher connections (c8)",
                                             ["-n", "10", "--steps", "c8"])
        save()
        run["memory_profile"] = profile_memory(logdir)
    run["machine"]["loadavg_end"] = loadavg()
    save()
    print(f"== done in {time.time() - t0:.0f}s; results in {run_file}", flush=True)
    out_md = a.out_md or (os.path.join(logdir, "RESULTS.md") if a.quick or a.scenarios or a.servers
                          else os.path.join(HERE, "RESULTS.md"))
    chart_dir = os.path.dirname(out_md)
    report.write_report(run, out_md, chart_dir, os.path.relpath(run_file, REPO))
    print(f"== report: {out_md}", flush=True)


if __name__ == "__main__":
    main()
