"""What the core needs from a connected client, whatever its protocol."""

from __future__ import annotations

import secrets
from typing import Any, Callable

from zope.interface import Attribute, Interface

#: Turns (topic, event, publication id) into the bytes one front end writes
#: to its peers; the id is 0 for node-local events (the encoder picks one).
EventEncoder = Callable[[Any, Any, int], bytes]


class ISession(Interface):
    """A connected client as seen by the core and by topic handlers."""

    session_id = Attribute("Unique, unguessable session id (str); what exclude/eligible lists name.")
    identity = Attribute("Who the client is (an oro_sync.identity.Identity).")
    subscriptions = Attribute("Set of topic URIs this session is subscribed to (kept by the core).")
    encoder = Attribute("EventEncoder of this session's front end; sessions sharing it share frames.")

    def send_frame(data: bytes) -> None:
        """Write pre-framed bytes to the peer (dropped if it is no longer open)."""

    def close(code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code and reason."""

    protocol = Attribute("The WebSocket subprotocol the session speaks ('wamp', 'wamp.2.json').")


def new_session_id() -> str:
    """16 characters of ``[A-Za-z0-9_-]`` from the OS CSPRNG (96 bits)."""
    return secrets.token_urlsafe(12)
