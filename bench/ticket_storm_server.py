"""bench/ticket_storm.py's server side: the tickets it pre-generates, the ``twistd
oro-sync`` process it measures (a temp copy of the shipped config) and the CPU meter
that reads the server, its digest workers and the machine from /proc.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from common import CLK_TCK, listening, machine_jiffies, proc_stat_fields, stop_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the checked-out oro_sync, for issue_ticket and the shipped files

import yaml  # noqa: E402  (a dependency of oro-sync itself)

from oro_sync.auth.ticket_signing import issue_ticket  # noqa: E402

SHIPPED_CONFIG = os.path.join(REPO, "oro_sync", "etc", "oro-sync.yml")
SHIPPED_ROUTES = os.path.join(REPO, "oro_sync", "etc", "websocket_routing.yml")
SHIPPED_USERS = os.path.join(REPO, "oro_sync", "etc", "users.yml")


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
    rest = proc_stat_fields(pid)
    if rest is None:
        return None
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
    vals = machine_jiffies()
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
        stop_process(self.proc, 15, 5)



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
            # No admin listener: its fixed default port may be taken on a shared machine.
            cmd = [twistd, "-n", "--pidfile=", "oro-sync", "--config", config, "--listen", listen,
                   "--admin", "none"]
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path, workdir)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{server.log_tail()}")
        if listening(port):
            break
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
