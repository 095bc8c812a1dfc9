"""Strict JSON for WAMP messages (both versions), with no I/O.

Strict both ways: NaN, infinities and numbers Python would read as infinite
are refused on input, so whatever is accepted can be sent on to any client.
"""

from __future__ import annotations

import json
import math
from typing import Any


class JsonError(ValueError):
    """A client's message is not strict JSON; ``reason`` says why, briefly."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON does not allow {name}")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON, but Python reads it as inf, which JSON cannot carry back out.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def short(e: BaseException) -> str:
    """An exception's text, at most 80 characters."""
    text = str(e) or e.__class__.__name__
    return text if len(text) <= 80 else text[:77] + "..."


def decode_json(payload: bytes | str) -> Any:
    """Decode one JSON text strictly (no NaN/Infinity); raise JsonError."""
    try:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            payload = bytes(payload).decode("utf-8")
        return _decoder.decode(payload)
    except (ValueError, RecursionError) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise JsonError(f"invalid JSON: {short(e)}") from None


def encode_json(value: Any) -> str:
    """Encode compactly as strict JSON (what every WAMP client can parse)."""
    return _encoder.encode(value)
