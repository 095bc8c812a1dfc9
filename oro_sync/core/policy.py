"""What a front end asks when a client subscribes, unsubscribes or publishes.

:class:`IPubSubPolicy` is implemented by the WAMP v1 reference rules
(:class:`oro_sync.wamp1.pubsub.AutobahnPubSub`) and by Oro's router and
topic handlers (:class:`oro_sync.oro.pubsub.OroPubSub`); both WAMP front
ends call it with URIs already resolved and the core's types only.

A refusal is an exception, :class:`SubscriptionDenied`, which each front end
renders its own way (WAMP v1: nothing, or Oro's denial text when a handler
asks for it; WAMP v2: ERROR ``wamp.error.not_authorized``): handlers and
policies never write to sockets.
"""

from __future__ import annotations

from zope.interface import Interface

from oro_sync.core.publish import PublishRequest
from oro_sync.core.session import ISession


class SubscriptionDenied(Exception):
    """A subscription was refused.

    :param reason: why, for the log and for a WAMP v2 ERROR.
    :param notice: a raw text a WAMP v1 client is sent (Oro's
        ``You are not allowed to subscribe on topic "…".``), or None.
    """

    def __init__(self, reason: str, notice: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.notice = notice


class IPubSubPolicy(Interface):
    """Decides what SUBSCRIBE, UNSUBSCRIBE and PUBLISH do."""

    def subscribe(session: ISession, topic_uri: str) -> None:
        """Subscribe, or raise :class:`SubscriptionDenied`.  Subscribing
        twice to the same topic is not an error."""

    def unsubscribe(session: ISession, topic_uri: str) -> None:
        """The client asked to unsubscribe."""

    def publish(session: ISession, request: PublishRequest) -> bool:
        """The client published; False when the publish was refused (WAMP v2
        tells an acknowledging publisher)."""

    def session_closed(session: ISession) -> None:
        """The client went away: leave every topic."""
