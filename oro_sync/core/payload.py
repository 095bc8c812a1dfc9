"""Events that carry WAMP v2's positional and keyword arguments.

The core's event is one JSON value, which is what WAMP v1 and Oro's handlers
know.  A WAMP v2 publish of exactly one positional argument (the usual case)
becomes that value, so v1 and v2 clients see the same event.  Any other shape
is kept whole in a :class:`Payload`, which v2 subscribers receive unchanged
and v1 subscribers receive as :meth:`Payload.v1_value`.
"""

from __future__ import annotations

from typing import Any


class Payload:
    """WAMP v2 ``args`` and ``kwargs`` that are not a single value."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: list | None, kwargs: dict | None):
        self.args = list(args) if args else []
        self.kwargs = dict(kwargs) if kwargs else {}

    def v1_value(self) -> Any:
        """The args list, or the kwargs dict, or both as {"args", "kwargs"}
        (None for neither)."""
        if self.kwargs and self.args:
            return {"args": self.args, "kwargs": self.kwargs}
        if self.kwargs:
            return self.kwargs
        return self.args or None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Payload) and (self.args, self.kwargs) == (other.args, other.kwargs)

    def __repr__(self) -> str:
        return f"Payload({self.args!r}, {self.kwargs!r})"


def from_v2(args: list | None, kwargs: dict | None) -> Any:
    """The core event for a v2 publish's ``args`` / ``kwargs``."""
    if not kwargs and args is not None and len(args) == 1:
        return args[0]
    return Payload(args, kwargs)


def to_v2(event: Any) -> tuple[list, dict | None]:
    """``(args, kwargs)`` for a v2 EVENT carrying the core ``event``."""
    if type(event) is Payload:
        return event.args, event.kwargs or None
    return [event], None
