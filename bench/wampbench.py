#!/usr/bin/env python3
"""
wampbench.py - fan-out benchmark for WAMP v1 servers, WAMP v2 routers (WebSocket,
wamp.2.json; --proto wampmsgpack: subscribers on wamp.2.msgpack) and bare WebSocket
broadcast servers (--proto raw).

Derived from the project's shared load generator (shared/bench/wampbench.py); this copy
adds a WAMP v1 mode, several topics, short-lived publisher connections and an idle
(memory per connection) mode, so that every figure of bench/RESULTS.md comes from one
harness and compares.

Stdlib only (uses uvloop if importable). One coordinator process, W subscriber
worker processes (each holds N/W connections, lean asyncio.Protocol WebSocket
client with a hand-written frame parser), and one publisher process.

WAMP1 mode: every subscriber: (subprotocol "wamp") WELCOME -> [5, topic] (SUBSCRIBE) ->
            [2, id, "bench:barrier"] (a CALL to nothing): v1 has no SUBSCRIBED, but a
            server handles one connection's messages in order, so the CALLRESULT/CALLERROR
            proves the subscription is in place.
            publisher: WELCOME -> PUBLISH [7, topic, [ts_ns, seq, step, "pad"]] (Autobahn
            profile: excludeMe, the publisher is not subscribed anyway).
            EVENT frames are [8, topic, [ts_ns, seq, step, "pad"]].
WAMP mode:  every subscriber: HELLO(realm) -> WELCOME -> SUBSCRIBE(topic) -> SUBSCRIBED.
            publisher: HELLO -> PUBLISH [16, req, {}, topic, [ts_ns, seq, step, "pad"]]
            (never acknowledge:true; flow control is end-to-end, see wNN).
RAW mode:   subscribers just open the WebSocket (no subprotocol). The publisher opens
            url + "?pub" and sends a frame shaped like a WAMP EVENT
            [36, subid, pubid, {}, [ts_ns, seq, step, "pad"]]; the server must relay it
            verbatim to every other connection (it may answer the sender; ignored).

--topics K (WAMP modes): subscriber i subscribes to topic "<topic>.<i mod K>", event
            seq s is published to topic "<topic>.<s mod K>"; the sentinel subscribes to all.
            K=1 uses "<topic>" itself.

Steps (--steps): comma list of  rNNN  (open-loop NNN publishes/s for --duration s)
                             or  wNN   (closed-loop: at most NN publishes in flight, i.e. not yet
                                        received by a sentinel subscriber in the publisher process)
                             or  hNN   (open loop at NN% of the best delivered events/s of the
                                        steps before it: "latency at half saturation" is h50)
                             or  cNN   (short-lived publishers: NN concurrent loops of
                                        connect, handshake, WELCOME, one PUBLISH, close;
                                        reports connections/s; the way Oro's backend publishes).
Before each step, --probes sequential probe events are published and each awaited at the
sentinel: this checks the server is quiescent (drained) and gives an idle latency.
Each step is drained (until all expected events arrived or counts stop moving) before
the next. With --stop-when-saturated, once a step ends with the server more than
--saturated-lag seconds behind, the remaining open-loop steps are skipped (their backlog
would only cost drain time); w and c steps still run.
Latency = CLOCK_MONOTONIC(recv) - CLOCK_MONOTONIC(publish) (same host, all
processes share the clock), recorded on every --sample-every'th subscriber connection.
Server RSS / CPU is read from /proc for --server-pid (auto-detected from the listening
port if omitted; several pids allowed, e.g. crossbar controller + router worker).

Idle mode (--idle-steps 1000,5000,...): no publishing; subscribers are connected (and
subscribed) in increments up to each count, and the server RSS is sampled after each,
giving RSS per idle connection.

Everything is bounded: steps have fixed durations, drains have timeouts, --max-seconds
stops everything.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from array import array
from typing import Any
from urllib.parse import urlparse

from common import machine_jiffies, pids_listening_on, proc_cpu_rss, quantile, raise_nofile
from wampbench_clients import build_fastscan, publisher_main, uvloop, worker_main


def topic_names(base: str, k: int) -> list[str]:
    return [base] if k <= 1 else [f"{base}.{i}" for i in range(k)]


def cpu_times():
    """(total, idle, steal) jiffies of the whole machine"""
    v = machine_jiffies()
    return sum(v), v[3] + v[4], v[7] if len(v) > 7 else 0


# ---------------------------------------------------------------- coordinator
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:18080/ws")
    ap.add_argument("--proto", choices=["wamp1", "wamp", "wampmsgpack", "raw"], default="wamp")
    ap.add_argument("--pub-url", default="",
                    help="where the publisher connects (default --url; subscribers and the sentinel "
                         "stay on --url: events cross from one node to another)")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--topic", default="bench.fanout")
    ap.add_argument("--topics", type=int, default=1, help="number of topics (WAMP modes)")
    ap.add_argument("-n", "--subscribers", type=int, default=100)
    ap.add_argument("-w", "--workers", type=int, default=2, help="subscriber processes")
    ap.add_argument("--steps", default="r10,r50,r100,w10")
    ap.add_argument("--idle-steps", default="", help="idle mode: connection counts to sample RSS at")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    ap.add_argument("--pad", type=int, default=20, help="bytes of padding string in the event args")
    ap.add_argument("--sample-every", type=int, default=0, help="record latency on every k-th connection (default: ~100 conns)")
    ap.add_argument("--connect-concurrency", type=int, default=100)
    ap.add_argument("--drain-timeout", type=float, default=40.0)
    ap.add_argument("--stop-when-saturated", action="store_true")
    ap.add_argument("--saturated-lag", type=float, default=1.0)
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--probes", type=int, default=9, help="sequential probe events before each step (idle latency)")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--no-fastscan", action="store_true",
                    help="parse events in Python, not in bench/fastscan.c (slower clients)")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--label", default="")
    a = ap.parse_args(argv)
    raise_nofile()

    u = urlparse(a.url)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), "loopback targets only"
    steps = []
    for s in a.steps.split(","):
        s = s.strip()
        if not s or a.idle_steps:
            continue
        assert s[0] in "rwch", s
        steps.append((s[0], int(s[1:])))
    idle_steps = [int(x) for x in a.idle_steps.split(",") if x.strip()]
    if idle_steps:
        a.subscribers = max(idle_steps)
    names = topic_names(a.topic, a.topics if a.proto != "raw" else 1)
    cfg = dict(host=u.hostname, port=u.port or 80, path=(u.path or "/"), proto=a.proto, realm=a.realm,
               topic_names=names, steps=steps, pad=a.pad, connect_concurrency=a.connect_concurrency,
               sample_every=a.sample_every or max(1, a.subscribers // 100), no_uvloop=a.no_uvloop)
    pu = urlparse(a.pub_url or a.url)
    assert pu.hostname in ("127.0.0.1", "localhost", "::1"), "loopback targets only"
    cfg.update(pub_host=pu.hostname, pub_port=pu.port or 80)
    spids = a.server_pid or pids_listening_on(cfg["port"])
    deadline = time.time() + a.max_seconds
    out: dict[str, Any] = {
        "label": a.label, "url": a.url, "proto": a.proto, "subscribers": a.subscribers, "topics": len(names),
        "workers": a.workers, "server_pids": spids, "uvloop": bool(uvloop) and not a.no_uvloop,
        "duration": a.duration, "pad": a.pad, "steps": [], "idle": []}

    def server_sample():
        cpu = rss = 0
        for pid in spids:
            c, r = proc_cpu_rss(pid)
            cpu += c
            rss += r
        return cpu, rss

    print(f"# {a.label} proto={a.proto} url={a.url} N={a.subscribers} topics={len(names)} workers={a.workers} "
          f"server_pids={spids} uvloop={out['uvloop']}", flush=True)
    _, rss0 = server_sample()
    out["server_rss_idle_mb"] = rss0 / 2**20

    out["client_loop"] = build_fastscan(a.no_fastscan) or "events parsed in Python"
    ctx = mp.get_context("fork")  # the workers inherit the loaded library
    workers = []
    for w in range(a.workers):
        pc, cc = ctx.Pipe()
        pr = ctx.Process(target=worker_main, args=(w, cc, cfg), daemon=True)
        pr.start()
        workers.append((pr, pc))
    pub = None
    pc = None
    if not idle_steps:
        pc, cc = ctx.Pipe()
        pub = ctx.Process(target=publisher_main, args=(cc, cfg), daemon=True)
        pub.start()
    allchild = [p for p, _ in workers] + ([pub] if pub else [])

    def child_cpu():
        return sum(proc_cpu_rss(p.pid)[0] for p in allchild)

    def connect(lo: int, hi: int) -> tuple[int, int, dict, list]:
        """Connect subscribers lo..hi-1, spread round-robin over the workers."""
        for w, (_, c) in enumerate(workers):
            c.send(("connect", [i for i in range(lo, hi) if i % a.workers == w]))
        ok = fail = 0
        errs: dict[str, int] = {}
        per_topic = [0] * len(names)
        for _, c in workers:
            r = c.recv()
            ok += r[1]; fail += r[2]
            for k, v in r[4].items():
                errs[k] = errs.get(k, 0) + v
            for i, v in enumerate(r[5]):
                per_topic[i] += v
        return ok, fail, errs, per_topic

    try:
        if idle_steps:
            ok_total = 0
            lo = 0
            c_start = server_sample()[0]
            for target in idle_steps:
                t0 = time.time()
                ok, fail, errs, _ = connect(lo, target)
                tconn = time.time() - t0
                ok_total += ok
                time.sleep(1.0)  # let the server settle (GC, buffers) before sampling
                _, rss = server_sample()
                open_now = 0
                for _, c in workers:
                    c.send(("stats",))
                for _, c in workers:
                    open_now += c.recv()[3]
                row = dict(target=target, connected=ok_total, open=open_now, failed=fail, errors=errs,
                           connect_s=tconn, conn_per_s=ok / tconn if tconn else 0, rss_mb=rss / 2**20,
                           kb_per_conn=(rss - rss0) / max(ok_total, 1) / 1024)
                out["idle"].append(row)
                print(f"idle {target}: connected {ok_total} (open {open_now}, failed {fail}) in {tconn:.1f}s "
                      f"({row['conn_per_s']:.0f}/s); server RSS {rss0 / 2**20:.1f} -> {rss / 2**20:.1f} MB "
                      f"= {row['kb_per_conn']:.2f} KB/conn" + (f"  errors {errs}" if errs else ""), flush=True)
                lo = target
                if fail or time.time() > deadline:
                    break
            out["server_cpu_connect_s"] = server_sample()[0] - c_start
            out["connected"] = ok_total
            return out

        # connect subscribers
        t0 = time.time()
        ok, fail, errs, per_topic = connect(0, a.subscribers)
        tconn = time.time() - t0
        _, rss1 = server_sample()
        out.update(connected=ok, connect_failed=fail, connect_errors=errs, connect_s=tconn,
                   server_rss_connected_mb=rss1 / 2**20,
                   kb_per_subscriber=(rss1 - rss0) / max(ok, 1) / 1024)
        print(f"connected {ok}/{a.subscribers} (failed {fail}) in {tconn:.2f}s "
              f"({ok / tconn:.0f} conn+sub/s); server RSS idle {rss0 / 2**20:.1f} MB -> {rss1 / 2**20:.1f} MB "
              f"(+{(rss1 - rss0) / max(ok, 1) / 1024:.1f} KB/conn)", flush=True)
        if errs:
            print("  connect errors:", errs)
        r = pc.recv()
        if r[0] != "ready":
            raise SystemExit("publisher failed: %r" % (r,))
        time.sleep(0.5)

        hdr = (f"{'step':>6} {'sent':>7} {'pub/s':>8} {'deliv':>9} {'compl%':>7} {'events/s':>9} "
               f"{'p50ms':>8} {'p99ms':>8} {'maxms':>8} {'srvCPU%':>7} {'cliCPU%':>7} {'srvRSSmax':>9} "
               f"{'idle_ms':>7} {'steal%':>6}")
        saturated = False
        peak_evs = 0.0  # the best delivered events/s of the steps so far (for hNN)
        fanout = ok / len(names)  # deliveries per publish
        for si, (kind, val) in enumerate(steps):
            if time.time() > deadline:
                print("deadline reached; stopping")
                break
            if saturated and kind == "r":
                print(f"  .. step {kind}{val} skipped (server already saturated)", flush=True)
                continue
            # quiescence probe: the server must have drained everything before we measure
            pc.send(("probe", a.probes, 60))
            pr = pc.recv()
            probe_ok, probe_s, probe_lats = pr[1], pr[2], sorted(pr[3])
            if not probe_ok:
                print(f"step {kind}{val}: server did not deliver a probe event within 60s; stopping", flush=True)
                break
            c0, _ = server_sample()
            cc0 = child_cpu()
            m0 = cpu_times()
            w0 = time.time()
            extra_h: dict[str, Any] = {}
            if kind == "h":  # open loop at val% of the saturation seen so far
                if not peak_evs:
                    print(f"  .. step h{val} skipped (no earlier step to take the saturation from)", flush=True)
                    continue
                rate = max(1, round(peak_evs * val / 100 / max(fanout, 1)))
                extra_h = dict(of_peak_events_per_s=peak_evs, rate=rate)
                print(f"  .. step h{val}: {val}% of {peak_evs:,.0f} events/s = {rate} publishes/s", flush=True)
                pc.send(("step", si, "r", rate, a.duration))
            else:
                pc.send(("step", si, kind, val, a.duration))
            rss_max = 0
            # sample RSS while publishing
            while not pc.poll(0.2):
                rss_max = max(rss_max, server_sample()[1])
            r = pc.recv()
            if r[0] != "done":
                raise SystemExit("publisher error: %r" % (r,))
            _, sent, pt0, pt1, blocked, perr, seq_first, seq_last, extra = r
            tpub_end = time.time()
            # every event seq goes to topic seq % K, which has per_topic[seq % K] subscribers
            expected = sum(per_topic[q % len(names)] for q in range(seq_first, seq_last + 1)) \
                if kind != "c" else sent * ok  # churn: one topic per publish, seqs of failed cycles unused
            if kind == "c" and len(names) > 1:
                expected = round(sent * ok / len(names))
            # drain: until all expected arrived, or counts stop moving for 2s while the server is
            # idle too (an overloaded server may spend seconds in one read, fanning out hundreds of
            # buffered publishes before its first write reaches a socket)
            prev, still_since = -1, time.time()
            cpu_prev = server_sample()[0]
            tdrain_end = time.time() + a.drain_timeout
            tot = 0
            while time.time() < tdrain_end:
                tot = 0
                for _, c in workers:
                    c.send(("stats",))
                for _, c in workers:
                    m = c.recv()
                    tot += m[1][si]
                rss_max = max(rss_max, server_sample()[1])
                if tot >= expected:
                    break
                cpu_now = server_sample()[0]
                if tot != prev or cpu_now - cpu_prev > 0.05:
                    prev, still_since, cpu_prev = tot, time.time(), cpu_now
                elif time.time() - still_since > 2.0:
                    break
                time.sleep(0.05)
            drain_s = time.time() - tpub_end
            if kind != "c" and tot:
                # a first estimate (the report recomputes it from the arrival times)
                took = max((pt1 - pt0) / 1e9, time.monotonic() - pt0 / 1e9 - 0.05)
                peak_evs = max(peak_evs, tot / took)
            if a.stop_when_saturated and kind == "r" and drain_s > a.saturated_lag:
                saturated = True
            c1, _ = server_sample()
            cc1 = child_cpu()
            m1 = cpu_times()
            w1 = time.time()
            dt_j = max(1, m1[0] - m0[0])
            out["steps"].append(dict(kind=kind, val=val, sent=sent, pub_t0=pt0, pub_t1=pt1, blocked=blocked,
                                     probe_s=probe_s, idle_lat_ms=quantile(probe_lats, 0.5) / 1e6,
                                     machine_idle_pct=100 * (m1[1] - m0[1]) / dt_j,
                                     steal_pct=100 * (m1[2] - m0[2]) / dt_j, drain_s=drain_s,
                                     pub_errors=perr, expected=expected, server_cpu_s=c1 - c0,
                                     client_cpu_s=cc1 - cc0, wall_s=w1 - w0, server_rss_max_mb=rss_max / 2**20,
                                     step_index=si, **extra, **extra_h))
            st = out["steps"][-1]
            print(f"  .. step {kind}{val} done: sent {sent}, drained {tot}/{expected} {drain_s:.1f}s after, "
                  f"probe idle latency p50 {st['idle_lat_ms']:.2f} ms (quiescent after {probe_s:.2f}s)"
                  + (f", {sent / ((pt1 - pt0) / 1e9):.0f} conn/s, {extra.get('conn_errors', 0)} failed"
                     if kind == "c" else ""), flush=True)
            time.sleep(0.2)

        # collect
        nst = len(steps)
        agg_count = [0] * nst
        agg_first: list = [None] * nst
        agg_last = [0] * nst
        lats = [array("q") for _ in range(nst)]
        other = 0
        for _, c in workers:
            c.send(("report",))
        for _, c in workers:
            m = c.recv()
            for i in range(nst):
                agg_count[i] += m[1][i]
                if m[2][i]:
                    agg_first[i] = m[2][i] if agg_first[i] is None else min(agg_first[i], m[2][i])
                agg_last[i] = max(agg_last[i], m[3][i])
                a_ = array("q")
                a_.frombytes(m[4][i])
                lats[i].extend(a_)
            other += m[5]
        print(hdr, flush=True)
        for st in out["steps"]:
            i = st["step_index"]
            kind, val = st["kind"], st["val"]
            ls = sorted(lats[i])
            deliv = agg_count[i]
            span = (agg_last[i] - st["pub_t0"]) / 1e9 if agg_last[i] else float("nan")
            evs = deliv / span if span and span == span and span > 0 else 0
            pubrate = st["sent"] / ((st["pub_t1"] - st["pub_t0"]) / 1e9)
            st.update(delivered=deliv, completeness=deliv / st["expected"] if st["expected"] else 0,
                      lost=max(0, st["expected"] - deliv), duplicated=max(0, deliv - st["expected"]),
                      events_per_s=evs, pub_per_s=pubrate, lat_samples=len(ls),
                      p50_ms=quantile(ls, 0.5) / 1e6, p90_ms=quantile(ls, 0.9) / 1e6, p99_ms=quantile(ls, 0.99) / 1e6,
                      max_ms=(ls[-1] / 1e6 if ls else float("nan")),
                      server_cpu_pct=100 * st["server_cpu_s"] / st["wall_s"],
                      client_cpu_pct=100 * st["client_cpu_s"] / st["wall_s"])
            print(f"{kind + str(val):>6} {st['sent']:>7} {pubrate:>8.0f} {deliv:>9} {100 * st['completeness']:>7.2f} "
                  f"{evs:>9.0f} {st['p50_ms']:>8.2f} {st['p99_ms']:>8.2f} {st['max_ms']:>8.1f} "
                  f"{st['server_cpu_pct']:>7.0f} {st['client_cpu_pct']:>7.0f} {st['server_rss_max_mb']:>9.1f} "
                  f"{st['idle_lat_ms']:>7.2f} {st['steal_pct']:>6.1f}"
                  + (f"  (publisher back-pressured {st['blocked']}x)" if st["blocked"] else "")
                  + (f"  (pub errors {st['pub_errors']})" if st["pub_errors"] else ""), flush=True)
        out["unparsed_frames"] = other
        _, rss2 = server_sample()
        out["server_rss_end_mb"] = rss2 / 2**20
        print(f"server RSS at end {rss2 / 2**20:.1f} MB; unparsed frames {other}", flush=True)
    finally:
        for _, c in workers:
            try:
                c.send(("quit",))
            except Exception:
                pass
        if pc is not None:
            try:
                pc.send(("quit",))
            except Exception:
                pass
        for p in allchild:
            p.join(5)
            if p.is_alive():
                p.kill()
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
