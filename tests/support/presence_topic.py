"""A topic handler that answers from presence: for tests of the ``@presence``
and ``@cluster_presence`` references a handler declaration may use."""

from __future__ import annotations

from typing import Any

from oro_sync.oro.topics import BroadcastTopic


class WhoIsConnectedTopic(BroadcastTopic):
    """A published username is answered, to every subscriber, with whether
    that user is connected on this node and on any node of the cluster."""

    def __init__(self, name: str, cluster_presence: Any, presence: Any):
        super().__init__(name)
        self.cluster_presence = cluster_presence
        self.presence = presence

    def onPublish(self, connection: Any, topic: Any, request: Any, event: Any,
                  exclude: Any, eligible: Any) -> None:
        here = self.presence.is_connected(event)
        d = self.cluster_presence.is_connected(event)
        d.addCallback(lambda anywhere: topic.broadcast(
            {"user": event, "here": here, "anywhere": anywhere}))
