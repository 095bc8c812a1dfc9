"""WAMP v2 messages: parsing and validation, with no I/O.

The router side of the WAMP v2 basic profile: what a client may send is
turned into one of the message classes below, or into a :class:`ProtocolError`
(the session is then aborted with ``wamp.error.protocol_violation``), or an
:class:`InvalidRequest` when the request id is known and the answer is an
ERROR for that request only.  JSON is decoded as strictly as for WAMP v1 (no
NaN, no infinities), so whatever is accepted can be sent on; MessagePack and
CBOR messages are decoded by :mod:`oro_sync.wamp2.serializers` and
validated here by :func:`parse_value`.

This module is the one entry point of the v2 grammar: the session, broker
and dealer use ``from oro_sync.wamp2 import messages as m`` and find here
the numbers and URIs of :mod:`oro_sync.wamp2.codes` and the router-to-client
encoders of :mod:`oro_sync.wamp2.encode` (``m.event(...)``), re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from oro_sync.wamp.codec import JsonError, encode_json
from oro_sync.wamp.codec import decode_json as _decode_json
from oro_sync.wamp2 import codes, encode
from oro_sync.wamp2.codes import (  # noqa: F401 (re-exported, see above)
    ABORT, AUTHENTICATE, CALL, CANCEL, CHALLENGE, ERROR_CANCELED, ERROR_NO_AUTH_METHOD, CLOSE_GOODBYE_AND_OUT, CLOSE_NORMAL, CLOSE_SYSTEM_SHUTDOWN, ERROR,
    ERROR_INVALID_ARGUMENT, ERROR_INVALID_URI, ERROR_NO_SUCH_PROCEDURE, ERROR_NO_SUCH_REALM,
    ERROR_NO_SUCH_REGISTRATION, ERROR_NO_SUCH_SUBSCRIPTION, ERROR_NOT_AUTHORIZED,
    ERROR_PROTOCOL_VIOLATION, ERROR_RUNTIME, EVENT, GOODBYE, HELLO, INTERRUPT, INVOCATION, MAX_ID,
    PUBLISH, PUBLISHED, REGISTER, REGISTERED, RESULT, SUBSCRIBE, SUBSCRIBED, UNREGISTER,
    UNREGISTERED, UNSUBSCRIBE, UNSUBSCRIBED, WELCOME, YIELD,
)
from oro_sync.wamp2.encode import (  # noqa: F401 (re-exported, see above)
    abort, challenge, error, event, goodbye, interrupt, invocation, progress, published, registered, result, subscribed,
    unregistered, unsubscribed, welcome,
)

__all__ = ["encode_json", "parse_message", "parse_value", "ProtocolError", "InvalidRequest", "valid_uri",
           *codes.__all__, *encode.__all__]

_ROLES = ("publisher", "subscriber", "caller", "callee")
_SERVER_TO_CLIENT = {CHALLENGE: "CHALLENGE", INTERRUPT: "INTERRUPT", WELCOME: "WELCOME", PUBLISHED: "PUBLISHED", SUBSCRIBED: "SUBSCRIBED",
                     UNSUBSCRIBED: "UNSUBSCRIBED", EVENT: "EVENT", RESULT: "RESULT",
                     REGISTERED: "REGISTERED", UNREGISTERED: "UNREGISTERED", INVOCATION: "INVOCATION"}


class ProtocolError(Exception):
    """A message that breaks the protocol: the session is aborted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidRequest(Exception):
    """A request whose type and id could be read but which is otherwise bad:
    answered with ERROR ``error_uri`` for that request; the session goes on."""

    def __init__(self, request_type: int, request_id: int, error_uri: str, reason: str):
        super().__init__(reason)
        self.request_type = request_type
        self.request_id = request_id
        self.error_uri = error_uri
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hello:
    realm: str
    details: dict


@dataclass(frozen=True, slots=True)
class Authenticate:
    """The client's answer to CHALLENGE (WAMP-Ticket: the ticket itself)."""

    signature: str
    extra: dict


@dataclass(frozen=True, slots=True)
class Abort:
    details: dict
    reason: str


@dataclass(frozen=True, slots=True)
class Goodbye:
    details: dict
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    """An ERROR from a client (a callee answering an INVOCATION)."""

    request_type: int
    request_id: int
    details: dict
    error: str
    args: list | None = None
    kwargs: dict | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    request_id: int
    options: dict
    topic: str
    args: list | None = None
    kwargs: dict | None = None
    acknowledge: bool = False
    exclude_me: bool = True
    exclude: tuple[int, ...] | None = None
    eligible: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    request_id: int
    options: dict
    topic: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    request_id: int
    subscription: int


@dataclass(frozen=True, slots=True)
class Call:
    request_id: int
    options: dict
    procedure: str
    args: list | None = None
    kwargs: dict | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: int
    options: dict


@dataclass(frozen=True, slots=True)
class Register:
    request_id: int
    options: dict
    procedure: str


@dataclass(frozen=True, slots=True)
class Unregister:
    request_id: int
    registration: int


@dataclass(frozen=True, slots=True)
class Yield:
    request_id: int
    options: dict
    args: list | None = None
    kwargs: dict | None = None


Message = Union[Hello, Authenticate, Abort, Goodbye, Error, Publish, Subscribe, Unsubscribe, Call, Cancel, Register,
                Unregister, Yield]


def decode_json(payload: bytes | str) -> Any:
    try:
        return _decode_json(payload)
    except JsonError as e:
        raise ProtocolError(e.reason) from None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def valid_uri(value: Any) -> bool:
    """The specification's loose URI rule: non-empty dot-separated components
    without whitespace or ``#`` (``oro/data/update`` is one component)."""
    if not isinstance(value, str) or not value:
        return False
    for part in value.split("."):
        if not part or "#" in part or any(c.isspace() for c in part):
            return False
    return True


#: Longest URI (topic, procedure, realm, error) by default: what a
#: subscription or registration may keep in memory.
MAX_URI_CHARS = 512


class _Reader:
    """Field access for one message, raising the right error for each field."""

    __slots__ = ("msg", "name", "kind", "request_id", "max_uri")

    def __init__(self, msg: list, name: str, kind: int, max_uri: int = MAX_URI_CHARS):
        self.msg, self.name, self.kind = msg, name, kind
        self.request_id: int | None = None
        self.max_uri = max_uri

    def bad(self, reason: str, error_uri: str = ERROR_INVALID_ARGUMENT) -> Exception:
        if self.request_id is None:
            return ProtocolError(f"{self.name}: {reason}")
        return InvalidRequest(self.kind, self.request_id, error_uri, f"{self.name}: {reason}")

    def length(self, lo: int, hi: int) -> None:
        if not lo <= len(self.msg) <= hi:
            what = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise ProtocolError(f"{self.name} takes {what} elements")

    def id(self, i: int, what: str) -> int:
        value = self.msg[i]
        if not _is_id(value):
            raise self.bad(f"{what} must be an integer in [0, 2^53]")
        return value

    def request(self, i: int = 1) -> int:
        value = self.id(i, "request id")
        self.request_id = value
        return value

    def dict(self, i: int, what: str) -> dict:
        value = self.msg[i] if i < len(self.msg) else {}
        if not isinstance(value, dict):
            raise self.bad(f"{what} must be a dict")
        return value

    def uri(self, i: int, what: str) -> str:
        value = self.msg[i]
        if not valid_uri(value):
            raise self.bad(f"invalid {what} URI", ERROR_INVALID_URI)
        if self.max_uri and len(value) > self.max_uri:
            raise self.bad(f"{what} URI longer than {self.max_uri} characters", ERROR_INVALID_URI)
        return value

    def payload(self, i: int) -> tuple[list | None, dict | None]:
        args = self.msg[i] if i < len(self.msg) else None
        kwargs = self.msg[i + 1] if i + 1 < len(self.msg) else None
        if args is not None and not isinstance(args, list):
            raise self.bad("Arguments must be a list")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise self.bad("ArgumentsKw must be a dict")
        return args, kwargs


def _id_list(r: _Reader, options: dict, key: str) -> tuple[int, ...] | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_id(x) for x in value):
        raise r.bad(f"option {key} must be a list of session ids")
    return tuple(value)


def _bool_option(r: _Reader, options: dict, key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise r.bad(f"option {key} must be a bool")
    return value


def parse_message(payload: bytes | str, max_uri: int = MAX_URI_CHARS) -> Message:
    """Parse and validate one client-to-router WAMP v2 message (JSON)."""
    return parse_value(decode_json(payload), max_uri)


def parse_value(msg: Any, max_uri: int = MAX_URI_CHARS) -> Message:
    """Validate one decoded client-to-router message (any serializer); URIs
    longer than ``max_uri`` characters are refused (0: no bound)."""
    if not isinstance(msg, list) or not msg:
        raise ProtocolError("a WAMP message must be a non-empty array")
    kind = msg[0]
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise ProtocolError("a WAMP message must start with an integer type id")
    if kind == PUBLISH:
        r = _Reader(msg, "PUBLISH", kind, max_uri)
        r.length(4, 6)
        req = r.request()
        options = r.dict(2, "Options")
        topic = r.uri(3, "topic")
        args, kwargs = r.payload(4)
        return Publish(req, options, topic, args, kwargs,
                       acknowledge=_bool_option(r, options, "acknowledge", False),
                       exclude_me=_bool_option(r, options, "exclude_me", True),
                       exclude=_id_list(r, options, "exclude"),
                       eligible=_id_list(r, options, "eligible"))
    if kind == SUBSCRIBE or kind == REGISTER:
        # [kind, Request, Options, URI]: SUBSCRIBE a topic, REGISTER a procedure.
        topic = kind == SUBSCRIBE
        r = _Reader(msg, "SUBSCRIBE" if topic else "REGISTER", kind, max_uri)
        r.length(4, 4)
        req = r.request()
        options = r.dict(2, "Options")
        match = options.get("match", "exact")
        if match != "exact":
            raise r.bad(f"match {match!r} is not supported (only exact)")
        uri = r.uri(3, "topic" if topic else "procedure")
        return Subscribe(req, options, uri) if topic else Register(req, options, uri)
    if kind == UNSUBSCRIBE or kind == UNREGISTER:
        # [kind, Request, id]: the SUBSCRIBED or REGISTERED id to give back.
        topic = kind == UNSUBSCRIBE
        r = _Reader(msg, "UNSUBSCRIBE" if topic else "UNREGISTER", kind, max_uri)
        r.length(3, 3)
        req = r.request()
        if topic:
            return Unsubscribe(req, r.id(2, "subscription id"))
        return Unregister(req, r.id(2, "registration id"))
    if kind == CALL:
        r = _Reader(msg, "CALL", kind, max_uri)
        r.length(4, 6)
        req = r.request()
        options = r.dict(2, "Options")
        procedure = r.uri(3, "procedure")
        args, kwargs = r.payload(4)
        return Call(req, options, procedure, args, kwargs)
    if kind == CANCEL:
        r = _Reader(msg, "CANCEL", kind, max_uri)
        r.length(3, 3)
        req = r.id(1, "CALL request id")
        return Cancel(req, r.dict(2, "Options"))
    if kind == YIELD:
        r = _Reader(msg, "YIELD", kind, max_uri)
        r.length(3, 5)
        req = r.id(1, "INVOCATION request id")
        options = r.dict(2, "Options")
        args, kwargs = r.payload(3)
        return Yield(req, options, args, kwargs)
    if kind == ERROR:
        r = _Reader(msg, "ERROR", kind, max_uri)
        r.length(5, 7)
        if msg[1] != INVOCATION:
            raise ProtocolError("a client may send ERROR only for an INVOCATION")
        req = r.id(2, "INVOCATION request id")
        details = r.dict(3, "Details")
        error = r.uri(4, "error")
        args, kwargs = r.payload(5)
        return Error(INVOCATION, req, details, error, args, kwargs)
    if kind == HELLO:
        r = _Reader(msg, "HELLO", kind, max_uri)
        r.length(3, 3)
        realm = r.uri(1, "realm")
        details = r.dict(2, "Details")
        roles = details.get("roles")
        if not isinstance(roles, dict) or not any(role in roles for role in _ROLES):
            raise ProtocolError("HELLO Details.roles must name at least one client role")
        return Hello(realm, details)
    if kind == AUTHENTICATE:
        r = _Reader(msg, "AUTHENTICATE", kind)
        r.length(3, 3)
        if not isinstance(msg[1], str):
            raise ProtocolError("AUTHENTICATE Signature must be a string")
        return Authenticate(msg[1], r.dict(2, "Extra"))
    if kind == GOODBYE or kind == ABORT:
        name = "GOODBYE" if kind == GOODBYE else "ABORT"
        r = _Reader(msg, name, kind, max_uri)
        r.length(3, 3)
        details = r.dict(1, "Details")
        reason = r.uri(2, "reason")
        return Goodbye(details, reason) if kind == GOODBYE else Abort(details, reason)
    if kind in _SERVER_TO_CLIENT:
        raise ProtocolError(f"{_SERVER_TO_CLIENT[kind]} is a router-to-client message")
    raise ProtocolError(f"unknown WAMP message type {kind}")
