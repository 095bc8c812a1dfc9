"""Server-to-client WebSocket frames built once and written to many peers.

The fan-out path encodes an event's JSON and frames it a single time; every
receiver then gets the very same bytes object (no per-subscriber encoding,
masking or copying).  Server frames are never masked (RFC 6455, 5.1).
"""

from __future__ import annotations

import struct

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2

_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


def frame(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """One final, unmasked, uncompressed data frame holding ``payload``."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _pack_16(first, 126, n) + payload
    return _pack_64(first, 127, n) + payload


def text_frame(text: str) -> bytes:
    """Frame a text message (UTF-8 encoded)."""
    return frame(text.encode("utf-8"), OPCODE_TEXT)
