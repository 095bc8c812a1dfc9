"""ExpiringMap: the bounded, expiring map behind the user cache, the ticket
outcome cache and the nonce store.  Time comes from task.Clock or now=;
nothing sleeps."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial import unittest

from oro_sync.auth.expiring import ExpiringMap

T0 = 1_800_000_000.0


class ExpiringMapTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)

    def test_entry_lives_until_its_expiry(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(10, self.clock)
        m.put("a", 1, T0 + 10)
        self.clock.advance(9.9)
        self.assertEqual(m.get("a"), 1)
        self.assertIn("a", m)
        self.clock.advance(0.1)  # expiry is exclusive
        self.assertNotIn("a", m)
        self.assertIsNone(m.get("a"))
        self.assertEqual(len(m), 0)

    def test_default_tells_a_cached_none_from_a_miss(self) -> None:
        missing = object()
        m: ExpiringMap[str, None] = ExpiringMap(10, self.clock)
        m.put("miss", None, T0 + 5)
        self.assertIsNone(m.get("miss", default=missing))
        self.assertIs(m.get("other", default=missing), missing)

    def test_lru_bound(self) -> None:
        """(Was OutcomeCacheTests.test_expiry_and_bound.)"""
        cache: ExpiringMap[str, int] = ExpiringMap(2)
        cache.put("a", 1, expires_at=T0 + 10, now=T0)
        cache.put("b", 2, expires_at=T0 + 20, now=T0)
        self.assertEqual(cache.get("a", now=T0 + 1), 1)  # "a" now most recent
        cache.put("c", 3, expires_at=T0 + 30, now=T0 + 2)  # evicts "b"
        self.assertIsNone(cache.get("b", now=T0 + 2))
        self.assertEqual(cache.get("c", now=T0 + 2), 3)
        self.assertIsNone(cache.get("a", now=T0 + 10))  # expired
        self.assertEqual(len(cache), 1)
        cache.put("d", 4, expires_at=T0, now=T0 + 1)  # already expired: not stored
        self.assertIsNone(cache.get("d", now=T0 + 1))

    def test_heap_stays_bounded(self) -> None:
        """(Was OutcomeCacheTests.test_heap_stays_bounded.)  LRU evictions
        leave dead heap items; they must not accumulate."""
        cache: ExpiringMap[str, int] = ExpiringMap(4)
        for i in range(1000):
            cache.put(str(i), i, expires_at=T0 + 300, now=T0)
        self.assertEqual(len(cache), 4)
        self.assertLessEqual(len(cache._heap), 2 * 4 + 64 + 1)

    def test_replaced_and_popped_entries_leave_no_trace(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(10, self.clock)
        for i in range(500):
            m.put("k", i, T0 + 1 + i % 7)
            m.put(f"p{i}", i, T0 + 50)
            m.pop(f"p{i}")
        self.assertEqual((len(m), m.get("k")), (1, 499))
        # At most two entries were live at any put: the rebuild bound.
        self.assertLessEqual(len(m._heap), 2 * 2 + 64 + 1)

    def test_replacing_with_a_later_expiry_is_not_undone_by_the_old_one(self) -> None:
        m: ExpiringMap[str, str] = ExpiringMap(10, self.clock)
        m.put("k", "old", T0 + 5)
        m.put("k", "new", T0 + 50)
        self.clock.advance(10)
        self.assertEqual(m.prune(), 0)
        self.assertEqual(m.get("k"), "new")

    def test_prune_counts_and_runs_on_writes(self) -> None:
        m: ExpiringMap[int, int] = ExpiringMap(1000, self.clock)
        for i in range(100):
            m.put(i, i, T0 + 1 + i)
        self.clock.advance(50.5)
        self.assertEqual(m.prune(), 50)
        self.assertEqual(len(m), 50)
        self.clock.advance(1000)
        m.put(-1, -1, self.clock.seconds() + 1)  # a write prunes too
        self.assertEqual(len(m), 1)
        self.assertEqual(len(m._heap), 1)

    def test_put_reports_live_evictions(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(2, self.clock)
        self.assertEqual(m.put("a", 1, T0 + 1), 0)
        self.assertEqual(m.put("b", 2, T0 + 100), 0)
        self.assertEqual(m.put("c", 3, T0 + 100), 1)  # full: "a" goes (LRU)
        self.clock.advance(100)
        # Expired entries are pruned, not evicted: nothing to report.
        self.assertEqual(m.put("d", 4, T0 + 200), 0)
        self.assertEqual(m.put("b", 5, T0 + 200), 0)  # replacing makes room itself

    def test_evict_soonest_expiring(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(3, self.clock, evict="soonest")
        m.put("late", 1, T0 + 300)
        m.put("early", 2, T0 + 10)
        m.put("middle", 3, T0 + 100)
        m.get("early")  # use does not protect it under this policy
        self.assertEqual(m.put("new", 4, T0 + 200), 1)
        self.assertEqual({k for k in ("late", "early", "middle", "new") if k in m},
                         {"late", "middle", "new"})
        # A dead heap item (replaced entry) is skipped, not mistaken for live.
        m.put("late", 5, T0 + 400)
        self.assertEqual(m.put("newer", 6, T0 + 500), 1)
        self.assertNotIn("middle", m)
        self.assertEqual(m.get("late"), 5)

    def test_zero_size_stores_nothing(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(0, self.clock)
        self.assertEqual(m.put("a", 1, T0 + 10), 0)
        self.assertEqual((len(m), m.get("a")), (0, None))

    def test_pop_and_clear(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(10, self.clock)
        m.put("a", 1, T0 + 10)
        m.put("b", 2, T0 + 10)
        self.assertEqual(m.pop("a"), 1)
        self.assertEqual(m.pop("a", "gone"), "gone")
        m.clear()
        self.assertEqual((len(m), m._heap), (0, []))

    def test_without_a_clock_time_must_be_given(self) -> None:
        m: ExpiringMap[str, int] = ExpiringMap(10)
        self.assertRaises(TypeError, m.get, "a")
        self.assertRaises(TypeError, m.put, "a", 1, T0)
        m.put("a", 1, T0 + 1, now=T0)
        self.assertIn("a", m)  # no clock: held until pruned
        self.assertEqual(m.prune(T0 + 1), 1)
        self.assertNotIn("a", m)

    def test_validation(self) -> None:
        self.assertRaises(ValueError, ExpiringMap, -1)
        self.assertRaises(ValueError, ExpiringMap, 1, evict="fifo")
