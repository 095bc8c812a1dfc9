"""bench/ticket_storm.py's report: the machine, the generated part of bench/TICKETS.md
(tables and findings) and the rewrite that keeps the hand-written notes below it.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any

from common import cpu_model, git_commit, loadavg
from ticket_storm_clients import TOPIC, uvloop
from ticket_storm_server import REPO


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, CPU model, versions, load, commit."""
    model = cpu_model() or "?"
    import autobahn
    import twisted
    load = loadavg()
    commit = git_commit(REPO)
    if commit is None:
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
