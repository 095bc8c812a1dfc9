"""What every WAMP v2 session of one server shares.

One subscription id per topic, so that every v2 subscriber of a topic gets
the same EVENT frame, built once per publish and serializer (one encoder
per serializer: the core's topics group subscribers by encoder); the dealer of routed RPC;
the realms clients may join; who may register procedures and who may use
the session meta API (rules the server injects, so this package knows
nothing of tickets or users); and the meta API (:mod:`oro_sync.wamp2.meta`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from oro_sync.core.payload import to_v2
from oro_sync.core.publish import new_id
from oro_sync.logs import Logger, clip
from oro_sync.wamp2 import messages as m
from oro_sync.wamp2.dealer import Dealer
from oro_sync.wamp2.meta import MetaApi
from oro_sync.wamp2.serializers import JSON, SERIALIZERS, Serializer


class Wamp2Router:
    """State shared by every WAMP v2 session of one factory.

    :param realms: the realms a client may join (None: any).
    :param may_register: ``may_register(identity) -> bool``.
    :param may_use_meta: ``may_use_meta(identity) -> bool``: who may call the
        meta procedures and subscribe to the meta events (backends).
    """

    _log = Logger()

    def __init__(self, hub: Any, realms: frozenset[str] | None = None,
                 may_register: Callable[[Any], bool] = lambda identity: False,
                 clock: Any = None,
                 may_use_meta: Callable[[Any], bool] = lambda identity: False,
                 **dealer_limits: int):
        self.hub = hub
        self.realms = realms
        self.may_register = may_register
        self.may_use_meta = may_use_meta
        #: dealer_limits: Dealer's max_callee_invocations / max_call_size.
        self.dealer = Dealer(new_id, clock, **dealer_limits)
        self._subscription_ids: dict[str, int] = {}
        self._uris_by_id: dict[int, str] = {}
        self.meta = MetaApi(hub.presence, self.subscription_id, self._uris_by_id.get, self._deliver_meta)
        # Frames encoded for one topic while a SUBSCRIBE's handlers run (see watch()).
        self._watched_uri: str | None = None
        self._watched: list[bytes] = []
        #: One encoder per serializer, each one identity, so that the v2
        #: sessions of a serializer share frames.
        self.encoders: dict[str, Callable[[Any, Any, int], bytes]] = {
            sub: partial(self._encode, serializer) for sub, serializer in SERIALIZERS.items()}
        #: The JSON sessions' encoder.
        self.encoder = self.encoders[JSON.subprotocol]
        hub.topics.on_removed.append(self._topic_removed)

    def subscription_id(self, uri: str) -> int:
        sub = self._subscription_ids.get(uri)
        if sub is None:
            sub = self._subscription_ids[uri] = new_id()
            self._uris_by_id[sub] = uri
        return sub

    def _topic_removed(self, topic: Any) -> None:
        sub = self._subscription_ids.pop(topic.uri, None)
        if sub is not None:
            self._uris_by_id.pop(sub, None)

    def _deliver_meta(self, uri: str, event: Any) -> None:
        topic = self.hub.topics.get(uri)
        if topic is not None:
            topic.deliver(event)

    def watch(self, uri: str | None) -> list[bytes]:
        """Start (``uri``) or stop (None) remembering the EVENT frames encoded
        for ``uri``; returns those remembered so far.  A refused SUBSCRIBE
        drops them from the held output: they belong to a subscription the
        client will never know."""
        seen = self._watched
        self._watched_uri, self._watched = uri, []
        return seen

    def _encode(self, serializer: Serializer, topic: Any, event: Any, publication_id: int) -> bytes | None:
        args, kwargs = to_v2(event)
        try:
            data = serializer.frame(m.event(self.subscription_id(topic.uri), publication_id or new_id(),
                                            args, kwargs))
        except (OverflowError, TypeError, ValueError, RecursionError) as e:
            # JSON carries integers MessagePack cannot (beyond 64 bits): those
            # subscribers miss this event, everyone else gets it.
            self._log.warn("event on {topic} not sent to {serializer} subscribers: {why}",
                           topic=clip(topic.uri), serializer=serializer.name, why=str(e))
            return None
        if self._watched_uri is not None and topic.uri == self._watched_uri:
            self._watched.append(data)
        return data
