"""The hub: one node's sessions, topics and broker, shared by every front end."""

from __future__ import annotations

from typing import Any

from oro_sync.core.broker import IBroker, LocalBroker
from oro_sync.core.outbox import Outbox
from oro_sync.core.topic import SubscriptionLimitExceeded, Topic, TopicRegistry
from oro_sync.logs import Logger, clip


class Hub:
    """Sessions, topics and the broker of one server node.

    WAMP v1 and (later) WAMP v2 front ends attach their sessions here, so a
    v1 browser and a v2 client subscribed to the same URI share one topic.
    """

    log = Logger()

    def __init__(self, broker: IBroker | None = None, max_subscriptions: int = 0,
                 clock: Any = None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.sessions: dict[str, Any] = {}
        #: Per-turn write batching for every front end's sessions.
        self.outbox = Outbox(clock)
        self.topics = TopicRegistry(max_subscriptions=max_subscriptions)
        if broker is None:
            broker = LocalBroker(self.topics)
        self.broker = broker
        self.topics.broker = broker

    def attach(self, session: Any) -> None:
        self.sessions[session.session_id] = session

    def subscribe(self, session: Any, uri: str) -> Topic | None:
        """Subscribe ``session`` to ``uri``: the topic if newly subscribed,
        None if it already was or is over its subscription limit (logged)."""
        try:
            return self.topics.subscribe(session, uri)
        except SubscriptionLimitExceeded as e:
            self.log.warn("{session} refused subscription to {topic}: {why}",
                          session=session.session_id, topic=clip(uri), why=str(e))
            return None

    def detach(self, session: Any) -> list:
        """Forget ``session`` and remove it from every topic it was in."""
        self.sessions.pop(session.session_id, None)
        return self.topics.leave_all(session)

    def publish(self, topic_uri: str, event: Any, exclude=frozenset(), eligible=None) -> int:
        return self.broker.publish(topic_uri, event, exclude, eligible)
