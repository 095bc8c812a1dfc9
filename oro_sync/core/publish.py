"""The publish contract of the core: what a client asked, and what is delivered.

Two steps, two types, neither tied to a wire protocol:

- :class:`PublishRequest` is what a front end (WAMP v1 or v2) fills in from
  a client's PUBLISH and hands to the :class:`~oro_sync.core.policy.IPubSubPolicy`:
  the topic, the event, who published, and the publisher's wishes about
  receivers, as the client said them (each policy reads them by its own
  profile, see :mod:`oro_sync.core.profiles`).
- :class:`Publication` is what reaches the broker and the topics once the
  policy (or a topic handler) decided to deliver: normalized receiver sets
  and a publication id.  It is plain data with a versioned dict form
  (:meth:`Publication.to_wire`), so a broker can carry it between nodes.

The publication id is assigned once, by the front end, before anything is
delivered: a WAMP v2 PUBLISHED and every EVENT of that publish, on every
node, carry the same id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Collection

from oro_sync.core.payload import Payload

#: Largest WAMP id (2^53, exact in every JSON implementation).
MAX_ID = 2 ** 53

#: Version of :meth:`Publication.to_wire`'s format.
WIRE_VERSION = 1


def new_id() -> int:
    """A random id in [1, 2^53] (WAMP session, publication, subscription ids)."""
    return secrets.randbelow(MAX_ID) + 1


@dataclass(frozen=True)
class PublishRequest:
    """A client's publish, as the policy sees it.

    ``exclude_me`` is the publisher's explicit yes/no (None: it said
    nothing); ``exclude_flag`` reads the same wish loosely, as Ratchet did
    (a WAMP v1 client may send any truthy value instead of ``true``), which
    is what Oro's handlers expect.  ``exclude`` and ``eligible`` are session
    ids as given, or None when not given.
    """

    topic: str
    event: Any
    publisher: str
    publication_id: int
    exclude_me: bool | None = None
    exclude_flag: bool = False
    exclude: tuple[str, ...] | None = None
    eligible: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Publication:
    """An event on its way to a topic's subscribers, on this and other nodes.

    ``exclude`` names session ids to skip; ``eligible`` names the only ones
    that may receive it, or is None for everyone.  ``origin`` is the node
    that published it ("" for this one).
    """

    topic: str
    event: Any
    exclude: frozenset = frozenset()
    eligible: frozenset | None = None
    publication_id: int = 0
    origin: str = ""

    @classmethod
    def of(cls, topic: str, event: Any, exclude: Collection[str] = (),
           eligible: Collection[str] | None = None, publication_id: int = 0,
           origin: str = "") -> "Publication":
        return cls(topic, event, frozenset(exclude) if exclude else frozenset(),
                   frozenset(eligible) if eligible is not None else None,
                   publication_id or new_id(), origin)

    def to_wire(self) -> dict:
        """The versioned, JSON-serializable form a broker sends between nodes."""
        event = self.event
        wire: dict[str, Any] = {"v": WIRE_VERSION, "topic": self.topic, "id": self.publication_id,
                                "origin": self.origin, "exclude": sorted(self.exclude),
                                "eligible": None if self.eligible is None else sorted(self.eligible)}
        if type(event) is Payload:
            wire["args"], wire["kwargs"] = event.args, event.kwargs
        else:
            wire["event"] = event
        return wire

    @classmethod
    def from_wire(cls, wire: dict) -> "Publication":
        """Read :meth:`to_wire`'s form; ValueError for anything else."""
        try:
            if wire.get("v") != WIRE_VERSION:
                raise ValueError(f"unknown publication format version {wire.get('v')!r}")
            event = wire["event"] if "event" in wire else Payload(wire["args"], wire["kwargs"])
            eligible = wire["eligible"]
            publication_id = wire["id"]
            if type(publication_id) is not int or not 0 <= publication_id < 2 ** 63:
                raise ValueError(f"publication id {clip_repr(publication_id)} is not an integer id")
            return cls(str(wire["topic"]), event, frozenset(map(str, wire["exclude"])),
                       None if eligible is None else frozenset(map(str, eligible)),
                       publication_id, str(wire["origin"]))
        except (KeyError, TypeError, AttributeError, OverflowError) as e:
            raise ValueError(f"malformed publication: {e!r}") from None


def clip_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut short, for an error about a foreign message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
