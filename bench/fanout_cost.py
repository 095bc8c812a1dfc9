#!/usr/bin/env python3
"""What counting costs the fan-out path: the core's delivery, in-process, two trees compared.

``make bench`` measures fan-out over real sockets, where a shared 2-core
machine's noise (tens of percent between runs) hides a cost of a few
percent.  This measures only the Python the server runs per publication
(Topic.deliver through LocalBroker, the outbox's per-peer queues and their
flush, i.e. every place the metrics touch), with writers that discard the
bytes, so the figure is CPU time of exactly the code that changed.

Each tree given is run in its own interpreter (``PYTHONPATH=TREE``), the
trees alternating, ``--rounds`` times; the best round of each counts (the
least disturbed by other jobs).  Example, this tree against a checkout of
the commit before the operations work::

    git archive 7557b93 | tar -x -C /tmp/base
    .venv/bin/python bench/fanout_cost.py . /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
from oro_sync.core.hub import Hub
from oro_sync.core.metrics import Metrics
from oro_sync.core.publish import Publication
from oro_sync.wamp1.session import encode_event

class Clock:
    def callLater(self, delay, fn, *a):
        return None

    def seconds(self):
        return time.monotonic()

class Sink:
    def write(self, data):
        pass

class Session:
    encoder = staticmethod(encode_event)
    def __init__(self, i, send):
        self.session_id = "s%05d" % i
        self.subscriptions = set()
        self.send_frame = send

receivers, turns, per_turn = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hub = Hub(clock=Clock(), metrics=Metrics())
queues = [hub.outbox.queue_for(Sink()) for _ in range(receivers)]
for i, q in enumerate(queues):
    hub.topics.subscribe(Session(i, q.send), "bench/topic")
event = [1234567890123, 1, "w", "x" * 40]
publish = hub.broker.publish
best = None
for attempt in range(5):
    t0 = time.perf_counter()
    for _ in range(turns):
        for _ in range(per_turn):
            publish(Publication.of("bench/topic", event))
        hub.outbox.flush()
    elapsed = time.perf_counter() - t0
    best = elapsed if best is None else min(best, elapsed)
print(json.dumps({"us_per_publication": best / (turns * per_turn) * 1e6}))
"""


def run(tree: str, receivers: int, turns: int, per_turn: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, str(receivers), str(turns), str(per_turn)],
                         env=env, capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout)["us_per_publication"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="source trees to compare (the first is the reference)")
    ap.add_argument("--receivers", type=int, default=1000)
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--per-turn", type=int, default=1, help="publications per reactor turn")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    results: dict[str, list[float]] = {t: [] for t in a.trees}
    for _ in range(a.rounds):
        for tree in a.trees:
            results[tree].append(run(tree, a.receivers, a.turns, a.per_turn))
    ref = min(results[a.trees[0]])
    print(f"fan-out to {a.receivers} receivers, {a.per_turn} publication(s) per turn, "
          f"best of {a.rounds} rounds (each the best of 5 x {a.turns} turns)")
    for tree in a.trees:
        best = min(results[tree])
        spread = max(results[tree]) / best - 1
        print(f"  {tree}: {best:8.1f} us/publication  ({best / ref:6.1%} of the first tree; "
              f"rounds spread {spread:.0%})")


if __name__ == "__main__":
    main()
