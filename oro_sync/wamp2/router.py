"""What every WAMP v2 session of one server shares.

One subscription id per topic, so that every v2 subscriber of a topic gets
the same EVENT frame, built once per publish; the dealer of routed RPC;
the realms clients may join; and who may register procedures (a rule the
server injects, so this package knows nothing of tickets or users).
"""

from __future__ import annotations

from typing import Any, Callable

from oro_sync.core.frames import text_frame
from oro_sync.core.payload import to_v2
from oro_sync.core.publish import new_id
from oro_sync.wamp2 import messages as m
from oro_sync.wamp2.dealer import Dealer


class Wamp2Router:
    """State shared by every WAMP v2 session of one factory.

    :param realms: the realms a client may join (None: any).
    :param may_register: ``may_register(identity) -> bool``.
    """

    def __init__(self, hub: Any, realms: frozenset[str] | None = None,
                 may_register: Callable[[Any], bool] = lambda identity: False,
                 **dealer_limits: int):
        self.hub = hub
        self.realms = realms
        self.may_register = may_register
        #: dealer_limits: Dealer's max_callee_invocations / max_call_size.
        self.dealer = Dealer(new_id, **dealer_limits)
        self._subscription_ids: dict[str, int] = {}
        # Frames encoded for one topic while a SUBSCRIBE's handlers run (see watch()).
        self._watched_uri: str | None = None
        self._watched: list[bytes] = []
        #: The v2 sessions' encoder: one identity, so v2 sessions share frames.
        self.encoder: Callable[[Any, Any, int], bytes] = self._encode
        hub.topics.on_removed.append(self._topic_removed)

    def subscription_id(self, uri: str) -> int:
        sub = self._subscription_ids.get(uri)
        if sub is None:
            sub = self._subscription_ids[uri] = new_id()
        return sub

    def _topic_removed(self, topic: Any) -> None:
        self._subscription_ids.pop(topic.uri, None)

    def watch(self, uri: str | None) -> list[bytes]:
        """Start (``uri``) or stop (None) remembering the EVENT frames encoded
        for ``uri``; returns those remembered so far.  A refused SUBSCRIBE
        drops them from the held output: they belong to a subscription the
        client will never know."""
        seen = self._watched
        self._watched_uri, self._watched = uri, []
        return seen

    def _encode(self, topic: Any, event: Any, publication_id: int) -> bytes:
        args, kwargs = to_v2(event)
        data = text_frame(m.event(self.subscription_id(topic.uri), publication_id or new_id(), args, kwargs))
        if self._watched_uri is not None and topic.uri == self._watched_uri:
            self._watched.append(data)
        return data
