"""The two PUBLISH semantics of WAMP v1, mapped to normalized receiver sets.

Both take the publisher's wishes as a
:class:`~oro_sync.core.publish.PublishRequest` carries them and return ``(exclude, eligible)`` where ``eligible`` is ``None`` for
"everyone".  See ``wamp-v1.md``: the Autobahn profile is the WAMP v1
reference; the Ratchet profile is what Oro's handlers and PHP backend use.
"""

from __future__ import annotations

from typing import Any, Sequence

EVERYONE = None


def autobahn_receivers(publisher_id: str, exclude_me: bool | None,
                       exclude: Sequence[str] | None,
                       eligible: Sequence[str] | None) -> tuple[frozenset, frozenset | None]:
    """Autobahn profile: excludeMe by default, an exclude list replaces it,
    an eligible list (even an empty one) restricts the receivers."""
    if exclude is not None:
        excluded = frozenset(exclude)
    elif exclude_me is False:
        excluded = frozenset()
    else:
        excluded = frozenset((publisher_id,))
    return excluded, (frozenset(eligible) if eligible is not None else EVERYONE)


def ratchet_exclude(publisher_id: str, exclude: Sequence[str] | None, flag_truthy: bool) -> list[str]:
    """Ratchet profile, as handed to ``onPublish``: a list is used as is, any
    other truthy value means the publisher, anything else nobody."""
    if exclude is not None:
        return list(exclude)
    return [publisher_id] if flag_truthy else []


def ratchet_eligible(eligible: Sequence[str] | None) -> list[str]:
    """Ratchet profile: eligible defaults to [] (which broadcast reads as everyone)."""
    return list(eligible) if eligible is not None else []


def ratchet_receivers(exclude: Any, eligible: Any) -> tuple[frozenset, frozenset | None]:
    """What ``Topic.broadcast(event, exclude, eligible)`` delivers to:
    skip ``exclude``; a non-empty ``eligible`` restricts, an empty one is everyone."""
    return (frozenset(exclude) if exclude else frozenset(),
            frozenset(eligible) if eligible else EVERYONE)
