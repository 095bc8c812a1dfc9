"""HandshakeSlices: handshake starts in bounded slices per reactor turn
(the reconnect-storm fix, bench/ticket_storm.py), and digest batching."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from oro_sync.auth.digest_pool import compute_digests
from oro_sync.auth.ticket_signing import compute_digest
from oro_sync.websocket.handshake_slices import HandshakeSlices


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TurnReactor(task.Clock):
    """A task.Clock whose ``advance(0)`` is one reactor turn: calls scheduled
    during the turn wait for the next one, as in a real reactor (Clock would
    run them in the same advance)."""

    def advance(self, amount: float) -> None:
        due = [c for c in self.getDelayedCalls() if c.getTime() <= self.seconds() + amount]
        self.rightNow += amount
        for call in due:
            if call.active():
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class HandshakeSlicesTests(unittest.TestCase):

    def setUp(self) -> None:
        self.clock = TurnReactor()
        self.timer = FakeTimer()
        self.slices = HandshakeSlices(self.clock, slice_seconds=0.002, timer=self.timer)
        self.ran: list[int] = []

    def start(self, i: int, cost: float = 0.0):
        def run() -> None:
            self.ran.append(i)
            self.timer.now += cost
        return run

    def test_light_load_starts_at_once(self):
        for i in range(3):
            self.slices.submit(self.start(i, cost=0.0005))
        self.assertEqual(self.ran, [0, 1, 2])
        self.assertEqual(self.slices.deferred_starts, 0)
        self.clock.advance(0)  # the turn ends; nothing waits
        self.assertEqual(len(self.slices), 0)

    def test_a_burst_waits_for_later_turns_in_order(self):
        for i in range(10):
            self.slices.submit(self.start(i, cost=0.001))
        # The slice (2 ms) had room for two 1 ms starts; the rest wait, in order.
        self.assertEqual(self.ran, [0, 1])
        self.assertEqual(len(self.slices), 8)
        self.clock.advance(0)
        self.assertEqual(self.ran, [0, 1, 2, 3])
        for _ in range(10):
            self.clock.advance(0)
        self.assertEqual(self.ran, list(range(10)))
        self.assertEqual(self.slices.deferred_starts, 8)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_newcomer_never_overtakes_those_waiting(self):
        self.slices.submit(self.start(0, cost=0.003))
        self.slices.submit(self.start(1))
        self.assertEqual(self.ran, [0])
        self.clock.advance(0)
        self.slices.submit(self.start(2))
        self.assertEqual(self.ran, [0, 1, 2])

    def test_a_failing_start_does_not_stall_the_rest(self):
        def boom() -> None:
            self.timer.now += 0.003
            raise RuntimeError("boom")
        self.slices.submit(boom)
        self.slices.submit(self.start(1))
        self.clock.advance(0)
        self.assertEqual(self.ran, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_without_a_reactor_everything_starts_at_once(self):
        slices = HandshakeSlices(None, timer=self.timer)
        for i in range(5):
            slices.submit(self.start(i, cost=1.0))
        self.assertEqual(self.ran, list(range(5)))

    def test_stop_forgets_waiting_starts(self):
        self.slices.submit(self.start(0, cost=0.003))
        self.slices.submit(self.start(1))
        self.slices.stop()
        self.clock.advance(0)
        self.assertEqual(self.ran, [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DigestBatchTests(unittest.TestCase):

    def test_compute_digests_matches_compute_digest(self):
        requests = [(f"n{i}", "2026-01-01T00:00:00+00:00", "pw", "secret") for i in range(3)]
        self.assertEqual(compute_digests(requests), [compute_digest(*r) for r in requests])

    @defer.inlineCallbacks
    def test_one_turn_of_requests_is_one_batch_per_worker(self):
        from tests.test_tickets import shared_process_pool

        pool = shared_process_pool()
        yield pool.start()
        submits: list[int] = []
        real = pool._submit

        def counting(executor, fn, *args):
            submits.append(len(args[0]))
            return real(executor, fn, *args)

        pool._submit = counting
        self.addCleanup(delattr, pool, "_submit")
        requests = [(f"{i:016x}", "2026-01-01T00:00:00+00:00", "pw", "s") for i in range(6)]
        digests = yield defer.gatherResults([pool.compute(*r) for r in requests])
        self.assertEqual(digests, [compute_digest(*r) for r in requests])
        self.assertEqual(submits, [3, 3])  # two workers, one task each

    @defer.inlineCallbacks
    def test_a_cancelled_request_leaves_the_batch(self):
        from tests.test_tickets import shared_process_pool

        pool = shared_process_pool()
        yield pool.start()
        first = pool.compute("a", "c", "p", "s")
        second = pool.compute("b", "c", "p", "s")
        first.cancel()
        yield self.assertFailure(first, defer.CancelledError)
        digest = yield second
        self.assertEqual(digest, compute_digest("b", "c", "p", "s"))
