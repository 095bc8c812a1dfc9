"""The WAMP v2 grammar without sockets: each message type, its errors, a fuzz."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from oro_sync.wamp2 import messages as m
from tests.test_wamp1_messages import FUZZ, json_values

ROLES = {"roles": {"subscriber": {}, "publisher": {}}}


def parse(value: Any) -> Any:
    return m.parse_message(json.dumps(value))


class ParseTests(unittest.TestCase):
    def test_hello(self) -> None:
        msg = parse([1, "realm1", ROLES])
        self.assertEqual((msg.realm, msg.details), ("realm1", ROLES))

    def test_publish_defaults_and_options(self) -> None:
        msg = parse([16, 1, {}, "oro/data/update"])
        self.assertEqual((msg.args, msg.kwargs, msg.acknowledge, msg.exclude_me, msg.exclude, msg.eligible),
                         (None, None, False, True, None, None))
        msg = parse([16, 2, {"acknowledge": True, "exclude_me": False, "exclude": [3], "eligible": [4, 5],
                             "unknown": "ignored"}, "t", [1], {"k": 2}])
        self.assertEqual((msg.request_id, msg.args, msg.kwargs, msg.acknowledge, msg.exclude_me,
                          msg.exclude, msg.eligible), (2, [1], {"k": 2}, True, False, (3,), (4, 5)))

    def test_subscribe_unsubscribe_call_register(self) -> None:
        self.assertEqual(parse([32, 1, {}, "a.b"]).topic, "a.b")
        self.assertEqual(parse([34, 2, 99]).subscription, 99)
        call = parse([48, 3, {}, "proc", [1, 2]])
        self.assertEqual((call.procedure, call.args, call.kwargs), ("proc", [1, 2], None))
        self.assertEqual(parse([64, 4, {}, "proc"]).procedure, "proc")
        self.assertEqual(parse([6, {}, "wamp.close.normal"]).reason, "wamp.close.normal")

    def test_protocol_errors(self) -> None:
        for bad in ([], {}, "x", [True], [1.5], [2, 1, {}], [36, 1, 2, {}], [999],
                    [1, "realm1", {}],  # no roles
                    [1, "realm1", {"roles": {"broker": {}}}],  # a router role
                    [1, "bad realm", ROLES], [16, "1", {}, "t"], [16, -1, {}, "t"],
                    [16, 2 ** 53 + 1, {}, "t"], [32, 1, {}], [6, {}], [8, 48, 1, {}, "e"]):
            with self.assertRaises(m.ProtocolError, msg=repr(bad)):
                parse(bad)

    def test_request_errors_name_the_request(self) -> None:
        for bad, kind, uri in (([32, 7, {}, "a..b"], m.SUBSCRIBE, m.ERROR_INVALID_URI),
                               ([32, 7, {}, "a b"], m.SUBSCRIBE, m.ERROR_INVALID_URI),
                               ([32, 7, {"match": "wildcard"}, "a"], m.SUBSCRIBE, m.ERROR_INVALID_ARGUMENT),
                               ([32, 7, [], "a"], m.SUBSCRIBE, m.ERROR_INVALID_ARGUMENT),
                               ([16, 7, {"acknowledge": 1}, "t"], m.PUBLISH, m.ERROR_INVALID_ARGUMENT),
                               ([16, 7, {"exclude": [True]}, "t"], m.PUBLISH, m.ERROR_INVALID_ARGUMENT),
                               ([16, 7, {}, "t", {}], m.PUBLISH, m.ERROR_INVALID_ARGUMENT),
                               ([16, 7, {}, "t", [], []], m.PUBLISH, m.ERROR_INVALID_ARGUMENT),
                               ([48, 7, {}, "#"], m.CALL, m.ERROR_INVALID_URI)):
            with self.assertRaises(m.InvalidRequest, msg=repr(bad)) as cm:
                parse(bad)
            self.assertEqual((cm.exception.request_type, cm.exception.request_id, cm.exception.error_uri),
                             (kind, 7, uri))

    def test_loose_uris(self) -> None:
        for good in ("oro/data/update", "com.example.topic", "a", "x_1.y-2"):
            self.assertTrue(m.valid_uri(good), good)
        for bad in ("", ".a", "a.", "a..b", "a b", "a#b", 5, None):
            self.assertFalse(m.valid_uri(bad), bad)


class EncodeTests(unittest.TestCase):
    def test_payload_is_omitted_when_empty(self) -> None:
        self.assertEqual((m.event(1, 2, [], None)), [36, 1, 2, {}])
        self.assertEqual((m.event(1, 2, ["a"], None)), [36, 1, 2, {}, ["a"]])
        self.assertEqual((m.event(1, 2, None, {"k": 1})), [36, 1, 2, {}, [], {"k": 1}])
        self.assertEqual((m.result(5, ["r"], None)), [50, 5, {}, ["r"]])
        self.assertEqual((m.error(32, 5, "wamp.error.x", ["why"])),
                         [8, 32, 5, {}, "wamp.error.x", ["why"]])
        self.assertEqual((m.abort("wamp.error.y", "m")), [3, {"message": "m"}, "wamp.error.y"])


def outcome(payload: bytes | str) -> Any:
    try:
        return m.parse_message(payload)
    except m.ProtocolError as e:
        assert e.reason
        return e
    except m.InvalidRequest as e:
        assert m.valid_uri(e.error_uri) and isinstance(e.request_id, int) and e.reason
        return e


message_like = st.builds(lambda kind, rest: [kind, *rest],
                         st.sampled_from([1, 3, 6, 8, 16, 32, 34, 48, 64, 66, 70, 2, 36, 99]),
                         st.lists(json_values, max_size=6))


class FuzzTests(unittest.TestCase):
    """Whatever a client sends, the parser raises only its two errors."""

    @FUZZ
    @given(message_like)
    def test_message_like_values(self, value: list) -> None:
        outcome(json.dumps(value))

    @FUZZ
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        outcome(raw)

    @FUZZ
    @given(st.binary(max_size=200), st.sampled_from(["msgpack", "cbor"]))
    def test_arbitrary_binary_frames(self, raw: bytes, name: str) -> None:
        # MessagePack and CBOR: only the serializer's and the parser's errors.
        from oro_sync.wamp2.serializers import SERIALIZERS, SerializationError
        try:
            m.parse_value(SERIALIZERS[f"wamp.2.{name}"].decode(raw))
        except (SerializationError, m.ProtocolError, m.InvalidRequest):
            pass

    @FUZZ
    @given(message_like, st.sampled_from(["msgpack", "cbor"]))
    def test_message_like_binary_values(self, value: list, name: str) -> None:
        from oro_sync.wamp2.serializers import SERIALIZERS, SerializationError
        serializer = SERIALIZERS[f"wamp.2.{name}"]
        try:
            data = serializer.encode(value)
        except OverflowError:  # MessagePack has no integers beyond 64 bits
            return
        try:
            m.parse_value(serializer.decode(data))
        except (SerializationError, m.ProtocolError, m.InvalidRequest):  # beyond 64 bits, too deep
            pass


class ImportOrderTests(unittest.TestCase):
    def test_each_front_end_imports_first(self) -> None:
        # The v1 factory imports the v2 session, which imports v1's pure
        # modules: whichever a program imports first must work.
        import os
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this tree, not an install
        env = dict(os.environ, PYTHONPATH=root)
        for module in ("oro_sync.wamp2.session", "oro_sync.wamp2.messages", "oro_sync.wamp1",
                       "oro_sync.websocket.factory", "oro_sync.server"):
            done = subprocess.run([sys.executable, "-c", f"import {module}; assert {module}.__file__"
                                   f".startswith({root!r}), {module}.__file__"],
                                  capture_output=True, text=True, env=env, cwd=root)
            self.assertEqual(done.returncode, 0, f"import {module}: {done.stderr[-500:]}")
