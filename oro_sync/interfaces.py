"""The zope interfaces that tie oro-sync's parts together.

- :class:`IPubSubPolicy` (from :mod:`oro_sync.core.policy`): what a front
  end asks when a client subscribes, unsubscribes or publishes.
- :class:`ITopic` and its optional companions: Oro/GosWebSocket topic
  handlers, declared in YAML and called by the router.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from oro_sync.core.broker import IBroker
from oro_sync.core.policy import IPubSubPolicy, SubscriptionDenied
from oro_sync.core.session import ISession

__all__ = [
    "IBroker", "IPubSubPolicy", "IPushableTopic", "ISession", "ITopic",
    "ITopicPeriodicTimer", "SubscriptionDenied",
]


class ITopic(Interface):
    """An Oro topic handler (GosWebSocketBundle's TopicInterface)."""

    def getName() -> str:
        """The handler's machine name, as used by ``handler.callback`` in routes."""

    def onSubscribe(connection: ISession, topic, request) -> None:
        """A client subscribed to ``topic`` (a :class:`~oro_sync.core.topic.Topic`);
        raise :class:`SubscriptionDenied` to refuse it (never write to the client)."""

    def onUnSubscribe(connection: ISession, topic, request) -> None:
        """A client unsubscribed, or disconnected while subscribed."""

    def onPublish(connection: ISession, topic, request, event, exclude, eligible) -> None:
        """A client published ``event``; nothing is delivered unless the
        handler does it (e.g. ``topic.broadcast(event, exclude, eligible)``)."""


class ITopicPeriodicTimer(Interface):
    """A handler with periodic work per topic, run only while it has subscribers."""

    def registerPeriodicTimer(topic) -> None:
        """Start the topic's timers (called when the topic gets its first subscriber)."""

    def unregisterPeriodicTimer(topic) -> None:
        """Stop the topic's timers (called when its last subscriber leaves)."""


class IPushableTopic(Interface):
    """A handler that takes messages a backend pushed without a WebSocket
    (GosWebSocketBundle's PushableTopicInterface): through the Redis channel,
    RabbitMQ or ``POST /publish`` (:mod:`oro_sync.pushers`).  A handler
    without it gets a push as ``onPublish`` from a backend session."""

    def onPush(topic, request, data, provider) -> None:
        """Deliver ``data`` pushed by a backend to ``topic`` as the handler
        sees fit; ``provider`` names the pusher (``redis``, ``amqp``,
        ``http``).  A handler whose ``onPush`` takes only
        ``(topic, request, data)`` is called that way."""


class IIdentity(Interface):
    """Who is behind a session."""

    user_id = Attribute("The user's numeric id, or None when anonymous.")
    username = Attribute("The username, or 'anonymous-<sessionId>'.")
    anonymous = Attribute("True for anonymous (including backend) connections.")
