"""WAMP v2 over MessagePack and CBOR (and JSON) with Autobahn|Python 26 on real sockets.

Each serializer: subscribe and acknowledged publish, a v1 subscriber
receiving a v2 publish and back, RPC result and ApplicationError, events
encoded once per serializer per publish; then what a hostile client sends
in binary (undecodable, not a WAMP message, too deep, non-JSON types).
"""

from __future__ import annotations

from typing import Any

import cbor2
import msgpack
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.wamp.rpc import CallError
from oro_sync.wamp2.serializers import CBOR, JSON, MAX_DEPTH, MSGPACK, SerializationError
from tests.support import wamp2
from tests.support.client import HandshakeFailed, connect
from tests.test_wamp1_server import PING, TOPIC, ServerTestCase

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]
FAIL = "http://oro-sync.test/fail"


def _fail(*args: Any) -> Any:
    raise CallError("com.example.nope", "it did not work", {"code": 7})


class _PerSerializer:
    serializer = "json"

    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory(mayRegister=lambda identity: True)
        self.factory.registerProcedureForRpc(FAIL, _fail)

    def join(self, **kwargs: Any) -> defer.Deferred:
        kwargs.setdefault("serializers", self.serializer)
        return wamp2.join(self, self.factory.port, **kwargs)

    @defer.inlineCallbacks
    def test_negotiated_and_binary(self) -> Any:
        s = yield self.join()
        self.assertEqual(s._transport.websocket_protocol_in_use, f"wamp.2.{self.serializer}")
        session = self.factory.hub.sessions[str(s.session_id)]
        self.assertEqual(session.serializer.name, self.serializer)
        self.assertEqual(session.serializer.binary, self.serializer != "json")

    @defer.inlineCallbacks
    def test_subscribe_and_acknowledged_publish(self) -> Any:
        sub = yield self.join()
        pub = yield self.join()
        queue, _ = yield wamp2.events(sub, TOPIC)
        publication = yield pub.publish(TOPIC, "héllo", 42, {"k": [1.5, None, True]},
                                        options=PublishOptions(acknowledge=True))
        args, kwargs, details = yield queue.next()
        self.assertEqual((args, kwargs), (["héllo", 42, {"k": [1.5, None, True]}], {}))
        self.assertEqual(details.publication, publication.id)

    @defer.inlineCallbacks
    def test_v1_and_v2_deliver_both_ways(self) -> Any:
        v1 = yield self.connect(self.factory)
        yield self.subscribed(TOPIC, v1)
        v2 = yield self.join()
        json_v2 = yield self.join(serializers="json")
        queue, _ = yield wamp2.events(v2, TOPIC)
        json_queue, _ = yield wamp2.events(json_v2, TOPIC)
        v1.publish(TOPIC, {"from": "v1"})
        self.assertEqual((yield queue.next())[:2], ([{"from": "v1"}], {}))
        self.assertEqual((yield json_queue.next())[:2], ([{"from": "v1"}], {}))
        yield v2.publish(TOPIC, {"from": "v2"}, options=PublishOptions(acknowledge=True))
        yield self.assertNext(v1, [8, TOPIC, {"from": "v2"}])
        self.assertEqual((yield json_queue.next())[:2], ([{"from": "v2"}], {}))

    @defer.inlineCallbacks
    def test_rpc_result_and_application_error(self) -> Any:
        s = yield self.join()
        self.assertEqual((yield s.call(PING)), "pong")
        e = yield self.assertFailure(s.call(FAIL), ApplicationError)
        self.assertEqual(e.error, "com.example.nope")
        self.assertEqual(e.args, ("it did not work", {"code": 7}))
        # A callee speaking another serializer than its caller.
        callee = yield self.join(serializers="json" if self.serializer != "json" else "msgpack")
        yield callee.register(lambda x: {"twice": x * 2}, "com.example.twice")

        def refuse() -> None:
            raise ApplicationError("com.example.refused", "no")

        yield callee.register(refuse, "com.example.refuse")
        self.assertEqual((yield s.call("com.example.twice", 21)), {"twice": 42})
        e = yield self.assertFailure(s.call("com.example.refuse"), ApplicationError)
        self.assertEqual(e.error, "com.example.refused")


class ServerProcedureTimeoutTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_timeout_cancels_a_server_procedure(self) -> Any:
        from autobahn.wamp.types import CallOptions
        factory = self.make_factory()
        cancelled: list = []
        factory.registerProcedureForRpc("com.example.never",
                                        lambda: defer.Deferred(lambda d: cancelled.append(True)))
        s = yield wamp2.join(self, factory.port, serializers="msgpack")
        e = yield self.assertFailure(s.call("com.example.never", options=CallOptions(timeout=50)),
                                     ApplicationError)
        self.assertEqual((e.error, cancelled), ("wamp.error.canceled", [True]))
        # Autobahn checks the option itself: a raw client sends a bad one.
        c = yield connect(factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        c.send([1, "realm1", {"roles": {"caller": {}}}])
        self.assertEqual((yield c.next_message())[0], 2)
        c.send([48, 7, {"timeout": "soon"}, PING])
        self.assertEqual((yield c.next_message())[:5], [8, 48, 7, {}, "wamp.error.invalid_argument"])


class JsonTests(_PerSerializer, ServerTestCase):
    serializer = "json"


class MsgPackTests(_PerSerializer, ServerTestCase):
    serializer = "msgpack"


class CborTests(_PerSerializer, ServerTestCase):
    serializer = "cbor"


class OneFramePerSerializerTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_one_encoding_per_serializer_per_publish(self) -> Any:
        factory = self.make_factory()
        router = factory.wamp2
        calls: dict[str, int] = {}
        for name, serializer in (("json", JSON), ("msgpack", MSGPACK), ("cbor", CBOR)):
            original = serializer.frame

            def counting(msg: Any, _name: str = name, _original: Any = original) -> bytes:
                calls[_name] = calls.get(_name, 0) + 1
                return _original(msg)

            serializer.frame = counting  # instance attribute: undone below
            self.addCleanup(serializer.__dict__.pop, "frame", None)
        queues = []
        for name in ("json", "msgpack", "cbor") * 2:
            s = yield wamp2.join(self, factory.port, serializers=name)
            queue, _ = yield wamp2.events(s, TOPIC)
            queues.append(queue)
        calls.clear()
        factory.dispatch(TOPIC, {"n": 1})
        for queue in queues:
            self.assertEqual((yield queue.next())[0], [{"n": 1}])
        self.assertEqual(calls, {"json": 1, "msgpack": 1, "cbor": 1})
        self.assertEqual(len(router.encoders), 3)


class BinaryRawTests(ServerTestCase):
    """What an Autobahn client would never send, in MessagePack and CBOR."""

    def setUp(self) -> None:
        super().setUp()
        self.factory = self.make_factory()

    @defer.inlineCallbacks
    def raw(self, protocol: str) -> Any:
        c = yield connect(self.factory.port, protocols=[protocol], wait_welcome=False)
        self.clients.append(c)
        return c

    @defer.inlineCallbacks
    def assertViolation(self, protocol: str, payload: bytes, why: str, hello: bool = True,
                        binary: bool = True) -> Any:
        c = yield self.raw(protocol)
        dumps = msgpack.packb if protocol.endswith("msgpack") else cbor2.dumps
        loads = (lambda b: msgpack.unpackb(b)) if protocol.endswith("msgpack") else cbor2.loads
        if hello:
            c.send(dumps(HELLO), isBinary=True)
            welcome = loads((yield c.next_message()))
            self.assertEqual(welcome[0], 2)
        c.send(payload, isBinary=binary)
        abort = loads((yield c.next_message()))
        self.assertEqual(abort[0], 3)
        self.assertEqual(abort[2], "wamp.error.protocol_violation")
        self.assertIn(why, abort[1]["message"])
        yield c.closed
        self.assertFalse(any(e.get("log_failure") for e in self.log_events))

    def test_msgpack_undecodable(self) -> Any:
        return self.assertViolation("wamp.2.msgpack", b"\xc1", "invalid MessagePack")

    def test_cbor_undecodable(self) -> Any:
        return self.assertViolation("wamp.2.cbor", b"\xff", "invalid CBOR")

    def test_not_a_wamp_message(self) -> Any:
        return self.assertViolation("wamp.2.msgpack", msgpack.packb({"a": 1}), "non-empty array")

    def test_cbor_before_hello(self) -> Any:
        return self.assertViolation("wamp.2.cbor", cbor2.dumps([32, 1, {}, TOPIC]), "before HELLO",
                                    hello=False)

    def test_binary_values_cannot_be_relayed(self) -> Any:
        return self.assertViolation("wamp.2.msgpack",
                                    msgpack.packb([16, 1, {}, TOPIC, [b"\x00bytes"]], use_bin_type=True),
                                    "bytes")

    def test_cbor_tags_cannot_be_relayed(self) -> Any:
        return self.assertViolation("wamp.2.cbor", b"\x85\x10\x01\xa0\x63a.b\x81\xc1\x1a\x00\x00\x00\x01",
                                    "datetime")

    def test_too_deep(self) -> Any:
        deep: Any = 1
        for _ in range(MAX_DEPTH + 5):
            deep = [deep]
        return self.assertViolation("wamp.2.cbor", cbor2.dumps([16, 1, {}, TOPIC, [deep]]), "nest")

    def test_text_frame_on_a_binary_serializer(self) -> Any:
        return self.assertViolation("wamp.2.msgpack", b"[1]", "text messages", binary=False)

    @defer.inlineCallbacks
    def test_unknown_subprotocols_are_refused_naming_ours(self) -> Any:
        with self.assertRaises(HandshakeFailed) as caught:
            yield connect(self.factory.port, protocols=["wamp.2.flatbuffers", "mqtt"])
        text = str(caught.exception)
        self.assertIn("[400]", text)
        for ours in ("wamp", "wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor"):
            self.assertIn(f'"{ours}"', text)
        self.assertTrue(any("refusing" in (e.get("log_format") or "") for e in self.log_events))


class DecodeBoundsTests(unittest.TestCase):
    def test_hostile_lengths_and_types(self) -> None:
        for serializer, payload in ((CBOR, b"\x9b\x00\x00\x00\xff\xff\xff\xff\xff"),
                                    (MSGPACK, b"\xdd\xff\xff\xff\xff"),
                                    (MSGPACK, b"\x91" * 5000 + b"\x01"),
                                    (MSGPACK, msgpack.packb([1, {1: 2}])),
                                    (CBOR, cbor2.dumps([1, float("nan")])),
                                    (MSGPACK, msgpack.packb([msgpack.ExtType(1, b"x")]))):
            with self.assertRaises(SerializationError):
                serializer.decode(payload)

    def test_cbor_shared_references_are_refused_at_once(self) -> None:
        # Tags 28/29 make each level hold the one below twice: 60 levels are
        # about 400 bytes, and a tree walk of them would never end.
        from cbor2 import CBORTag

        value = CBORTag(28, [1])
        for d in range(58, -1, -1):
            value = CBORTag(28, [value, CBORTag(29, d + 1)])
        payload = cbor2.dumps([1, "realm1", {"roles": {"subscriber": {}}, "x": value}])
        self.assertLess(len(payload), 500)
        with self.assertRaises(SerializationError) as caught:
            CBOR.decode(payload)
        self.assertIn("shared by reference", caught.exception.reason)

    def test_equal_values_that_are_not_shared_pass(self) -> None:
        msg = [16, 1, {}, "t", [[1], [1], {"a": [1]}, {"a": [1]}]]
        for serializer in (JSON, MSGPACK, CBOR):
            self.assertEqual(serializer.decode(serializer.encode(msg)), msg)

    def test_round_trip(self) -> None:
        msg = [36, 1, 2, {}, ["é", 1, 2.5, None, True, {"a": [1]}]]
        for serializer in (JSON, MSGPACK, CBOR):
            self.assertEqual(serializer.decode(serializer.encode(msg)), msg)


class CrossSerializerBoundsTests(ServerTestCase):
    """What one serializer carries and another cannot never costs a connection."""

    @defer.inlineCallbacks
    def test_json_input_is_held_to_every_serializers_bounds(self) -> Any:
        factory = self.make_factory()
        sub = yield wamp2.join(self, factory.port, serializers="msgpack")
        queue, _ = yield wamp2.events(sub, TOPIC)
        c = yield connect(factory.port, protocols=["wamp.2.json"], wait_welcome=False)
        self.clients.append(c)
        c.send([1, "realm1", {"roles": {"publisher": {}}}])
        self.assertEqual((yield c.next_message())[0], 2)
        c.send(b'[16, 1, {}, "%s", [%d]]' % (TOPIC.encode(), 2 ** 70))
        abort = yield c.next_message()
        self.assertEqual((abort[0], abort[2]), (3, "wamp.error.protocol_violation"))
        self.assertIn("64 bits", abort[1]["message"])
        # The MessagePack subscriber is still there and gets the next event.
        factory.dispatch(TOPIC, {"n": 2})
        self.assertEqual((yield queue.next())[0], [{"n": 2}])

    @defer.inlineCallbacks
    def test_a_v1_event_msgpack_cannot_carry_skips_only_msgpack(self) -> Any:
        factory = self.make_factory()
        mp = yield wamp2.join(self, factory.port, serializers="msgpack")
        cb = yield wamp2.join(self, factory.port, serializers="cbor")
        mp_queue, _ = yield wamp2.events(mp, TOPIC)
        cb_queue, _ = yield wamp2.events(cb, TOPIC)
        self.assertEqual(factory.dispatch(TOPIC, 2 ** 70), 1)  # CBOR has bignums
        self.assertEqual((yield cb_queue.next())[0], [2 ** 70])
        self.assertTrue(any("not sent to msgpack" in (e.get("log_format") or "").replace(
            "{serializer}", "msgpack") for e in self.log_events))
        factory.dispatch(TOPIC, "after")
        self.assertEqual((yield mp_queue.next())[0], ["after"])
