"""WAMP v1 pub/sub in the AutobahnPython 0.8 style (the reference rules).

Topics must be registered before clients can use them
(:meth:`PubSubRegistry.registerForPubSub`); a SUBSCRIBE to anything else is
refused (:class:`SubscriptionDenied`: silence for WAMP v1, an ERROR for v2)
and a PUBLISH is dropped.  This is the default policy of the server factory,
for either WAMP version.  Handlers may refuse a subscription or
rewrite (or drop) a published event.  Delivery follows the Autobahn profile
(exclude the publisher by default, exclude list precedence, eligible
intersection).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.logger import LogLevel

from oro_sync.logs import Logger, clip
from zope.interface import implementer

from oro_sync.core.policy import IPubSubPolicy, SubscriptionDenied
from oro_sync.core.profiles import autobahn_receivers
from oro_sync.core.publish import Publication, PublishRequest

SUBSCRIBE = 1
PUBLISH = 2

_SUB_ATTR = "_oro_sync_sub"
_PUB_ATTR = "_oro_sync_pub"


def exportSub(topicUri: str, prefixMatch: bool = False) -> Callable:
    """Mark a method as the subscription handler of ``baseUri + topicUri``."""
    def mark(func: Callable) -> Callable:
        setattr(func, _SUB_ATTR, (topicUri, prefixMatch))
        return func
    return mark


def exportPub(topicUri: str, prefixMatch: bool = False) -> Callable:
    """Mark a method as the publication handler of ``baseUri + topicUri``."""
    def mark(func: Callable) -> Callable:
        setattr(func, _PUB_ATTR, (topicUri, prefixMatch))
        return func
    return mark


class _Registration:
    __slots__ = ("uri", "prefix_match", "pubsub", "sub_handler", "pub_handler")

    def __init__(self, uri: str, prefix_match: bool, pubsub: int):
        self.uri = uri
        self.prefix_match = prefix_match
        self.pubsub = pubsub
        self.sub_handler: Callable | None = None
        self.pub_handler: Callable | None = None


def _bind(obj: Any, handler: Callable) -> Callable:
    if obj is None or inspect.ismethod(handler):
        return handler
    return lambda *args: handler(obj, *args)


class PubSubRegistry:
    """Which topic URIs (exact or by prefix) allow subscribe and/or publish."""

    def __init__(self) -> None:
        self._exact: dict[str, _Registration] = {}
        self._prefixes: dict[str, _Registration] = {}

    def _entry(self, uri: str, prefix_match: bool, pubsub: int) -> _Registration:
        table = self._prefixes if prefix_match else self._exact
        reg = table.get(uri)
        if reg is None:
            reg = table[uri] = _Registration(uri, prefix_match, 0)
        reg.pubsub |= pubsub
        return reg

    def registerForPubSub(self, topicUri: str, prefixMatch: bool = False,
                          pubsub: int = PUBLISH | SUBSCRIBE) -> None:
        self._entry(topicUri, prefixMatch, pubsub)

    def registerHandlerForSub(self, obj: Any, topicUri: str, handler: Callable,
                              prefixMatch: bool = False) -> None:
        """``handler(topicUriPrefix, topicUriSuffix) -> bool`` decides each subscription."""
        self._entry(topicUri, prefixMatch, SUBSCRIBE).sub_handler = _bind(obj, handler)

    def registerHandlerForPub(self, obj: Any, topicUri: str, handler: Callable,
                              prefixMatch: bool = False) -> None:
        """``handler(topicUriPrefix, topicUriSuffix, event)`` returns the event
        to deliver, or ``None`` to drop the publication."""
        self._entry(topicUri, prefixMatch, PUBLISH).pub_handler = _bind(obj, handler)

    def registerHandlerForPubSub(self, obj: Any, baseUri: str = "") -> None:
        """Register every ``@exportSub`` / ``@exportPub`` method of ``obj``."""
        for _, member in inspect.getmembers(obj, callable):
            sub = getattr(member, _SUB_ATTR, None)
            if sub is not None:
                self.registerHandlerForSub(None, baseUri + sub[0], member, sub[1])
            pub = getattr(member, _PUB_ATTR, None)
            if pub is not None:
                self.registerHandlerForPub(None, baseUri + pub[0], member, pub[1])

    def lookup(self, uri: str, action: int) -> _Registration | None:
        """The registration allowing ``action`` on ``uri``: exact first, then
        the longest matching prefix."""
        reg = self._exact.get(uri)
        if reg is not None and reg.pubsub & action:
            return reg
        best = None
        for prefix, reg in self._prefixes.items():
            if reg.pubsub & action and uri.startswith(prefix):
                if best is None or len(prefix) > len(best.uri):
                    best = reg
        return best


@implementer(IPubSubPolicy)
class AutobahnPubSub:
    """The WAMP v1 reference behaviour on top of the hub."""

    log = Logger()

    def __init__(self, hub: Any, registry: PubSubRegistry, observer: Any = None):
        self.hub = hub
        self.registry = registry
        #: Gets onClientSubscribed/onClientUnsubscribed(session, uri), if set.
        self.observer = observer

    def _lookup(self, session: Any, uri: str, action: int) -> _Registration | None:
        own = getattr(session, "pubsub_registry", None)
        if own is not None:
            reg = own.lookup(uri, action)
            if reg is not None:
                return reg
        return self.registry.lookup(uri, action)

    def subscribe(self, session: Any, topic_uri: str) -> None:
        reg = self._lookup(session, topic_uri, SUBSCRIBE)
        if reg is None:
            raise SubscriptionDenied(f"{topic_uri} is not registered for subscription")
        if reg.sub_handler is not None:
            prefix, suffix = _split(reg, topic_uri)
            try:
                allowed = reg.sub_handler(prefix, suffix)
            except Exception:
                self.log.failure("subscription handler failed for {topic}", topic=clip(topic_uri),
                                 level=LogLevel.error)
                raise SubscriptionDenied("the subscription handler failed") from None
            if not allowed:
                raise SubscriptionDenied("refused by the subscription handler")
        topic = self.hub.subscribe(session, topic_uri)
        if topic is not None and self.observer is not None:
            self.observer.onClientSubscribed(session, topic_uri)

    def unsubscribe(self, session: Any, topic_uri: str) -> None:
        if self.hub.topics.unsubscribe(session, topic_uri) is not None and self.observer is not None:
            self.observer.onClientUnsubscribed(session, topic_uri)

    def publish(self, session: Any, request: PublishRequest) -> bool:
        topic_uri = request.topic
        reg = self._lookup(session, topic_uri, PUBLISH)
        if reg is None:
            return False
        event = request.event
        if reg.pub_handler is not None:
            prefix, suffix = _split(reg, topic_uri)
            try:
                event = reg.pub_handler(prefix, suffix, event)
            except Exception:
                self.log.failure("publication handler failed for {topic}", topic=clip(topic_uri),
                                 level=LogLevel.error)
                return False
            if event is None:
                return False
        exclude, eligible = autobahn_receivers(session.session_id, request.exclude_me,
                                               request.exclude, request.eligible)
        self.hub.broker.publish(Publication(topic_uri, event, exclude, eligible, request.publication_id))
        return True

    def session_closed(self, session: Any) -> None:
        for uri in list(session.subscriptions):
            self.unsubscribe(session, uri)


def _split(reg: _Registration, uri: str) -> tuple[str, str]:
    if reg.prefix_match:
        return reg.uri, uri[len(reg.uri):]
    return uri, ""
