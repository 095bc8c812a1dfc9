"""The zope interfaces that tie oro-sync's parts together.

- :class:`IPubSubPolicy`: what a front end asks when a client subscribes,
  unsubscribes or publishes (the WAMP v1 reference rules, or Oro's router
  and topic handlers).
- :class:`ITopic` and its optional companions: Oro/GosWebSocket topic
  handlers, declared in YAML and called by the router.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from oro_sync.core.broker import IBroker
from oro_sync.core.session import ISession

__all__ = [
    "IBroker", "IPubSubPolicy", "IPushableTopic", "ISession", "ITopic",
    "ITopicPeriodicTimer",
]


class IPubSubPolicy(Interface):
    """Decides what SUBSCRIBE, UNSUBSCRIBE and PUBLISH do.

    Called by a protocol front end with URIs already resolved (CURIEs
    expanded).  WAMP v1 has no acknowledgements: a refused action is simply
    not performed; WAMP v2 reads a refused SUBSCRIBE from the session's
    ``subscriptions`` and a refused PUBLISH from the return value.
    """

    def subscribe(session: ISession, topic_uri: str) -> None:
        """The client asked to subscribe."""

    def unsubscribe(session: ISession, topic_uri: str) -> None:
        """The client asked to unsubscribe."""

    def publish(session: ISession, topic_uri: str, message) -> bool:
        """The client published; ``message`` is a parsed
        :class:`~oro_sync.wamp1.messages.Publish` (topic already resolved;
        a WAMP v2 publish arrives in that form too).  Returns False when the
        publish was refused (WAMP v2 tells an acknowledging publisher)."""

    def session_closed(session: ISession) -> None:
        """The client went away: leave every topic."""


class ITopic(Interface):
    """An Oro topic handler (GosWebSocketBundle's TopicInterface)."""

    def getName() -> str:
        """The handler's machine name, as used by ``handler.callback`` in routes."""

    def onSubscribe(connection: ISession, topic, request) -> None:
        """A client subscribed to ``topic`` (a :class:`~oro_sync.core.topic.Topic`);
        the handler may remove it again to deny the subscription."""

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
    """A handler that accepts messages pushed by a backend rather than a client."""

    def onPush(topic, request, data) -> None:
        """Deliver backend data to ``topic`` as the handler sees fit."""


class IIdentity(Interface):
    """Who is behind a session."""

    user_id = Attribute("The user's numeric id, or None when anonymous.")
    username = Attribute("The username, or 'anonymous-<sessionId>'.")
    anonymous = Attribute("True for anonymous (including backend) connections.")
