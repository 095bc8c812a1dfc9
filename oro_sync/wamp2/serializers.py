"""The three WAMP v2 serializers: ``wamp.2.json``, ``wamp.2.msgpack``, ``wamp.2.cbor``.

A :class:`Serializer` turns a message (a list) into the bytes of one
WebSocket message and back.  The connection picks one by the negotiated
subprotocol and the session keeps it for its lifetime; the router builds
one EVENT frame per serializer per publish (:mod:`oro_sync.wamp2.router`).

Encoding uses Autobahn's own object serializers for MessagePack and CBOR
(the bytes every Autobahn client expects) and the strict JSON codec shared
with WAMP v1.  Decoding calls ``msgpack`` and ``cbor2`` directly, with
bounds Autobahn does not set: what a client sends must decode to values
every other client can receive -- JSON's types (no binary strings, tags,
extension types, NaN or infinities), integers of at most 64 bits, nested
at most :data:`MAX_DEPTH` deep -- because an event published in MessagePack
goes on to JSON and WAMP v1 subscribers, and one published in JSON to
MessagePack subscribers (JSON clients are held to the same bounds).  Anything else is a :class:`SerializationError`,
which the session answers as a protocol violation.  Message size is bounded
before this, by the WebSocket layer (``server.max_message_size``).
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
import msgpack
import txaio

# autobahn.wamp.serializer binds txaio's clock when first imported: choose
# Twisted before, or Autobahn's own WAMP clients in this process would break.
txaio.use_twisted()

from autobahn.wamp.serializer import CBORObjectSerializer, MsgPackObjectSerializer  # noqa: E402

from oro_sync.core.frames import OPCODE_BINARY, OPCODE_TEXT, frame  # noqa: E402
from oro_sync.wamp.codec import JsonError, decode_json, encode_json, short  # noqa: E402

__all__ = ["MAX_DEPTH", "SERIALIZERS", "SerializationError", "Serializer", "JSON", "MSGPACK", "CBOR"]

#: How deep a decoded message may nest (a WAMP message is a list holding a
#: payload: 64 levels leave applications plenty).
MAX_DEPTH = 64

_SCALARS = (str, int, type(None))


class SerializationError(ValueError):
    """A client's message does not decode, or not to WAMP-safe values."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


#: The integers every serializer carries (MessagePack's range).
MIN_INT, MAX_INT = -(2 ** 63), 2 ** 64 - 1


def check_value(value: Any, what: str) -> None:
    """Raise SerializationError unless ``value`` holds only JSON's types
    (dicts with string keys, integers of at most 64 bits), nested at most
    MAX_DEPTH deep: then every serializer can send it on.  Iterative, so a
    hostile nesting cannot exhaust the stack.

    Each container must appear once: CBOR's shared references (tags 28/29)
    decode a few hundred bytes into a graph whose tree walk (and whose
    re-encoding for other clients) doubles with every level.  JSON and
    MessagePack cannot share, so for them the check never fires."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    seen: set[int] = set()
    while stack:
        v, depth = pop()
        t = type(v)
        if t is int:
            if not MIN_INT <= v <= MAX_INT:
                raise SerializationError(f"{what}: an integer beyond 64 bits cannot be relayed")
            continue
        if isinstance(v, _SCALARS) or v is True or v is False:
            continue
        if depth > MAX_DEPTH:
            raise SerializationError(f"{what}: nested deeper than {MAX_DEPTH} levels")
        if t is list or t is dict:
            ident = id(v)
            if ident in seen:
                raise SerializationError(f"{what}: a value shared by reference cannot be relayed")
            seen.add(ident)
        if t is list:
            for x in v:
                push((x, depth + 1))
        elif t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    raise SerializationError(f"{what}: map keys must be strings")
                push((x, depth + 1))
        elif t is float:
            if not math.isfinite(v):
                raise SerializationError(f"{what}: NaN and infinities cannot be relayed")
        else:
            raise SerializationError(f"{what}: a {t.__name__} value cannot be relayed "
                                     "(only JSON's types)")


class Serializer:
    """One WAMP v2 serializer (see the module docstring)."""

    #: The WebSocket subprotocol, the short name, and the frame type.
    subprotocol = ""
    name = ""
    binary = False

    def encode(self, msg: list) -> bytes:
        """The payload of one WebSocket message (raises TypeError/ValueError
        for values the format cannot carry)."""
        raise NotImplementedError

    def decode(self, payload: bytes) -> Any:
        """The value of one client message; raises SerializationError."""
        raise NotImplementedError

    def frame(self, msg: list) -> bytes:
        """``msg`` as a complete server WebSocket frame (for events)."""
        return frame(self.encode(msg), OPCODE_BINARY if self.binary else OPCODE_TEXT)

    def __repr__(self) -> str:
        return f"<Serializer {self.subprotocol}>"


class JsonSerializer(Serializer):
    subprotocol, name, binary = "wamp.2.json", "json", False

    def encode(self, msg: list) -> bytes:
        return encode_json(msg).encode("utf-8")

    def decode(self, payload: bytes) -> Any:
        # The strict JSON codec of both WAMP versions (no NaN, no infinities),
        # and the bounds of the other serializers: what a JSON client sends
        # must reach MessagePack and CBOR clients too.
        try:
            value = decode_json(payload)
        except JsonError as e:
            raise SerializationError(e.reason) from None
        check_value(value, "JSON")
        return value


class MsgPackSerializer(Serializer):
    subprotocol, name, binary = "wamp.2.msgpack", "msgpack", True

    def __init__(self) -> None:
        self._encode = MsgPackObjectSerializer().serialize

    def encode(self, msg: list) -> bytes:
        return self._encode(msg)

    def decode(self, payload: bytes) -> Any:
        try:
            # Lengths are bounded by msgpack from len(payload); nesting by
            # its fixed stack (StackError) and then by check_value.
            value = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
        except Exception as e:  # msgpack raises several unrelated types
            raise SerializationError(f"invalid MessagePack: {short(e)}") from None
        check_value(value, "MessagePack")
        return value


class CBORSerializer(Serializer):
    subprotocol, name, binary = "wamp.2.cbor", "cbor", True

    def __init__(self) -> None:
        self._encode = CBORObjectSerializer().serialize

    def encode(self, msg: list) -> bytes:
        return self._encode(msg)

    def decode(self, payload: bytes) -> Any:
        try:
            value = cbor2.loads(payload, max_depth=MAX_DEPTH + 1)
        except Exception as e:  # CBORDecodeError, and whatever a tag decoder raises
            raise SerializationError(f"invalid CBOR: {short(e)}") from None
        check_value(value, "CBOR")
        return value


JSON = JsonSerializer()
MSGPACK = MsgPackSerializer()
CBOR = CBORSerializer()

#: Serializer by subprotocol, in the order the server lists them.
SERIALIZERS: dict[str, Serializer] = {s.subprotocol: s for s in (JSON, MSGPACK, CBOR)}
