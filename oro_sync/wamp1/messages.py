"""WAMP v1 messages: parsing, validation and encoding, with no I/O.

Everything a client may send is turned into one of the small message classes
below, or into a :class:`ProtocolError` that says how the server must answer
(a CALLERROR when the call id is known, otherwise a WebSocket close code and
reason).  Nothing here touches a socket, so the whole wire grammar is tested
directly, including by a property-based fuzz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from oro_sync.wamp.codec import JsonError, encode_json
from oro_sync.wamp.codec import decode_json as _decode_json
from oro_sync.wamp.rpc import ERROR_GENERIC, ERROR_INTERNAL, ERROR_URI_BASE  # noqa: F401

# Message type ids (WAMP v1).
WELCOME = 0
PREFIX = 1
CALL = 2
CALLRESULT = 3
CALLERROR = 4
SUBSCRIBE = 5
UNSUBSCRIBE = 6
PUBLISH = 7
EVENT = 8

PROTOCOL_VERSION = 1

# WebSocket close codes used for bad input.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009

# Error URIs (the AutobahnPython 0.8 conventions that WAMP v1 clients know).
ERROR_NO_SUCH_RPC_ENDPOINT = ERROR_URI_BASE + "NoSuchRPCEndpoint"
ERROR_INVALID_CALL = ERROR_URI_BASE + "invalidcall"

_SERVER_TO_CLIENT = {WELCOME: "WELCOME", CALLRESULT: "CALLRESULT", CALLERROR: "CALLERROR", EVENT: "EVENT"}


class ProtocolError(Exception):
    """A client message that cannot be accepted.

    ``call_id`` is set when the offending message is a CALL whose id could be
    read: the answer is then a CALLERROR and the connection stays open.
    Otherwise the connection is closed with ``code`` and ``reason``.
    """

    def __init__(self, reason: str, code: int = CLOSE_INVALID_PAYLOAD, call_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.call_id = call_id


@dataclass(frozen=True, slots=True)
class Prefix:
    prefix: str
    uri: str


@dataclass(frozen=True, slots=True)
class Call:
    call_id: str
    proc_uri: str
    args: tuple


@dataclass(frozen=True, slots=True)
class Subscribe:
    topic_uri: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topic_uri: str


@dataclass(frozen=True, slots=True)
class Publish:
    """A PUBLISH in any of its four forms, parsed once for both profiles.

    - ``exclude_me``: the 4th element when it is a bool, else ``None``.
    - ``flag_truthy``: the truthiness of a 4th element that is not a list
      (the Ratchet profile reads any truthy value as "exclude me").
    - ``exclude`` / ``eligible``: session id tuples when given as lists,
      else ``None``.
    """

    topic_uri: str
    event: Any
    exclude_me: bool | None = None
    flag_truthy: bool = False
    exclude: tuple[str, ...] | None = None
    eligible: tuple[str, ...] | None = None


Message = Union[Prefix, Call, Subscribe, Unsubscribe, Publish]


def decode_json(payload: bytes | str) -> Any:
    """Decode one JSON text strictly (no NaN/Infinity); raise ProtocolError."""
    try:
        return _decode_json(payload)
    except JsonError as e:
        raise ProtocolError(e.reason) from None


def _session_ids(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ProtocolError(f"PUBLISH {what} must be a list of session ids")
    for sid in value:
        if not isinstance(sid, str):
            raise ProtocolError(f"PUBLISH {what} must contain only session id strings")
    return tuple(value)


def _topic(value: Any, kind: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{kind} topic URI must be a non-empty string")
    return value


def parse_message(payload: bytes | str) -> Message:
    """Parse and validate one client-to-server WAMP v1 text message."""
    msg = decode_json(payload)
    if not isinstance(msg, list) or not msg:
        raise ProtocolError("a WAMP message must be a non-empty JSON array")
    kind = msg[0]
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise ProtocolError("a WAMP message must start with an integer type id")
    n = len(msg)
    if kind == PUBLISH:
        if not 3 <= n <= 5:
            raise ProtocolError("PUBLISH takes 3 to 5 elements")
        topic = _topic(msg[1], "PUBLISH")
        if n == 3:
            return Publish(topic, msg[2])
        if n == 5:
            return Publish(
                topic,
                msg[2],
                exclude=_session_ids(msg[3], "exclude"),
                eligible=_session_ids(msg[4], "eligible"),
            )
        flag = msg[3]
        if isinstance(flag, bool):
            return Publish(topic, msg[2], exclude_me=flag, flag_truthy=flag)
        if isinstance(flag, list):
            return Publish(topic, msg[2], exclude=_session_ids(flag, "exclude"))
        # Neither bool nor list (AutobahnPython 0.8 sends null): the default.
        return Publish(topic, msg[2], flag_truthy=bool(flag))
    if kind == SUBSCRIBE or kind == UNSUBSCRIBE:
        name = "SUBSCRIBE" if kind == SUBSCRIBE else "UNSUBSCRIBE"
        if n != 2:
            raise ProtocolError(f"{name} takes exactly 2 elements")
        topic = _topic(msg[1], name)
        return Subscribe(topic) if kind == SUBSCRIBE else Unsubscribe(topic)
    if kind == CALL:
        if n < 2:
            raise ProtocolError("CALL takes at least 3 elements")
        call_id = msg[1]
        if not isinstance(call_id, str):
            raise ProtocolError("CALL id must be a string")
        if n < 3:
            raise ProtocolError("CALL takes at least 3 elements", call_id=call_id)
        proc = msg[2]
        if not isinstance(proc, str) or not proc:
            raise ProtocolError("CALL procedure URI must be a non-empty string", call_id=call_id)
        return Call(call_id, proc, tuple(msg[3:]))
    if kind == PREFIX:
        if n != 3:
            raise ProtocolError("PREFIX takes exactly 3 elements")
        prefix, uri = msg[1], msg[2]
        if not isinstance(prefix, str) or not prefix or ":" in prefix:
            raise ProtocolError("PREFIX prefix must be a non-empty string without ':'")
        if not isinstance(uri, str) or not uri:
            raise ProtocolError("PREFIX URI must be a non-empty string")
        return Prefix(prefix, uri)
    if kind in _SERVER_TO_CLIENT:
        raise ProtocolError(f"{_SERVER_TO_CLIENT[kind]} is a server-to-client message")
    raise ProtocolError(f"unknown WAMP message type {kind}")


def resolve_curie(uri: str, prefixes: dict[str, str]) -> str:
    """Expand a CURIE the way autobahn.js and AutobahnPython do.

    The part before the first ``:`` is looked up among the connection's
    prefixes; a known prefix is replaced by its URI (plain concatenation),
    anything else (``http://...``, unknown prefixes) passes unchanged.
    """
    if not prefixes:
        return uri
    i = uri.find(":")
    if i > 0:
        base = prefixes.get(uri[:i])
        if base is not None:
            return base + uri[i + 1:]
    return uri


# -- encoding (server to client) ---------------------------------------------

def welcome(session_id: str, server_ident: str) -> str:
    return encode_json([WELCOME, session_id, PROTOCOL_VERSION, server_ident])


def call_result(call_id: str, result: Any) -> str:
    return encode_json([CALLRESULT, call_id, result])


_MISSING = object()


def call_error(call_id: str, error_uri: str, desc: str, details: Any = _MISSING) -> str:
    """CALLERROR with 4 elements, or 5 when ``details`` is given (never null)."""
    if details is _MISSING or details is None:
        return encode_json([CALLERROR, call_id, error_uri, desc])
    return encode_json([CALLERROR, call_id, error_uri, desc, details])


def event(topic_uri: str, payload: Any) -> str:
    return encode_json([EVENT, topic_uri, payload])
