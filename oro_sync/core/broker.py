"""The seam between whoever publishes (handlers, server code) and delivery.

Handlers never write to sockets: they publish through an :class:`IBroker`.
:class:`LocalBroker` delivers to this node's subscribers; a Redis broker
(several nodes behind one Redis) implements the same interface and delivers
on every node.
"""

from __future__ import annotations

from typing import Any, Collection

from zope.interface import Interface, implementer


class IBroker(Interface):
    """Routes published events to the subscribers of a topic."""

    def publish(topic_uri: str, event: Any, exclude: Collection[str] = frozenset(),
                eligible: Collection[str] | None = None) -> int:
        """Deliver ``event`` to the topic's subscribers on every node.

        ``exclude`` names session ids to skip; ``eligible`` names the only
        session ids that may receive it, or is ``None`` for everyone.
        Returns the number of local deliveries (remote ones are not known).
        """


@implementer(IBroker)
class LocalBroker:
    """Deliver to the subscribers held by one :class:`TopicRegistry`."""

    def __init__(self, registry: Any = None):
        self.registry = registry

    def publish(self, topic_uri: str, event: Any, exclude: Collection[str] = frozenset(),
                eligible: Collection[str] | None = None) -> int:
        topic = self.registry.topics.get(topic_uri)
        if topic is None:
            return 0
        return topic.deliver(event, exclude, eligible)
