"""RESULTS.md and PNG charts from one run JSON of bench/run.py.

Kept apart from run.py so that a saved run can be re-rendered (``run.py --report-only``)
without measuring again, and so that the report's rules (what "peak" means, which
ratios the targets use) live in one place.

Definitions used throughout:

- *peak events/s*: the highest delivered-events/s of any step of a run in which no
  event was lost or duplicated (open-loop steps past saturation and the closed-loop
  step both measure the server's capacity; under-loaded steps just echo the offered rate);
- *events per server CPU-second*: deliveries of that step divided by the server's own
  CPU time (user+sys from /proc).  Other jobs on the machine steal wall-clock time but
  hardly change this, so it is the noise-robust way to compare servers;
- ratios compare servers measured in the same run.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

ORDER = ["oro", "oro2", "oro2mp", "twisted", "autobahn", "crossbar"]
LABEL = {"oro": "oro-sync WAMP v1", "oro2": "oro-sync WAMP v2", "oro2mp": "oro-sync WAMP v2 (MessagePack)", "twisted": "bare Twisted, pre-framed", "autobahn": "bare Autobahn broadcast",
         "crossbar": "Crossbar.io (WAMP v2)"}
COLOR = {"oro": "#d62728", "oro2": "#ff7f0e", "oro2mp": "#9467bd", "twisted": "#1f77b4", "autobahn": "#7f7f7f", "crossbar": "#2ca02c"}

TARGET_VS_TWISTED = 0.80
TARGET_VS_AUTOBAHN = 1.5
TARGET_KB_PER_IDLE = 10.0
TARGET_CONNECTIONS = 20000
TARGET_VS_CROSSBAR = 10.0
TARGET_P99_HALF_MS = 20.0


def fmt(x: Any, nd: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (int, float)) and nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}"


def plain_step_name(st: dict) -> str:
    """The step as given on the command line (the same for every server: chart axes)."""
    return f"{st['kind']}{st['val']}"


def step_name(st: dict) -> str:
    if st["kind"] == "h" and st.get("rate"):
        return f"h{st['val']} (r{st['rate']})"
    return f"{st['kind']}{st['val']}"


def half_saturation(res: dict) -> dict | None:
    """The h50 step: open loop at half the best rate measured before it."""
    return next((s for s in res.get("steps", []) if s.get("kind") == "h" and s.get("val") == 50), None)


def complete(st: dict) -> bool:
    return st.get("lost", 1) == 0 and st.get("duplicated", 1) == 0 and st.get("expected", 0) > 0


def efficiency(st: dict) -> float:
    cpu = st.get("server_cpu_s") or 0
    return st.get("delivered", 0) / cpu if cpu > 0 else float("nan")


def peak(res: dict) -> dict | None:
    """The step with the most delivered events/s among the complete ones (else any)."""
    steps = [s for s in res.get("steps", []) if s.get("kind") not in ("c", "h")]
    good = [s for s in steps if complete(s)] or steps
    return max(good, key=lambda s: s.get("events_per_s", 0)) if good else None


def by_server(entry: dict) -> dict[str, dict]:
    return {r["server"]: r for r in entry["results"]}


def scenario(run: dict, name: str) -> dict | None:
    for e in run["scenarios"]:
        if e["scenario"]["name"] == name:
            return e
    return None


# ---------------------------------------------------------------- charts
def have_matplotlib() -> bool:
    """Charts need matplotlib (the ``bench`` extra); without it the tables still come out."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def chart_steps(entry: dict, path: str, metric_a: str, label_a: str, title: str) -> None:
    if not have_matplotlib():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = by_server(entry)
    kinds = [k for k in ORDER if k in res]
    names: list[str] = []
    for k in kinds:
        for st in res[k].get("steps", []):
            if plain_step_name(st) not in names:
                names.append(plain_step_name(st))
    if not names:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(kinds))
    for ax, metric, ylabel, logy in ((axes[0], metric_a, label_a, False),
                                    (axes[1], "p99_ms", "p99 latency (ms, log)", True)):
        for i, k in enumerate(kinds):
            vals = {plain_step_name(s): s.get(metric, float("nan")) for s in res[k].get("steps", [])}
            xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(names))]
            ys = [vals.get(n, float("nan")) for n in names]
            ax.bar(xs, [0 if (y is None or y != y) else y for y in ys], width, label=LABEL.get(k, k),
                   color=COLOR.get(k))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if logy:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.text(0.5, 0.01, "rN: N publishes/s open loop · wN: N publishes in flight (closed loop) · "
             "hN: open loop at N% of the best rate before it · cN: N concurrent short-lived publishers",
             ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def chart_idle(entry: dict, path: str) -> None:
    if not have_matplotlib():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = by_server(entry)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in [k for k in ORDER if k in res]:
        rows = res[k].get("idle", [])
        ax.plot([r["connected"] for r in rows], [r["kb_per_conn"] for r in rows], "o-", label=LABEL.get(k, k),
                color=COLOR.get(k))
    ax.axhline(TARGET_KB_PER_IDLE, ls="--", color="k", lw=0.8, label="target ≤ 10 KB")
    ax.set_xlabel("idle connections held")
    ax.set_ylabel("server RSS per connection (KB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Memory per idle connection")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- tables
def steps_table(entry: dict, churn: bool = False) -> list[str]:
    res = by_server(entry)
    lines = ["| server | step | sent | offered pub/s | delivered events/s | lost | dup | p50 ms | p99 ms | max ms "
             "| events / server CPU-s | server CPU % | client CPU % | machine idle % | server RSS max MB |"
             + (" conn/s | failed conns | cycle p99 ms |" if churn else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             + ("---:|---:|---:|" if churn else "")]
    for k in [k for k in ORDER if k in res]:
        for st in res[k].get("steps", []):
            row = (f"| {LABEL.get(k, k)} | {step_name(st)} | {fmt(st.get('sent'))} | {fmt(st.get('pub_per_s'))} "
                   f"| {fmt(st.get('events_per_s'))} | {fmt(st.get('lost'))} | {fmt(st.get('duplicated'))} "
                   f"| {fmt(st.get('p50_ms'), 1)} | {fmt(st.get('p99_ms'), 1)} | {fmt(st.get('max_ms'), 1)} "
                   f"| {fmt(efficiency(st))} | {fmt(st.get('server_cpu_pct'))} | {fmt(st.get('client_cpu_pct'))} "
                   f"| {fmt(st.get('machine_idle_pct'))} | {fmt(st.get('server_rss_max_mb'), 1)} |")
            if churn:
                row += (f" {fmt(st.get('pub_per_s'))} | {fmt(st.get('conn_errors'))} "
                        f"| {fmt(st.get('cycle_p99_ms'), 1)} |")
            lines.append(row)
        if res[k].get("error"):
            lines.append(f"| {LABEL.get(k, k)} | – | {res[k]['error']} |")
    return lines


def summary_table(entry: dict) -> list[str]:
    res = by_server(entry)
    base = {k: peak(res[k]) for k in res}
    lines = ["| server | peak events/s (step) | vs bare Twisted | vs bare Autobahn | events / server CPU-s "
             "| vs bare Twisted (CPU) | vs bare Autobahn (CPU) | server RSS after connect MB | KB / subscriber |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def ratio(k: str, other: str, f: Any) -> str:
        a, b = base.get(k), base.get(other)
        if not a or not b or k == other:
            return "–"
        x, y = f(a), f(b)
        return f"{x / y:.2f}×" if y and y == y and x == x else "–"

    for k in [k for k in ORDER if k in res]:
        p = base[k]
        if p is None:
            lines.append(f"| {LABEL.get(k, k)} | no result | | | | | | | |")
            continue
        ev = lambda s: s.get("events_per_s", 0)  # noqa: E731
        lines.append(f"| {LABEL.get(k, k)} | {fmt(ev(p))} ({step_name(p)}) | {ratio(k, 'twisted', ev)} "
                     f"| {ratio(k, 'autobahn', ev)} | {fmt(efficiency(p))} | {ratio(k, 'twisted', efficiency)} "
                     f"| {ratio(k, 'autobahn', efficiency)} | {fmt(res[k].get('server_rss_connected_mb'), 1)} "
                     f"| {fmt(res[k].get('kb_per_subscriber'), 1)} |")
    return lines


def idle_table(entry: dict) -> list[str]:
    res = by_server(entry)
    lines = ["| server | connections held | still open | failed | connect rate /s | server RSS MB | KB per connection |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k in [k for k in ORDER if k in res]:
        for r in res[k].get("idle", []):
            lines.append(f"| {LABEL.get(k, k)} | {fmt(r['connected'])} | {fmt(r['open'])} | {fmt(r['failed'])} "
                         f"| {fmt(r['conn_per_s'])} | {fmt(r['rss_mb'], 1)} | {fmt(r['kb_per_conn'], 2)} |")
    return lines


# ---------------------------------------------------------------- targets
#: Short server names for the targets table.
SERVER_SHORT = {"oro": "oro-sync v1", "oro2": "oro-sync v2", "oro2mp": "oro-sync v2 msgpack", "twisted": "bare Twisted", "autobahn": "bare Autobahn",
                "crossbar": "Crossbar v2"}


def targets(run: dict) -> list[str]:
    rows = ["| target (issue 5) | measured (this run) | status |", "|---|---|---|"]
    e = scenario(run, "fanout1000")
    if e:
        res = by_server(e)
        p = {k: peak(v) for k, v in res.items()}
        if p.get("oro") and p.get("twisted"):
            for f, what in ((lambda s: s["events_per_s"], "events/s"), (efficiency, "events per server CPU-s")):
                r = f(p["oro"]) / f(p["twisted"])
                rows.append(f"| oro-sync v1 at 1,000 subscribers ≥ 80% of bare pre-framed Twisted ({what}) "
                            f"| {fmt(f(p['oro']))} vs {fmt(f(p['twisted']))} = **{100 * r:.0f}%** "
                            f"| {'met' if r >= TARGET_VS_TWISTED else 'MISSED'} "
                            f"({'+' if r >= TARGET_VS_TWISTED else ''}{100 * (r - TARGET_VS_TWISTED):.0f} points) |")
        closed = {k: next((s for s in v.get("steps", []) if s["kind"] == "w"), None) for k, v in res.items()}
        if closed.get("oro") and closed.get("twisted"):
            o, t = closed["oro"], closed["twisted"]
            rows.append(f"| (same, closed loop {step_name(o)}: equal window, no overload) "
                        f"| {fmt(o['events_per_s'])} vs {fmt(t['events_per_s'])} = "
                        f"**{100 * o['events_per_s'] / t['events_per_s']:.0f}%** events/s, "
                        f"{100 * efficiency(o) / efficiency(t):.0f}% per CPU-s | for reference |")
        if p.get("oro") and p.get("autobahn"):
            for f, what in ((lambda s: s["events_per_s"], "events/s"), (efficiency, "events per server CPU-s")):
                r = f(p["oro"]) / f(p["autobahn"])
                need = TARGET_VS_AUTOBAHN
                rows.append(f"| oro-sync v1 at 1,000 subscribers ≥ 1.5× bare Autobahn ({what}) "
                            f"| {fmt(f(p['oro']))} vs {fmt(f(p['autobahn']))} = **{r:.2f}×** "
                            f"| {'met' if r >= need else 'MISSED'} "
                            f"({'by a margin of ' if r >= need else 'short by '}{100 * abs(r / need - 1):.0f}%) |")
    e = scenario(run, "idle")
    if e:
        res = by_server(e)
        oro = res.get("oro", {}).get("idle", [])
        if oro:
            last = oro[-1]
            kb = last["kb_per_conn"]
            rows.append(f"| ≤ 10 KB RSS per idle connection (oro-sync, connected + subscribed) "
                        f"| {kb:.1f} KB at {fmt(last['connected'])} connections "
                        f"| {'met' if kb <= TARGET_KB_PER_IDLE else 'MISSED'} "
                        f"({100 * abs(kb / TARGET_KB_PER_IDLE - 1):.0f}% "
                        f"{'over' if kb > TARGET_KB_PER_IDLE else 'under'}) |")
            held = max(r["connected"] for r in oro)
            hard = run["machine"]["nofile"][1]
            if held >= TARGET_CONNECTIONS:
                status = "met"
            elif hard <= TARGET_CONNECTIONS and held >= hard - 100 and all(r["failed"] == 0 for r in oro):
                status = (f"not measurable here: the fd hard limit is {hard:,} (unprivileged setrlimit cannot "
                          f"raise it), so one process cannot hold 20,000 sockets; every connection up to "
                          f"{held:,} ({100 * held / TARGET_CONNECTIONS:.1f}%) succeeded")
            else:
                status = f"MISSED ({fmt(held)} held, {100 * held / TARGET_CONNECTIONS:.0f}%)"
            rows.append(f"| 20,000 concurrent connections in one process | {fmt(held)} held, "
                        f"{fmt(oro[-1]['open'])} still open at the end | {status} |")
    e = scenario(run, "fanout1000")
    res = by_server(e) if e else {}
    v2, cb_res = res.get("oro2"), res.get("crossbar")
    if v2 and peak(v2):
        o = peak(v2)
        if cb_res and peak(cb_res):
            c = peak(cb_res)
            for f, what in ((lambda s: s["events_per_s"], "events/s"), (efficiency, "events per server CPU-s")):
                r = f(o) / f(c)
                rows.append(f"| oro-sync WAMP v2 at 1,000 subscribers ≥ 10× Crossbar.io ({what}) "
                            f"| {fmt(f(o))} vs {fmt(f(c))} = **{r:.1f}×** "
                            f"| {'met' if r >= TARGET_VS_CROSSBAR else 'MISSED'} "
                            f"({'by a margin of ' if r >= TARGET_VS_CROSSBAR else 'short by '}"
                            f"{100 * abs(r / TARGET_VS_CROSSBAR - 1):.0f}%) |")
        else:
            rows.append("| oro-sync WAMP v2 at 1,000 subscribers ≥ 10× Crossbar.io | Crossbar not measured in "
                        "this run (`make bench-crossbar` builds it) | not measured |")
        h = half_saturation(v2)
        if h:
            ok = h["p99_ms"] < TARGET_P99_HALF_MS and complete(h)
            rows.append(f"| oro-sync WAMP v2: p99 < 20 ms at half saturation (h50) "
                        f"| {fmt(h['p99_ms'], 1)} ms at {fmt(h['events_per_s'])} events/s "
                        f"({step_name(h)}: half of {fmt(h.get('of_peak_events_per_s'))}) "
                        f"| {'met' if ok else 'MISSED'} "
                        f"({100 * abs(h['p99_ms'] / TARGET_P99_HALF_MS - 1):.0f}% "
                        f"{'under' if ok else 'over'}) |")
    else:
        rows.append("| WAMP v2: ≥ 10× Crossbar's deliveries/s at 1,000 subscribers; p99 < 20 ms at half "
                    "saturation | – | not measured in this run |")
    half = [f"{SERVER_SHORT.get(k, k)} {fmt(h['p99_ms'], 1)} ms (at {fmt(h['events_per_s'])} events/s)"
            for k in ORDER if k in res for h in [half_saturation(res[k])] if h]
    if half:
        rows.append("| (p99 at half saturation, every server of the run) | " + ", ".join(half) + " | for reference |")
    return rows


def pyspy_section(prof: dict | None, title: str) -> list[str]:
    out: list[str] = []
    if prof and not prof.get("error"):
        out += [f"### {title} ({prof['what']}; {prof['samples']:,} busy samples)", "",
                "Self time (the function itself is on top of the stack):", "",
                "| % of busy samples | function (file) |", "|---:|---|"]
        out += [f"| {v:.1f} | `{k}` |" for k, v in prof["self"]]
        out += ["", "Inclusive time (the function or anything it calls):", "",
                "| % of busy samples | function (file) |", "|---:|---|"]
        out += [f"| {v:.1f} | `{k}` |" for k, v in prof["inclusive"]]
        out.append("")
    elif prof:
        out += [f"Profile: {prof['error']}", ""]
    return out


def profile_section(run: dict) -> list[str]:
    out: list[str] = []
    for key, title in (("profile", "Where the fan-out time goes"),
                       ("profile_twisted", "For comparison: the bare pre-framed Twisted server on the same load"),
                       ("profile_topics", "Where the per-publish time goes"),
                       ("profile_churn", "Where the connection time goes")):
        out += pyspy_section(run.get(key), title)
    return out


def memory_section(run: dict) -> list[str]:
    out: list[str] = []
    mem = run.get("memory_profile")
    if mem and not mem.get("error"):
        rows = mem["rows"]
        n = mem["connections"]
        out += [f"### Where the memory of {n:,} idle connections goes (tracemalloc, live Python allocations by line)",
                "", f"Traced total: {rows[0][1] / 1024:.1f} MiB in {rows[0][2]:,} blocks "
                    f"(≈ {rows[0][1] / n:.1f} KiB per connection; RSS also holds allocator slack, "
                    "the interpreter and libraries).", "",
                "| KiB | per connection (bytes) | blocks | allocated at |", "|---:|---:|---:|---|"]
        for where, kib, count in rows[1:]:
            out.append(f"| {kib:,.0f} | {kib * 1024 / n:,.0f} | {count:,} | `{where}` |")
        out.append("")
    return out


# ---------------------------------------------------------------- the report

def client_loops(run: dict[str, Any]) -> str:
    """How the subscribers parsed events in this run (C or Python), for the machine table."""
    loops = sorted({r.get("client_loop") or "events parsed in Python"
                    for sc in run["scenarios"] for r in sc["results"] if "error" not in r})
    return ", ".join(loops) or "–"

def write_report(run: dict, out_md: str, chart_dir: str, json_rel: str) -> None:
    m = run["machine"]
    v = m["versions"]
    L: list[str] = [
        "# oro-sync benchmarks",
        "",
        f"Generated by `make bench` (`bench/run.py`{' --quick' if run.get('quick') else ''}) on "
        f"{run['stamp'][:4]}-{run['stamp'][4:6]}-{run['stamp'][6:8]} at commit `{m.get('commit', '')}`, "
        + (f"(with uncommitted changes to {', '.join(m['dirty'])}) " if m.get("dirty") else "")
        + f"in {run.get('elapsed_s', 0) / 60:.1f} minutes. Raw data: `{json_rel}` (git-ignored; "
        "regenerate this file with `bench/run.py --report-only <that file>`).",
        "",
        "## Machine",
        "",
        "| | |", "|---|---|",
        f"| CPUs (nproc) | {m['nproc']} × {m['cpu_model']} |",
        f"| memory | {m['mem_gb']} GiB |",
        f"| Python | {m['python']} (kernel {m['kernel']}) |",
        f"| Twisted / Autobahn / txaio | {v.get('twisted')} / {v.get('autobahn')} / {v.get('txaio')} |",
        f"| load generator | bench/wampbench.py, asyncio + uvloop {v.get('uvloop')}, 2–4 subscriber processes + 1 publisher; "
        f"{client_loops(run)} |",
        f"| fd limit (soft, hard) | {m['nofile'][0]:,}, {m['nofile'][1]:,} |",
        f"| load average at start / end | {' '.join(m['loadavg_start'])} / {' '.join(m.get('loadavg_end', []))} |",
        "",
        f"**Priority and CPUs.** Servers and load generator ran in a session (CFS autogroup) of their own "
        f"at nice {run.get('nice', 0)}"
        + (", ahead of the other jobs on the machine, so that the numbers measure the server rather than the "
           "scheduler" if run.get("nice") else "")
        + (f"; the server was pinned to CPU {run['pinning']['server']} and the load generator to CPU "
           f"{run['pinning']['clients']}." if run.get("pinning", {}).get("server") else ".") + " ",
        "**Noise.** Server, load generator and everything else share 2 cores, all on 127.0.0.1; other "
        "jobs (test suites of parallel work) may run on this machine during a run, and even without them "
        "wall-clock figures (events/s, latency) carry noise of tens of percent between runs — the *machine idle %* "
        "column shows how busy the machine was. *Events per server CPU-second* (deliveries divided by the "
        "server's own CPU time) is hardly affected by that and is the fairer basis for ratios. The server "
        "is single-threaded: at saturation it uses one core and the load generator the other (see "
        "*client CPU %*, the sum over all client processes, 100 % = one core).",
        "",
        "## Targets",
        "",
    ]
    if not have_matplotlib():
        L += ["*(matplotlib is not installed: charts were not regenerated; `pip install '.[bench]'`)*", ""]
    L += targets(run)
    L += ["", "## Fan-out to one topic", "",
          "Each event is one publish `[7, topic, [ts_ns, seq, step, pad]]` (oro-sync) or the same-sized raw "
          "message (peers), delivered to every subscriber; latency is publish → receipt on the same clock, "
          "sampled on ~100 connections. Open-loop steps `rN` publish N/s for the step's duration (a ladder "
          "that stops once the server falls behind); `wN` is closed loop with N publishes in flight; `h50` "
          "publishes open loop at half the best rate of the steps before it (the rate in brackets): the "
          "latency at half saturation.", ""]
    for name in ("fanout100", "fanout1000", "fanout10000"):
        e = scenario(run, name)
        if not e:
            continue
        sc = e["scenario"]
        png = f"chart-{name}.png"
        chart_steps(e, os.path.join(chart_dir, png), "events_per_s", "delivered events/s",
                    f"{sc['title']} ({sc['duration']:g} s per step)")
        L += [f"### {sc['title']}", ""] + summary_table(e) + ["", f"![{name}]({png})", "", "<details><summary>"
              "all steps</summary>", ""] + steps_table(e) + ["", "</details>", ""]
    e = scenario(run, "topics")
    if e:
        png = "chart-topics.png"
        title = e["scenario"]["title"]
        chart_steps(e, os.path.join(chart_dir, png), "events_per_s", "delivered events/s", title + " (oro-sync)")
        L += [f"## {title}", "",
              "Publishes go round-robin over the topics (so each reaches 10 subscribers); the raw peers "
              "have no topics, so this is oro-sync alone: per-publish costs (parse, lookup, encode, frame) "
              "weigh 100× more here than at 1,000 subscribers per topic.", ""]
        L += summary_table(e) + ["", f"![topics]({png})", ""] + steps_table(e) + [""]
    e = scenario(run, "churn")
    if e:
        png = "chart-churn.png"
        chart_steps(e, os.path.join(chart_dir, png), "pub_per_s", "connections/s (one publish each)",
                    "Short-lived publisher connections")
        L += ["## Short-lived connections", "",
              "As Oro's backend publishes: each cycle opens a TCP connection, does the WebSocket handshake "
              "(oro-sync: subprotocol `wamp`, waits for WELCOME), sends one publish and closes; `cN` runs N "
              "such loops concurrently. Every publish must reach the 10 subscribers (lost/dup columns). "
              "*conn/s* is completed cycles per second.", ""]
        L += [f"![churn]({png})", ""] + steps_table(e, churn=True) + [""]
    e = scenario(run, "idle")
    if e:
        png = "chart-idle.png"
        chart_idle(e, os.path.join(chart_dir, png))
        L += ["## Idle connections", "",
              "Connections are opened (and, for oro-sync, subscribed to one topic) in increments; the server's "
              "RSS is read from /proc after each, 1 s after the last connect. KB per connection = (RSS − RSS "
              "before any connection) / connections.", ""]
        L += idle_table(e) + ["", f"![idle]({png})", ""]
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")
    if os.path.exists(analysis) and not run.get("quick"):
        # hand-written reading of the numbers and profiles (kept in bench/analysis.md so that
        # regenerating this file keeps it); it names the run it was written for
        with open(analysis) as f:
            L += [f.read().rstrip(), ""]
    attacks = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attacks.md")
    if os.path.exists(attacks) and not run.get("quick"):
        # written by bench/attacks.py (its own run, not part of make bench)
        with open(attacks) as f:
            L += [f.read().rstrip(), ""]
    prof = profile_section(run) + memory_section(run)
    if prof:
        L += ["## Profiles", ""] + prof
    L += ["## Running it", "",
          "- `make bench` — the standard set above (< 10 minutes), rewrites this file and the charts;",
          "- `.venv/bin/python bench/run.py --quick` — ~1 minute smoke run (report under bench/results/);",
          "- `--scenarios fanout1000,idle --servers oro,twisted` — a subset (report under bench/results/);",
          "- `bench/wampbench.py --help` — the load generator alone, against any server "
          "(`--proto wamp1|wamp|raw`);",
          "- `bench/servers.py oro|twisted|autobahn --port-file F` — a server under test alone;",
          "- Crossbar.io is measured when `bench/.venv-crossbar/bin/crossbar` exists (`python3 -m venv "
          "bench/.venv-crossbar && bench/.venv-crossbar/bin/pip install crossbar`; its own virtualenv, "
          "since its pinned dependencies must not touch the project's).", ""]
    with open(out_md, "w") as f:
        f.write("\n".join(L))
