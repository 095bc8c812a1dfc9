"""The WAMP v1 wire grammar, tested without sockets.

:mod:`oro_sync.wamp1.messages` is the single place where client input is
judged, so every accepted form and every rejection (with the close code and,
for a readable CALL, the call id that lets the server answer CALLERROR
instead of closing) is pinned here.  A property-based fuzz then checks the
one promise the server's stability rests on: whatever arrives, the parser
returns a message or raises :class:`ProtocolError`, never anything else.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from oro_sync.wamp1 import messages as m
from oro_sync.wamp1.messages import (
    Call,
    Prefix,
    ProtocolError,
    Publish,
    Subscribe,
    Unsubscribe,
    parse_message,
    resolve_curie,
)

# Kept small enough for a fast run, large enough to reach nested containers.
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
# Round trips check a mapping, not robustness: fewer examples suffice.
ROUND = settings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def parse(value: Any) -> Any:
    """Parse the JSON text of ``value``, as a client would have sent it."""
    return parse_message(json.dumps(value))


class ParseValidTests(unittest.TestCase):
    """Every client-to-server message type parses to the right fields."""

    def test_prefix(self) -> None:
        self.assertEqual(parse([1, "calc", "http://example.com/calc#"]),
                         Prefix("calc", "http://example.com/calc#"))

    def test_call_without_args(self) -> None:
        self.assertEqual(parse([2, "0.m4dhlroliti", "http://x/p"]),
                         Call("0.m4dhlroliti", "http://x/p", ()))

    def test_call_with_args_keeps_them_in_order(self) -> None:
        msg = parse([2, "c1", "calc:add", 1, None, {"a": [1, 2]}, "s"])
        self.assertEqual(msg, Call("c1", "calc:add", (1, None, {"a": [1, 2]}, "s")))

    def test_call_id_may_be_empty_string(self) -> None:
        # The call id is opaque to the server: any string is echoed back.
        self.assertEqual(parse([2, "", "p"]).call_id, "")

    def test_subscribe_and_unsubscribe(self) -> None:
        self.assertEqual(parse([5, "http://x/t"]), Subscribe("http://x/t"))
        self.assertEqual(parse([6, "ev:t"]), Unsubscribe("ev:t"))

    def test_accepts_bytes_and_str(self) -> None:
        self.assertEqual(parse_message(b'[5,"t"]'), Subscribe("t"))
        self.assertEqual(parse_message('[5,"t"]'), Subscribe("t"))
        self.assertEqual(parse_message(bytearray(b'[5,"t"]')), Subscribe("t"))

    def test_accepts_non_ascii_utf8(self) -> None:
        self.assertEqual(parse_message('[5,"t/é/✓"]'.encode("utf-8")), Subscribe("t/é/✓"))


class ParsePublishTests(unittest.TestCase):
    """The four PUBLISH forms, parsed once into fields both profiles read."""

    def test_three_elements_default(self) -> None:
        msg = parse([7, "t", {"x": 1}])
        self.assertEqual(msg, Publish("t", {"x": 1}))
        self.assertIsNone(msg.exclude_me)
        self.assertFalse(msg.flag_truthy)
        self.assertIsNone(msg.exclude)
        self.assertIsNone(msg.eligible)

    def test_event_may_be_null(self) -> None:
        self.assertIsNone(parse([7, "t", None]).event)

    def test_exclude_me_true(self) -> None:
        msg = parse([7, "t", "e", True])
        self.assertIs(msg.exclude_me, True)
        self.assertTrue(msg.flag_truthy)
        self.assertIsNone(msg.exclude)
        self.assertIsNone(msg.eligible)

    def test_exclude_me_false(self) -> None:
        msg = parse([7, "t", "e", False])
        self.assertIs(msg.exclude_me, False)
        self.assertFalse(msg.flag_truthy)
        self.assertIsNone(msg.exclude)

    def test_null_flag_is_the_default(self) -> None:
        # AutobahnPython 0.8 sends null when excludeMe is not given.
        msg = parse([7, "t", "e", None])
        self.assertIsNone(msg.exclude_me)
        self.assertFalse(msg.flag_truthy)
        self.assertIsNone(msg.exclude)

    def test_other_truthy_flag(self) -> None:
        # Ratchet reads any truthy non-list as "exclude me"; Autobahn ignores it.
        for flag in (1, "yes", {"a": 1}):
            msg = parse([7, "t", "e", flag])
            self.assertIsNone(msg.exclude_me, flag)
            self.assertTrue(msg.flag_truthy, flag)
            self.assertIsNone(msg.exclude, flag)
        for flag in (0, "", {}):
            msg = parse([7, "t", "e", flag])
            self.assertIsNone(msg.exclude_me, flag)
            self.assertFalse(msg.flag_truthy, flag)

    def test_exclude_list(self) -> None:
        msg = parse([7, "t", "e", ["a", "b"]])
        self.assertEqual(msg.exclude, ("a", "b"))
        self.assertIsNone(msg.eligible)
        self.assertIsNone(msg.exclude_me)
        self.assertFalse(msg.flag_truthy)

    def test_empty_exclude_list(self) -> None:
        self.assertEqual(parse([7, "t", "e", []]).exclude, ())

    def test_exclude_and_eligible(self) -> None:
        msg = parse([7, "t", "e", ["a"], ["b", "c"]])
        self.assertEqual(msg.exclude, ("a",))
        self.assertEqual(msg.eligible, ("b", "c"))
        self.assertIsNone(msg.exclude_me)

    def test_oro_backend_form_empty_lists(self) -> None:
        # What the Oro PHP backend sends: both lists present and empty.
        msg = parse([7, "t", "e", [], []])
        self.assertEqual(msg.exclude, ())
        self.assertEqual(msg.eligible, ())


class CurieTests(unittest.TestCase):
    """CURIE expansion as autobahn.js and AutobahnPython do it."""

    prefixes = {"calc": "http://example.com/simple/calc#", "ev": "http://example.com/event/"}

    def test_known_prefix_is_concatenated(self) -> None:
        self.assertEqual(resolve_curie("calc:square", self.prefixes),
                         "http://example.com/simple/calc#square")
        self.assertEqual(resolve_curie("ev:a/b", self.prefixes), "http://example.com/event/a/b")

    def test_only_first_colon_splits(self) -> None:
        self.assertEqual(resolve_curie("ev:a:b", self.prefixes), "http://example.com/event/a:b")

    def test_empty_rest(self) -> None:
        self.assertEqual(resolve_curie("ev:", self.prefixes), "http://example.com/event/")

    def test_unknown_prefix_unchanged(self) -> None:
        self.assertEqual(resolve_curie("other:x", self.prefixes), "other:x")

    def test_full_uri_unchanged(self) -> None:
        self.assertEqual(resolve_curie("http://example.com/x", self.prefixes), "http://example.com/x")
        self.assertEqual(resolve_curie("https://example.com/x", self.prefixes), "https://example.com/x")

    def test_full_uri_unchanged_even_if_http_is_a_prefix(self) -> None:
        # Plain concatenation is the rule: a client defining "http" gets it.
        self.assertEqual(resolve_curie("http://x", {"http": "H"}), "H//x")

    def test_no_colon_or_leading_colon_unchanged(self) -> None:
        self.assertEqual(resolve_curie("calc", self.prefixes), "calc")
        self.assertEqual(resolve_curie(":calc", {"": "X"}), ":calc")

    def test_no_prefixes(self) -> None:
        self.assertEqual(resolve_curie("calc:square", {}), "calc:square")


class EncodeTests(unittest.TestCase):
    """Exact JSON text of server-to-client messages: strict clients count elements."""

    def test_welcome(self) -> None:
        self.assertEqual(m.welcome("abc_DEF-0123456", "oro-sync/0.1.0"),
                         '[0,"abc_DEF-0123456",1,"oro-sync/0.1.0"]')

    def test_call_result(self) -> None:
        self.assertEqual(m.call_result("c1", {"a": [1, 2.5]}), '[3,"c1",{"a":[1,2.5]}]')

    def test_call_result_null_is_present(self) -> None:
        self.assertEqual(m.call_result("c1", None), '[3,"c1",null]')

    def test_call_error_four_elements(self) -> None:
        self.assertEqual(m.call_error("c1", "http://x#e", "bad"), '[4,"c1","http://x#e","bad"]')
        self.assertEqual(m.call_error("c1", "http://x#e", ""), '[4,"c1","http://x#e",""]')

    def test_call_error_null_details_omitted(self) -> None:
        # errorDetails, when present, is never null.
        self.assertEqual(m.call_error("c1", "u", "d", None), '[4,"c1","u","d"]')

    def test_call_error_five_elements(self) -> None:
        self.assertEqual(m.call_error("c1", "u", "d", {"k": [1]}), '[4,"c1","u","d",{"k":[1]}]')
        self.assertEqual(m.call_error("c1", "u", "d", 0), '[4,"c1","u","d",0]')
        self.assertEqual(m.call_error("c1", "u", "d", False), '[4,"c1","u","d",false]')

    def test_event(self) -> None:
        self.assertEqual(m.event("http://x/t", {"n": 1}), '[8,"http://x/t",{"n":1}]')
        self.assertEqual(m.event("http://x/t", None), '[8,"http://x/t",null]')

    def test_non_ascii_is_kept_as_utf8_text(self) -> None:
        self.assertEqual(m.event("t", "é✓"), '[8,"t","é✓"]')

    def test_nan_and_infinity_never_encoded(self) -> None:
        for bad in (float("nan"), float("inf"), float("-inf")):
            with self.assertRaises(ValueError):
                m.event("t", bad)
            with self.assertRaises(ValueError):
                m.call_result("c", [1, {"x": bad}])
            with self.assertRaises(ValueError):
                m.call_error("c", "u", "d", bad)


class ParseErrorTests(unittest.TestCase):
    """Every bad input is a ProtocolError carrying how to answer it."""

    def assertRejected(self, payload: Any, code: int = m.CLOSE_INVALID_PAYLOAD,
                       call_id: str | None = None, says: str | None = None) -> ProtocolError:
        """Parse ``payload`` (text/bytes as is, anything else as JSON) and
        check the error's code, call id and that its reason says ``says``."""
        if not isinstance(payload, (str, bytes)):
            payload = json.dumps(payload)
        with self.assertRaises(ProtocolError) as cm:
            parse_message(payload)
        e = cm.exception
        self.assertEqual(e.code, code, payload)
        self.assertEqual(e.call_id, call_id, payload)
        self.assertTrue(e.reason, payload)
        self.assertEqual(str(e), e.reason)
        if says is not None:
            self.assertIn(says, e.reason, payload)
        return e

    def test_invalid_json(self) -> None:
        for text in ("", "[", "[5,'t']", "[5,\"t\",]", "{", "nul", "[5 \"t\"]", "[5,\"t\"] x"):
            self.assertRejected(text, says="invalid JSON")

    def test_invalid_utf8(self) -> None:
        for raw in (b"\xff", b'[5,"\xc3"]', b'[5,"\xed\xa0\x80"]', b"\x80[5]"):
            self.assertRejected(raw, says="invalid JSON")

    def test_literal_null(self) -> None:
        self.assertRejected("null", says="JSON array")

    def test_object(self) -> None:
        self.assertRejected({"type": 5, "topic": "t"}, says="JSON array")

    def test_scalars(self) -> None:
        for value in (5, 1.5, '"x"', True):
            self.assertRejected(value, says="JSON array")

    def test_empty_list(self) -> None:
        self.assertRejected([], says="non-empty JSON array")

    def test_non_integer_type_id(self) -> None:
        for kind in ("5", 5.0, None, [5], {"a": 5}, True, False):
            self.assertRejected([kind, "t"], says="integer type id")

    def test_unknown_type_ids(self) -> None:
        for kind in (-1, 9, 10, 42, 2 ** 70):
            self.assertRejected([kind, "t"], says=f"unknown WAMP message type {kind}")

    def test_server_to_client_type_ids(self) -> None:
        for kind, name in ((0, "WELCOME"), (3, "CALLRESULT"), (4, "CALLERROR"), (8, "EVENT")):
            self.assertRejected([kind, "x", 1, "y"], says=f"{name} is a server-to-client message")

    def test_prefix_wrong_arity(self) -> None:
        for msg in ([1], [1, "p"], [1, "p", "u", "x"]):
            self.assertRejected(msg, says="PREFIX takes exactly 3")

    def test_prefix_bad_fields(self) -> None:
        for msg in ([1, 1, "u"], [1, "", "u"], [1, "a:b", "u"], [1, None, "u"]):
            self.assertRejected(msg, says="PREFIX prefix")
        for msg in ([1, "p", 1], [1, "p", ""], [1, "p", None], [1, "p", ["u"]]):
            self.assertRejected(msg, says="PREFIX URI")

    def test_call_too_short(self) -> None:
        self.assertRejected([2], says="CALL takes at least 3")

    def test_call_non_string_call_id(self) -> None:
        # No readable id: nothing to answer a CALLERROR to, so close.
        for cid in (1, None, ["c"], {"c": 1}, True):
            self.assertRejected([2, cid, "p"], says="CALL id must be a string")

    def test_call_readable_id_bad_proc_uri(self) -> None:
        # A readable id: the server answers CALLERROR and keeps the connection.
        for proc in (1, None, "", ["p"], {"p": 1}, False):
            self.assertRejected([2, "c7", proc, 1], call_id="c7", says="procedure URI")

    def test_call_readable_id_missing_proc_uri(self) -> None:
        self.assertRejected([2, "c8"], call_id="c8", says="CALL")


    def test_subscribe_wrong_arity(self) -> None:
        for msg in ([5], [5, "t", "x"]):
            self.assertRejected(msg, says="SUBSCRIBE takes exactly 2")
        for msg in ([6], [6, "t", None]):
            self.assertRejected(msg, says="UNSUBSCRIBE takes exactly 2")

    def test_publish_wrong_arity(self) -> None:
        for msg in ([7], [7, "t"], [7, "t", "e", [], [], []]):
            self.assertRejected(msg, says="PUBLISH takes 3 to 5")

    def test_non_string_topic(self) -> None:
        for topic in (1, None, ["t"], {"t": 1}, True, 1.5):
            self.assertRejected([5, topic], says="SUBSCRIBE topic URI")
            self.assertRejected([6, topic], says="UNSUBSCRIBE topic URI")
            self.assertRejected([7, topic, "e"], says="PUBLISH topic URI")

    def test_empty_topic(self) -> None:
        self.assertRejected([5, ""], says="non-empty string")
        self.assertRejected([6, ""], says="non-empty string")
        self.assertRejected([7, "", "e"], says="non-empty string")

    def test_five_element_non_list_exclude(self) -> None:
        for bad in (None, True, "sid", 1, {"a": 1}):
            self.assertRejected([7, "t", "e", bad, []], says="exclude must be a list")

    def test_five_element_non_list_eligible(self) -> None:
        # A non-array eligible crashes Ratchet; here it is a clean rejection.
        for bad in (None, True, "sid", 1, {"a": 1}):
            self.assertRejected([7, "t", "e", [], bad], says="eligible must be a list")

    def test_non_string_session_ids(self) -> None:
        for bad in (1, None, ["s"], {"s": 1}, True):
            self.assertRejected([7, "t", "e", ["ok", bad]], says="exclude must contain only")
            self.assertRejected([7, "t", "e", [bad], []], says="exclude must contain only")
            self.assertRejected([7, "t", "e", [], ["ok", bad]], says="eligible must contain only")

    def test_nan_and_infinity_in_input(self) -> None:
        for const in ("NaN", "Infinity", "-Infinity"):
            self.assertRejected(f'[7,"t",{const}]', says="JSON does not allow")
            self.assertRejected(f'[2,"c","p",[{const}]]', says="JSON does not allow")

    def test_out_of_range_number_rejected(self) -> None:
        # 1e400 is valid JSON text, but Python reads it as inf, which can
        # never be encoded back: accepting it lets a PUBLISH blow up in the
        # fan-out (see the server test of the same name).
        for literal in ("1e400", "-1e400", "[1e999]"):
            self.assertRejected(f'[7,"t",{literal}]', says="invalid JSON")


    def test_out_of_range_number_cannot_be_encoded(self) -> None:
        # Today's behaviour, whatever the parser does: inf never goes out.
        with self.assertRaises(ValueError):
            m.event("t", json.loads("1e400"))

    def test_deeply_nested_json(self) -> None:
        # Deep enough to exceed the recursion limit of the C and Python scanners.
        self.assertRejected("[" * 200000 + "]" * 200000, says="invalid JSON")
        self.assertRejected('[7,"t",' + "[" * 200000 + "]" * 200000 + "]", says="invalid JSON")
        self.assertRejected(b'[7,"t",' + b'{"a":' * 200000 + b"1" + b"}" * 200000 + b"]",
                            says="invalid JSON")

    def test_long_reasons_are_truncated(self) -> None:
        # The reason goes into a close frame (at most 123 bytes).
        e = self.assertRejected("[" * 200000)
        self.assertLessEqual(len(e.reason), 123)

    def test_default_code(self) -> None:
        self.assertEqual(ProtocolError("x").code, m.CLOSE_INVALID_PAYLOAD)
        self.assertIsNone(ProtocolError("x").call_id)


# -- property-based fuzz --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)

# Values shaped like WAMP messages (an int type id first) reach deeper code
# than arbitrary JSON, which is nearly always rejected at the first check.
message_like = st.builds(
    lambda kind, rest: [kind, *rest],
    st.integers(min_value=-1, max_value=10) | st.booleans(),
    st.lists(json_values, max_size=6),
)

session_ids = st.lists(st.text(min_size=1, max_size=16), max_size=4)
topics = st.text(min_size=1, max_size=40)


def outcome(payload: bytes | str) -> Any:
    """Parse and return the message or the ProtocolError; any other
    exception propagates and fails the property."""
    try:
        msg = parse_message(payload)
    except ProtocolError as e:
        assert isinstance(e.code, int) and e.reason, e
        assert e.call_id is None or isinstance(e.call_id, str)
        return e
    assert isinstance(msg, (Prefix, Call, Subscribe, Unsubscribe, Publish)), msg
    return msg


class FuzzTests(unittest.TestCase):
    """Whatever a client sends, the parser never raises anything but ProtocolError."""

    @FUZZ
    @given(json_values)
    def test_any_json_value(self, value: Any) -> None:
        outcome(json.dumps(value))
        outcome(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))

    @FUZZ
    @given(message_like)
    def test_message_like_values(self, value: list) -> None:
        outcome(json.dumps(value))

    @FUZZ
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        outcome(raw)

    @FUZZ
    @given(st.text(max_size=200))
    def test_arbitrary_text(self, text: str) -> None:
        outcome(text)

    @FUZZ
    @given(st.text(alphabet="[]{}\",:0123456789.eE+-ntrufalsNIiy \\", max_size=120))
    def test_json_like_text(self, text: str) -> None:
        outcome(text)


class RoundTripTests(unittest.TestCase):
    """Valid generated messages parse back to exactly what was encoded."""

    @ROUND
    @given(st.text(min_size=1, max_size=10).filter(lambda p: ":" not in p), topics)
    def test_prefix(self, prefix: str, uri: str) -> None:
        self.assertEqual(parse([1, prefix, uri]), Prefix(prefix, uri))

    @ROUND
    @given(st.text(max_size=20), topics, st.lists(json_values, max_size=5))
    def test_call(self, call_id: str, proc: str, args: list) -> None:
        self.assertEqual(parse([2, call_id, proc, *args]), Call(call_id, proc, tuple(args)))

    @ROUND
    @given(topics)
    def test_subscribe_unsubscribe(self, topic: str) -> None:
        self.assertEqual(parse([5, topic]), Subscribe(topic))
        self.assertEqual(parse([6, topic]), Unsubscribe(topic))

    @ROUND
    @given(topics, json_values)
    def test_publish_plain(self, topic: str, event: Any) -> None:
        self.assertEqual(parse([7, topic, event]), Publish(topic, event))

    @ROUND
    @given(topics, json_values, st.booleans())
    def test_publish_exclude_me(self, topic: str, event: Any, flag: bool) -> None:
        self.assertEqual(parse([7, topic, event, flag]),
                         Publish(topic, event, exclude_me=flag, flag_truthy=flag))

    @ROUND
    @given(topics, json_values, session_ids)
    def test_publish_exclude(self, topic: str, event: Any, exclude: list) -> None:
        self.assertEqual(parse([7, topic, event, exclude]),
                         Publish(topic, event, exclude=tuple(exclude)))

    @ROUND
    @given(topics, json_values, session_ids, session_ids)
    def test_publish_exclude_eligible(self, topic: str, event: Any, exclude: list,
                                      eligible: list) -> None:
        self.assertEqual(parse([7, topic, event, exclude, eligible]),
                         Publish(topic, event, exclude=tuple(exclude), eligible=tuple(eligible)))

    @ROUND
    @given(topics, json_values)
    def test_event_encoding_parses_back(self, topic: str, payload: Any) -> None:
        # What the server encodes is strict JSON that decodes to the same value.
        self.assertEqual(json.loads(m.event(topic, payload)), [8, topic, payload])
