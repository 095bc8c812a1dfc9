"""Topics and the built-in Oro topic handlers.

:class:`~oro_sync.core.topic.Topic` is the channel with its subscribers
(re-exported here).  The handlers mirror OroSyncBundle's:

- :class:`AbstractTopic`: a name and no-op callbacks, to subclass;
- :class:`BroadcastTopic`: every publication goes to every subscriber
  (Ratchet/Oro semantics of exclude/eligible);
- :class:`SecuredTopic`: only the user named by the route's ``user_id`` may
  subscribe; anonymous connections never;
- :class:`SyncFailTopic`: as SecuredTopic, but ``*`` is open to everyone;
- :class:`WebsocketPingTopic`: a keep-alive broadcast every interval, driven
  by a LoopingCall per topic that runs only while the topic has subscribers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from oro_sync.core.policy import SubscriptionDenied
from oro_sync.core.topic import Topic
from oro_sync.interfaces import ITopic, ITopicPeriodicTimer
from oro_sync.logs import Logger, RepeatLimiter, clip

__all__ = [
    "AbstractTopic", "BroadcastTopic", "SecuredTopic", "SyncFailTopic", "Topic",
    "WebsocketPingTopic",
]

PING_MESSAGE = "Connection keep alive"
DEFAULT_PING_INTERVAL = 50.0


@implementer(ITopic)
class AbstractTopic:
    """A named handler that does nothing; subclass and override what you need."""

    log = Logger()

    def __init__(self, name: str, logger: Any = None):
        self.name = name
        if logger is not None:
            self.log = logger

    def getName(self) -> str:
        return self.name

    def onSubscribe(self, connection: Any, topic: Topic, request: Any) -> None:
        pass

    def onUnSubscribe(self, connection: Any, topic: Topic, request: Any) -> None:
        pass

    def onPublish(self, connection: Any, topic: Topic, request: Any, event: Any,
                  exclude: Any, eligible: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class BroadcastTopic(AbstractTopic):
    """Broadcast every published message to all subscribers (e.g. maintenance mode)."""

    def onPublish(self, connection: Any, topic: Topic, request: Any, event: Any,
                  exclude: Any, eligible: Any) -> None:
        topic.broadcast(event, exclude, eligible)


class SecuredTopic(BroadcastTopic):
    """Broadcast, but subscriptions are only for the user the route names.

    The route's ``user_id`` attribute must be a positive integer equal to the
    connection's user id; anonymous connections are always refused.  A refusal
    is logged and raised as :class:`SubscriptionDenied`; with
    ``denial_frame=True`` it carries Oro's raw (non-JSON) text
    ``You are not allowed to subscribe on topic "<uri>".``, which WAMP v1
    clients are sent (WAMP v2 clients get an ERROR for their SUBSCRIBE).
    """

    def __init__(self, name: str, logger: Any = None, denial_frame: bool = False):
        super().__init__(name, logger)
        self.denial_frame = denial_frame

    def onSubscribe(self, connection: Any, topic: Topic, request: Any) -> None:
        if not self.allowed(connection, request):
            self.deny(connection, topic, request)

    def allowed(self, connection: Any, request: Any) -> bool:
        identity = getattr(connection, "identity", None)
        if identity is None or identity.anonymous or identity.user_id is None:
            return False
        wanted = request.attributes.get("user_id", "")
        if not (wanted.isascii() and wanted.isdigit()):
            return False
        return int(wanted) > 0 and int(wanted) == identity.user_id

    def deny(self, connection: Any, topic: Topic, request: Any) -> None:
        identity = getattr(connection, "identity", None)
        repeats = self.__dict__.get("_repeats")
        if repeats is None:
            repeats = self._repeats = RepeatLimiter(self.log)
        repeats.warn(("subscribe refused", connection.session_id),
                     "{user} ({session}) may not subscribe to {topic}",
                     user=getattr(identity, "username", "?"), session=connection.session_id,
                     topic=clip(topic.uri))
        notice = f'You are not allowed to subscribe on topic "{topic.uri}".' if self.denial_frame else None
        raise SubscriptionDenied(f"{topic.uri} is for another user", notice)


class SyncFailTopic(SecuredTopic):
    """Like SecuredTopic, but the ``*`` channel (all users) is open to everyone."""

    def allowed(self, connection: Any, request: Any) -> bool:
        if request.attributes.get("user_id") == "*":
            return True
        return super().allowed(connection, request)


@implementer(ITopicPeriodicTimer)
class WebsocketPingTopic(AbstractTopic):
    """Sends ``"Connection keep alive"`` to a topic's subscribers every interval.

    One LoopingCall per topic, started with the first subscriber and stopped
    with the last, so timers never leak or double (GosWebSocketBundle keyed
    them per handler and never cancelled them).  Client publications are
    ignored.  The ping is node-local (each node keeps its own clients alive),
    so it is delivered directly rather than through the broker.
    """

    def __init__(self, name: str, logger: Any = None, interval: float = DEFAULT_PING_INTERVAL,
                 clock: IReactorTime | None = None):
        super().__init__(name, logger)
        interval = float(interval)
        if interval <= 0:
            raise ValueError("the ping interval must be positive")
        self.interval = interval
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.timers: dict[str, LoopingCall] = {}

    def registerPeriodicTimer(self, topic: Topic) -> None:
        if topic.uri in self.timers:
            return
        call = LoopingCall(self.ping, topic)
        call.clock = self.clock
        self.timers[topic.uri] = call
        call.start(self.interval, now=False).addErrback(
            lambda f: self.log.failure("ping timer of {topic} failed", f, topic=topic.uri))

    def unregisterPeriodicTimer(self, topic: Topic) -> None:
        call = self.timers.pop(topic.uri, None)
        if call is not None and call.running:
            call.stop()

    def ping(self, topic: Topic) -> None:
        topic.deliver(PING_MESSAGE)
