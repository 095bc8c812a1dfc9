"""Strict JSON for WAMP messages (both versions), with no I/O.

Strict both ways: NaN, infinities and numbers Python would read as infinite
are refused on input, and so are lone UTF-16 surrogates (``"\\ud800"`` is
valid JSON but no Unicode text: it could never be encoded back to UTF-8),
so whatever is accepted can be sent on to any client.
"""

from __future__ import annotations

import json
import math
import re
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


#: A \uD800-\uDFFF escape (or a raw surrogate in a str): only texts holding
#: one can decode to a surrogate (bytes are checked as UTF-8 first).
_SURROGATE_ESCAPE = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")

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
        value = _decoder.decode(payload)
    except (ValueError, RecursionError) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise JsonError(f"invalid JSON: {short(e)}") from None
    # Valid pairs were combined by the decoder; what is left alone cannot be
    # encoded. The scan of the text is cheap, the walk rare.
    if _SURROGATE_ESCAPE.search(payload) is not None and not _encodable(value):
        raise JsonError("invalid JSON: lone UTF-16 surrogate (not Unicode text)")
    return value


def _encodable(value: Any) -> bool:
    """True when every string in ``value`` (keys too) is valid Unicode."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return True


def encode_json(value: Any) -> str:
    """Encode compactly as strict JSON (what every WAMP client can parse)."""
    return _encoder.encode(value)
