"""The protocol-independent core: topics, the registry, the local broker,
the two PUBLISH profiles and frame building.

Fake sessions stand in for connections (a session is just an id, an
encoder, a subscription set and ``send_frame``), so delivery rules are
checked exactly: who receives, how often an event is encoded, and that
receivers share one bytes object (the fan-out's whole point).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from oro_sync.core import frames
from oro_sync.core.broker import BrokerBase, IBroker, LocalBroker
from oro_sync.core.hub import Hub
from oro_sync.core.profiles import (
    EVERYONE,
    autobahn_receivers,
    ratchet_eligible,
    ratchet_exclude,
    ratchet_receivers,
)
from oro_sync.core.topic import SubscriptionLimitExceeded, Topic, TopicRegistry


class CountingEncoder:
    """An EventEncoder that records each call, to prove one encode per group."""

    def __init__(self, tag: str = "v1"):
        self.tag = tag
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, topic: Any, event: Any, publication_id: int = 0) -> bytes:
        self.calls.append((topic.uri, event))
        # A fresh bytes object per call, so `is` checks are meaningful.
        return frames.text_frame(json.dumps([self.tag, topic.uri, event]))


class FakeSession:
    """The smallest thing the core accepts as a session."""

    def __init__(self, session_id: str, encoder: Any):
        self.session_id = session_id
        self.encoder = encoder
        self.subscriptions: set[str] = set()
        self.received: list[bytes] = []

    def send_frame(self, data: bytes) -> None:
        self.received.append(data)

    def __repr__(self) -> str:
        return f"<FakeSession {self.session_id}>"


class TopicTestsBase(unittest.TestCase):
    def setUp(self) -> None:
        self.enc = CountingEncoder()
        self.registry = TopicRegistry()
        self.broker = LocalBroker(self.registry)
        self.registry.broker = self.broker
        self.created: list[Topic] = []
        self.removed: list[Topic] = []
        self.registry.on_created.append(self.created.append)
        self.registry.on_removed.append(self.removed.append)

    def sessions(self, *ids: str, encoder: Any = None) -> list[FakeSession]:
        return [FakeSession(i, encoder or self.enc) for i in ids]

    def receivers(self, *sessions: FakeSession) -> list[str]:
        """Ids of the sessions that got at least one frame, then reset them."""
        got = [s.session_id for s in sessions if s.received]
        for s in sessions:
            s.received.clear()
        return got


class RegistryTests(TopicTestsBase):
    """Subscriptions come and go; topics live exactly while subscribed."""

    def test_subscribe_creates_topic_once(self) -> None:
        a, b = self.sessions("a", "b")
        t1 = self.registry.subscribe(a, "t")
        t2 = self.registry.subscribe(b, "t")
        self.assertIsInstance(t1, Topic)
        self.assertIs(t1, t2)
        self.assertIs(self.registry.get("t"), t1)
        self.assertEqual(self.created, [t1])
        self.assertEqual(set(t1.subscribers), {"a", "b"})
        self.assertEqual(a.subscriptions, {"t"})
        self.assertEqual(len(t1), 2)
        self.assertIn(a, t1)
        self.assertIn("b", t1)
        self.assertEqual(set(t1), {a, b})
        self.assertIn("'t'", repr(t1))

    def test_subscribe_is_idempotent(self) -> None:
        (a,) = self.sessions("a")
        topic = self.registry.subscribe(a, "t")
        self.assertIsNone(self.registry.subscribe(a, "t"))
        self.assertEqual(len(topic), 1)
        self.assertEqual(self.created, [topic])
        topic.deliver("e")
        self.assertEqual(len(a.received), 1, "a double subscription must not double delivery")

    def test_topic_add_remove_report_change(self) -> None:
        (a,) = self.sessions("a")
        topic = Topic("t")
        self.assertTrue(topic.add(a))
        self.assertFalse(topic.add(a))
        self.assertTrue(topic.remove(a))
        self.assertFalse(topic.remove(a))
        self.assertEqual(topic._groups, {}, "an empty encoder group must be dropped")

    def test_unsubscribe_not_subscribed_is_ignored(self) -> None:
        a, b = self.sessions("a", "b")
        self.assertIsNone(self.registry.unsubscribe(a, "nowhere"))
        topic = self.registry.subscribe(a, "t")
        self.assertIsNone(self.registry.unsubscribe(b, "t"))
        self.assertEqual(set(topic.subscribers), {"a"})
        self.assertEqual(self.removed, [])

    def test_last_unsubscribe_drops_topic(self) -> None:
        a, b = self.sessions("a", "b")
        topic = self.registry.subscribe(a, "t")
        self.registry.subscribe(b, "t")
        self.assertIs(self.registry.unsubscribe(a, "t"), topic)
        self.assertIs(self.registry.get("t"), topic)
        self.assertEqual(self.removed, [])
        self.assertIs(self.registry.unsubscribe(b, "t"), topic)
        self.assertIsNone(self.registry.get("t"))
        self.assertNotIn("t", self.registry.topics)
        self.assertEqual(self.removed, [topic])
        self.assertEqual(a.subscriptions, set())

    def test_resubscribe_after_drop_creates_new_topic(self) -> None:
        (a,) = self.sessions("a")
        first = self.registry.subscribe(a, "t")
        self.registry.unsubscribe(a, "t")
        second = self.registry.subscribe(a, "t")
        self.assertIsNot(first, second)
        self.assertEqual(self.created, [first, second])
        self.assertEqual(self.removed, [first])

    def test_leave_all(self) -> None:
        a, b = self.sessions("a", "b")
        for uri in ("t1", "t2", "t3"):
            self.registry.subscribe(a, uri)
        self.registry.subscribe(b, "t2")
        left = self.registry.leave_all(a)
        self.assertEqual(sorted(t.uri for t in left), ["t1", "t2", "t3"])
        self.assertEqual(a.subscriptions, set())
        self.assertEqual(set(self.registry.topics), {"t2"})
        self.assertEqual(sorted(t.uri for t in self.removed), ["t1", "t3"])
        self.assertEqual(set(self.registry.get("t2").subscribers), {"b"})
        self.assertEqual(self.registry.leave_all(a), [])

    def test_max_subscriptions(self) -> None:
        registry = TopicRegistry(max_subscriptions=2)
        (a,) = self.sessions("a")
        registry.subscribe(a, "t1")
        registry.subscribe(a, "t2")
        # Re-subscribing to a held topic is a no-op, not a new subscription.
        self.assertIsNone(registry.subscribe(a, "t2"))
        with self.assertRaises(SubscriptionLimitExceeded) as cm:
            registry.subscribe(a, "t3")
        self.assertEqual(cm.exception.limit, 2)
        self.assertIn("2", str(cm.exception))
        self.assertNotIn("t3", registry.topics, "a refused subscription must not create a topic")
        self.assertEqual(a.subscriptions, {"t1", "t2"})
        registry.unsubscribe(a, "t1")
        self.assertIsNotNone(registry.subscribe(a, "t3"))

    def test_zero_means_unlimited(self) -> None:
        (a,) = self.sessions("a")
        for i in range(500):
            self.registry.subscribe(a, f"t{i}")
        self.assertEqual(len(a.subscriptions), 500)


class DeliverTests(TopicTestsBase):
    """Receivers from normalized sets: eligible None = everyone, empty = nobody."""

    def setUp(self) -> None:
        super().setUp()
        self.all = self.sessions("a", "b", "c")
        for s in self.all:
            self.topic = self.registry.subscribe(s, "t")

    def deliver(self, exclude: Any = frozenset(), eligible: Any = None) -> list[str]:
        count = self.topic.deliver("e", exclude, eligible)
        got = self.receivers(*self.all)
        self.assertEqual(count, len(got))
        return got

    def test_everyone(self) -> None:
        self.assertEqual(self.deliver(), ["a", "b", "c"])

    def test_exclude(self) -> None:
        self.assertEqual(self.deliver(exclude={"b"}), ["a", "c"])
        self.assertEqual(self.deliver(exclude={"a", "b", "c"}), [])

    def test_eligible(self) -> None:
        self.assertEqual(self.deliver(eligible={"a", "c"}), ["a", "c"])

    def test_empty_eligible_is_nobody(self) -> None:
        self.assertEqual(self.deliver(eligible=frozenset()), [])

    def test_exclude_beats_eligible(self) -> None:
        self.assertEqual(self.deliver(exclude={"a"}, eligible={"a", "b"}), ["b"])

    def test_unknown_ids_ignored(self) -> None:
        self.assertEqual(self.deliver(exclude={"zz"}, eligible={"zz", "c"}), ["c"])

    def test_each_receiver_gets_exactly_one_frame(self) -> None:
        self.topic.deliver("e", frozenset(), {"a", "b", "c"})
        self.assertEqual([len(s.received) for s in self.all], [1, 1, 1])

    def test_one_encode_and_same_bytes_for_all(self) -> None:
        self.topic.deliver({"big": "x" * 1000})
        self.assertEqual(len(self.enc.calls), 1)
        first = self.all[0].received[0]
        for s in self.all[1:]:
            self.assertIs(s.received[0], first)

    def test_one_encode_per_encoder_group(self) -> None:
        other = CountingEncoder("v2")
        d, e = self.sessions("d", "e", encoder=other)
        self.registry.subscribe(d, "t")
        self.registry.subscribe(e, "t")
        self.assertEqual(self.topic.deliver("ev"), 5)
        self.assertEqual(len(self.enc.calls), 1)
        self.assertEqual(len(other.calls), 1)
        v1 = self.all[0].received[0]
        v2 = d.received[0]
        self.assertIsNot(v1, v2)
        self.assertTrue(all(s.received[0] is v1 for s in self.all))
        self.assertIs(e.received[0], v2)
        self.assertIn(b'"v1"', v1)
        self.assertIn(b'"v2"', v2)

    def test_same_bytes_with_exclude_and_eligible(self) -> None:
        self.topic.deliver("e", {"a"}, None)
        self.assertIs(self.all[1].received[0], self.all[2].received[0])
        self.receivers(*self.all)
        self.topic.deliver("e", frozenset(), {"a", "c"})
        self.assertIs(self.all[0].received[0], self.all[2].received[0])

    def leaver(self) -> FakeSession:
        """A subscriber whose send unsubscribes it (a connection found
        closed while writing), subscribed to ``t`` before the others' turn."""
        registry = self.registry

        class Leaver(FakeSession):
            def send_frame(self, data: bytes) -> None:
                super().send_frame(data)
                registry.unsubscribe(self, "t")

        leaver = Leaver("0-leaver", self.enc)
        registry.subscribe(leaver, "t")
        return leaver

    def test_receiver_leaving_during_delivery(self) -> None:
        # Leaving must not break the loop over the group it is leaving.
        leaver = self.leaver()
        self.topic.deliver("e")
        self.assertEqual([len(s.received) for s in [leaver, *self.all]], [1, 1, 1, 1])
        self.assertNotIn(leaver, self.topic)

    def test_count_when_receiver_leaves_during_delivery(self) -> None:
        # The return value is "how many got it": four frames were written.
        self.leaver()
        self.assertEqual(self.topic.deliver("e"), 4)



class BroadcastTests(TopicTestsBase):
    """Topic.broadcast: the Ratchet/Oro semantics Oro's handlers call."""

    def setUp(self) -> None:
        super().setUp()
        self.all = self.sessions("a", "b", "c")
        for s in self.all:
            self.topic = self.registry.subscribe(s, "t")

    def broadcast(self, *args: Any) -> list[str]:
        self.topic.broadcast("e", *args)
        return self.receivers(*self.all)

    def test_defaults_everyone(self) -> None:
        self.assertEqual(self.broadcast(), ["a", "b", "c"])

    def test_empty_lists_everyone(self) -> None:
        # The Oro PHP backend's [7, uri, payload, [], []] must reach all.
        self.assertEqual(self.broadcast([], []), ["a", "b", "c"])

    def test_exclude(self) -> None:
        self.assertEqual(self.broadcast(["a"], []), ["b", "c"])

    def test_non_empty_eligible_restricts(self) -> None:
        self.assertEqual(self.broadcast([], ["b"]), ["b"])
        self.assertEqual(self.broadcast(["b"], ["b", "c"]), ["c"])

    def test_goes_through_broker(self) -> None:
        calls: list[tuple] = []

        class RecordingBroker(BrokerBase):
            def publish(self, publication: Any) -> int:
                calls.append((publication.topic, publication.event, publication.exclude,
                              publication.eligible))
                return 0

        topic = Topic("u", RecordingBroker())
        topic.broadcast("e", ["x"], [])
        topic.broadcast("f", (), ["y"])
        self.assertEqual(calls, [("u", "e", frozenset({"x"}), None),
                                 ("u", "f", frozenset(), frozenset({"y"}))])

    def test_without_broker_delivers_locally(self) -> None:
        (a,) = self.sessions("z")
        topic = Topic("u")
        topic.add(a)
        topic.broadcast("e", [], [])
        self.assertEqual(len(a.received), 1)


class BrokerAndHubTests(TopicTestsBase):
    def test_local_broker_provides_ibroker(self) -> None:
        self.assertTrue(verifyObject(IBroker, LocalBroker(TopicRegistry())))

    def test_publish_unknown_topic(self) -> None:
        self.assertEqual(self.broker.publish_event("none", "e"), 0)
        self.assertNotIn("none", self.registry.topics, "publishing must not create topics")

    def test_publish_counts(self) -> None:
        a, b = self.sessions("a", "b")
        self.registry.subscribe(a, "t")
        self.registry.subscribe(b, "t")
        self.assertEqual(self.broker.publish_event("t", "e"), 2)
        self.assertEqual(self.broker.publish_event("t", "e", frozenset({"a"})), 1)
        self.assertEqual(self.broker.publish_event("t", "e", frozenset(), frozenset()), 0)

    def test_hub_wires_registry_to_broker(self) -> None:
        hub = Hub(max_subscriptions=3)
        self.assertIsInstance(hub.broker, LocalBroker)
        self.assertIs(hub.topics.broker, hub.broker)
        self.assertEqual(hub.topics.max_subscriptions, 3)
        a, b = self.sessions("a", "b")
        hub.attach(a)
        hub.attach(b)
        topic = hub.topics.subscribe(a, "t")
        hub.topics.subscribe(b, "t")
        self.assertIs(topic.broker, hub.broker)
        self.assertEqual(hub.publish("t", "e", frozenset({"a"})), 1)
        self.assertEqual((len(a.received), len(b.received)), (0, 1))
        self.assertEqual(hub.detach(a), [topic])
        self.assertNotIn("a", hub.sessions)
        self.assertEqual(hub.detach(b), [topic])
        self.assertEqual(hub.topics.topics, {})
        self.assertEqual(hub.sessions, {})

    def test_hub_custom_broker(self) -> None:
        made: list = []

        def make_broker(registry: Any) -> LocalBroker:
            made.append(LocalBroker(registry))
            return made[0]

        hub = Hub(make_broker)
        broker = made[0]
        self.assertIs(broker.registry, hub.topics)
        self.assertIs(hub.broker, broker)
        self.assertIs(hub.topics.broker, broker)


class ProfileTests(unittest.TestCase):
    """The receiver tables of wamp-v1.md for both PUBLISH profiles."""

    P, O = "p0", "p1"  # publisher and the other subscriber

    def receivers(self, exclude: Any, eligible: Any) -> set[str]:
        """Apply normalized sets to subscribers {p0, p1}, as Topic.deliver does."""
        subs = {self.P, self.O}
        if eligible is not None:
            subs &= set(eligible)
        return subs - set(exclude)

    def autobahn(self, exclude_me: Any = None, exclude: Any = None, eligible: Any = None) -> set[str]:
        return self.receivers(*autobahn_receivers(self.P, exclude_me, exclude, eligible))

    def test_autobahn_reference_table(self) -> None:
        P, O = self.P, self.O
        self.assertEqual(self.autobahn(), {O})                                      # [7,t,e]
        self.assertEqual(self.autobahn(exclude_me=True), {O})                       # [7,t,e,true]
        self.assertEqual(self.autobahn(exclude_me=False), {P, O})                   # [7,t,e,false]
        self.assertEqual(self.autobahn(exclude=[]), {P, O})                         # [7,t,e,[]]
        self.assertEqual(self.autobahn(exclude=[O]), {P})                           # [7,t,e,[1]]
        self.assertEqual(self.autobahn(exclude=[], eligible=[P]), {P})              # [7,t,e,[],[0]]
        self.assertEqual(self.autobahn(exclude=[P], eligible=[P, O]), {O})          # [7,t,e,[0],[0,1]]
        self.assertEqual(self.autobahn(exclude=[], eligible=[]), set())             # [7,t,e,[],[]]

    def test_autobahn_raw_values(self) -> None:
        self.assertEqual(autobahn_receivers("p", None, None, None), (frozenset({"p"}), EVERYONE))
        self.assertEqual(autobahn_receivers("p", False, None, None), (frozenset(), None))
        # An exclude list replaces excludeMe entirely.
        self.assertEqual(autobahn_receivers("p", True, ("x",), None), (frozenset({"x"}), None))
        self.assertEqual(autobahn_receivers("p", None, (), ()), (frozenset(), frozenset()))

    def test_ratchet_exclude(self) -> None:
        self.assertEqual(ratchet_exclude("p", None, False), [])
        self.assertEqual(ratchet_exclude("p", None, True), ["p"])
        self.assertEqual(ratchet_exclude("p", ("a", "b"), True), ["a", "b"])
        self.assertEqual(ratchet_exclude("p", (), False), [])

    def test_ratchet_eligible(self) -> None:
        self.assertEqual(ratchet_eligible(None), [])
        self.assertEqual(ratchet_eligible(("a",)), ["a"])
        self.assertEqual(ratchet_eligible(()), [])

    def test_ratchet_receivers(self) -> None:
        P, O = self.P, self.O
        self.assertEqual(self.receivers(*ratchet_receivers([], [])), {P, O})
        self.assertEqual(self.receivers(*ratchet_receivers([P], [])), {O})
        self.assertEqual(self.receivers(*ratchet_receivers([], [P])), {P})
        self.assertEqual(self.receivers(*ratchet_receivers([O], [P, O])), {P})
        self.assertEqual(ratchet_receivers(None, None), (frozenset(), EVERYONE))

    def test_ratchet_end_to_end_oro_backend_form(self) -> None:
        # [7, t, e, [], []] from the backend (publisher "p") reaches everyone.
        exclude = ratchet_exclude("p", (), False)
        eligible = ratchet_eligible(())
        self.assertEqual(self.receivers(*ratchet_receivers(exclude, eligible)), {self.P, self.O})


class FrameTests(unittest.TestCase):
    """Server frames: FIN set, unmasked, with the RFC 6455 length encodings."""

    def check(self, n: int, header: bytes) -> None:
        payload = b"x" * n
        data = frames.frame(payload)
        self.assertEqual(data[:len(header)], header)
        self.assertEqual(len(data), len(header) + n)
        self.assertEqual(data[len(header):], payload)
        self.assertEqual(data[1] & 0x80, 0, "server frames are never masked")

    def test_7_bit_lengths(self) -> None:
        self.check(0, b"\x81\x00")
        self.check(1, b"\x81\x01")
        self.check(125, b"\x81\x7d")

    def test_16_bit_lengths(self) -> None:
        self.check(126, b"\x81\x7e" + struct.pack("!H", 126))
        self.check(65535, b"\x81\x7e\xff\xff")

    def test_64_bit_lengths(self) -> None:
        self.check(65536, b"\x81\x7f" + struct.pack("!Q", 65536))
        self.check(70000, b"\x81\x7f" + struct.pack("!Q", 70000))

    def test_binary_opcode(self) -> None:
        self.assertEqual(frames.frame(b"ab", frames.OPCODE_BINARY), b"\x82\x02ab")

    def test_text_frame_encodes_utf8(self) -> None:
        # Length counts bytes, not characters.
        self.assertEqual(frames.text_frame("é"), b"\x81\x02\xc3\xa9")
        text = "é" * 63  # 126 bytes: just over the 7-bit form
        self.assertEqual(frames.text_frame(text)[:4], b"\x81\x7e\x00\x7e")
