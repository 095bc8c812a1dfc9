"""The load generator's C event loop counts exactly what its Python loop counts.

Benchmark figures (events delivered, lost, latency) rest on bench/fastscan.c
once it is built; this compares both loops on the same byte stream: events
of several steps, frames of every length encoding, pings, a message that is
not an event, and frames split across reads at every byte.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Any

from twisted.trial import unittest

from oro_sync.core.frames import frame

HERE = os.path.dirname(os.path.abspath(__file__))
#: The load generator's clients (bench/wampbench.py is the coordinator that runs them).
BENCH = os.path.join(os.path.dirname(HERE), "bench", "wampbench_clients.py")


def load_wampbench() -> Any:
    spec = importlib.util.spec_from_file_location("wampbench_clients_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Done:
    def done(self) -> bool:
        return True


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def stream() -> bytes:
    out = []
    for seq in range(300):
        step = seq % 3
        pad = "p" * (seq * 7 % 400)  # 7-bit, 16-bit lengths
        out.append(frame(b'[8,"t",[%d,%d,%d,"%s"]]' % (1_000 + seq, seq, step, pad.encode())))
        if seq % 50 == 0:
            out.append(frame(b"ping!", 0x9))
        if seq % 70 == 0:
            out.append(frame(b'[3,"b",null]'))  # not an event: "other"
    out.append(frame(b'[8,"t",[5,1,2,"' + b"x" * 70_000 + b'"]]'))  # 64-bit length
    out.append(frame(b'[8,"t",[6, 2, 1, "spaced"]]'))
    return b"".join(out)


class FastScanTests(unittest.TestCase):
    def setUp(self) -> None:
        if shutil.which(os.environ.get("CC", "cc")) is None and not os.environ.get("CI"):
            raise unittest.SkipTest("no C compiler")
        self.wb = load_wampbench()
        self.wb.mono = lambda: 10**12  # every read at the same instant: latencies compare
        self.assertIsNotNone(self.wb.build_fastscan(), "bench/fastscan.c did not build")

    def run_loop(self, data: bytes, use_c: bool, chunk: int, proto: str = "wamp1") -> tuple:
        wb = self.wb
        stats = wb.SubStats(4)
        sub = wb.Subscriber("h", 1, "/", _Done(), proto, "", ["t"], stats, True)
        sub.transport = _Transport()
        sub.open = True
        sub.ready()
        if not use_c:
            sub.scan = None
        else:
            self.assertIsNotNone(sub.scan)
        for i in range(0, len(data), chunk):
            sub.data_received(data[i:i + chunk])
        lat = [list(a) for a in stats.lat]
        return (list(stats.count), stats.other, lat, list(stats.first), list(stats.last),
                len(sub.transport.written), sub.buf)

    def test_same_counts_as_python(self) -> None:
        data = stream()
        for chunk in (len(data), 4096, 7, 1):
            expected = self.run_loop(data, False, chunk)
            got = self.run_loop(data, True, chunk)
            self.assertEqual(got[0], expected[0], f"counts, chunk {chunk}")
            self.assertEqual(got[1:], expected[1:], f"chunk {chunk}")
        self.assertEqual(expected[0], [100, 101, 101, 0])
        self.assertEqual(expected[1], 5)  # the five CALLRESULTs
        self.assertEqual(expected[5], 6)  # six pongs written
        self.assertEqual(sum(map(len, expected[2])), 302)  # a latency per event

    def test_msgpack_events_same_counts_as_python(self) -> None:
        # wamp.2.msgpack subscribers: the server's own MessagePack EVENT frames.
        from oro_sync.wamp2 import messages as m
        from oro_sync.wamp2.serializers import MSGPACK

        out = []
        for seq in range(200):
            ts = -5 if seq == 7 else 2**40 + seq  # negative fixint, uint64
            out.append(MSGPACK.frame(m.event(2**52 + seq, 9 + seq * 1000, [ts, seq * 301, seq % 3, "p" * seq], None)))
            if seq % 60 == 0:
                out.append(MSGPACK.frame(m.published(1, 2)))  # not an event: "other"
        data = b"".join(out)
        for chunk in (len(data), 333, 1):
            expected = self.run_loop(data, False, chunk, "wampmsgpack")
            got = self.run_loop(data, True, chunk, "wampmsgpack")
            self.assertEqual(got, expected, f"chunk {chunk}")
        self.assertEqual(expected[0], [67, 67, 66, 0])
        self.assertEqual(expected[1], 4)

    def test_masked_server_frame_fails_the_connection(self) -> None:
        wb = self.wb
        stats = wb.SubStats(2)
        sub = wb.Subscriber("h", 1, "/", _Done(), "wamp1", "", ["t"], stats, False)
        sub.transport = _Transport()
        sub.open = True
        sub.ready()
        failed = []
        sub.fail = failed.append
        sub.data_received(b"\x81\x85abcd12345")
        self.assertEqual(failed, ["masked server frame"])
