"""The hub: one node's sessions, topics and broker, shared by every front end."""

from __future__ import annotations

from typing import Any, Callable

from oro_sync.core.broker import IBroker, LocalBroker
from oro_sync.core.outbox import Outbox, WriterFactory
from oro_sync.core.policy import SubscriptionDenied
from oro_sync.core.presence import LocalPresence
from oro_sync.core.publish import Publication
from oro_sync.core.topic import SubscriptionLimitExceeded, Topic, TopicRegistry
from oro_sync.logs import Logger, RepeatLimiter, clip


class Hub:
    """Sessions, topics and the broker of one server node.

    WAMP v1 and WAMP v2 front ends attach their sessions here, so a v1
    browser and a v2 client subscribed to the same URI share one topic.

    :param broker: makes the broker from the topic registry (the broker
        delivers to the registry's topics; topics publish through it);
        :class:`LocalBroker` by default.
    :param writer: the outbox's writer factory (see :mod:`oro_sync.core.outbox`).
    :param outbox: the outbox, when the caller built it (to hand it to the
        broker it makes, which times sampled deliveries through it).
    :param presence: makes the :class:`~oro_sync.core.presence.IPresence`
        from the hub (:class:`LocalPresence`, this node only, by default).
    """

    log = Logger()

    def __init__(self, broker: Callable[[TopicRegistry], IBroker] | None = None,
                 max_subscriptions: int = 0, clock: Any = None,
                 writer: WriterFactory | None = None, metrics: Any = None,
                 presence: Callable[["Hub"], Any] | None = None, outbox: Outbox | None = None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.sessions: dict[str, Any] = {}
        self._repeats = RepeatLimiter(self.log, clock)
        #: Per-turn write batching for every front end's sessions.
        self.outbox = outbox if outbox is not None else Outbox(clock, writer)
        self.topics = TopicRegistry(max_subscriptions=max_subscriptions)
        self.broker: IBroker = (broker(self.topics) if broker is not None
                                else LocalBroker(self.topics, metrics, self.outbox))
        if metrics is not None:
            self.outbox.on_latency = metrics.observe_latency
        self.topics.broker = self.broker
        #: Who is connected and subscribed where (oro_sync.core.presence).
        self.presence = presence(self) if presence is not None else LocalPresence(self)

    def attach(self, session: Any) -> None:
        self.sessions[session.session_id] = session

    def subscribe(self, session: Any, uri: str) -> Topic | None:
        """Subscribe ``session`` to ``uri``: the topic if newly subscribed,
        None if it already was.  Over its subscription limit, raises
        :class:`SubscriptionDenied` (and logs it)."""
        try:
            return self.topics.subscribe(session, uri)
        except SubscriptionLimitExceeded as e:
            self._repeats.warn(("subscription limit", session.session_id),
                               "{session} refused subscription to {topic}: {why}",
                               session=session.session_id, topic=clip(uri), why=str(e))
            raise SubscriptionDenied(str(e)) from None

    def detach(self, session: Any) -> list:
        """Forget ``session`` and remove it from every topic it was in."""
        self.sessions.pop(session.session_id, None)
        return self.topics.leave_all(session)

    def publish(self, topic_uri: str, event: Any, exclude=frozenset(), eligible=None) -> int:
        """Publish a server-side event (``eligible=None``: everyone)."""
        return self.broker.publish(Publication.of(topic_uri, event, exclude, eligible))
