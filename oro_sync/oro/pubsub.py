"""Oro's pub/sub: the router and topic handlers decide what clients' actions do.

This is the :class:`~oro_sync.core.policy.IPubSubPolicy` of an Oro server
(GosWebSocketBundle's topic dispatcher, with its bugs fixed):

- SUBSCRIBE to a routed channel adds the client to the topic, then runs the
  route's handlers' ``onSubscribe`` in order; a handler refuses by raising
  :class:`~oro_sync.core.policy.SubscriptionDenied` (or, as GosWebSocket
  handlers did, by removing the client from the topic), which undoes the
  subscription and reaches the front end; periodic timers start with a
  topic's first subscriber.  An unrouted channel is refused the same way.
- UNSUBSCRIBE (and disconnect) run ``onUnSubscribe``, then remove the client;
  a topic with no subscribers is dropped and its timers stopped.
- PUBLISH runs ``onPublish`` with the Ratchet/Oro profile's exclude and
  eligible lists; nothing is delivered unless a handler does it, and what
  the handlers publish carries the client publish's publication id.
- A backend push (:mod:`oro_sync.pushers`) takes the same path as a
  backend's PUBLISH, from a backend session, except that handlers with
  ``onPush`` (:class:`~oro_sync.interfaces.IPushableTopic`) get that instead.
- Unrouted channels are logged and do nothing; a handler exception is logged
  with the topic and event, the other handlers still run and the connection
  stays open.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.logger import LogLevel
from zope.interface import implementer

from oro_sync.core.policy import IPubSubPolicy, SubscriptionDenied
from oro_sync.core.profiles import ratchet_eligible, ratchet_exclude
from oro_sync.core.publish import PublishRequest
from oro_sync.core.topic import Topic
from oro_sync.interfaces import IPushableTopic, ITopicPeriodicTimer
from oro_sync.logs import Logger, RepeatLimiter, clip
from oro_sync.oro.routing import Router, RoutingError, WampRequest


@implementer(IPubSubPolicy)
class OroPubSub:
    """Routes client actions on topics to the topic handlers."""

    log = Logger()

    def __init__(self, hub: Any, router: Router, handlers: dict[str, Any],
                 may_publish: Callable[[Any, WampRequest], bool] | None = None,
                 observer: Any = None, metrics: Any = None):
        self.hub = hub
        #: A client's repeated refusals are counted, not logged one by one.
        self.repeats = RepeatLimiter(self.log)
        #: Counts handler errors (an oro_sync.core.metrics.Metrics), if set.
        self.metrics = metrics
        #: Gets onClientSubscribed/onClientUnsubscribed(session, uri), if set.
        self.observer = observer
        self.router = router
        self.handlers = handlers
        #: ``may_publish(session, request)``: who may publish (see oro_sync.auth.policy).
        self.may_publish = may_publish
        _check_callbacks(router, handlers)
        hub.topics.on_removed.append(self._topic_removed)
        #: Whether each pushable handler's onPush takes the provider name
        #: (GosWebSocketBundle's 4-argument form) or not (topic, request, data).
        self._push_provider = _push_providers(handlers)

    def replace(self, router: Router, handlers: dict[str, Any]) -> list[tuple[str, int]]:
        """Serve ``router`` and ``handlers`` from now on (a reload), keeping
        every connection and subscription.

        Raises RoutingError, changing nothing, if a route names no handler.
        Live topics move to the new handlers (periodic timers restart with
        them); a topic whose route is gone has its subscriptions closed (the
        old handlers' ``onUnSubscribe`` runs) and is logged.  Returns the
        (topic, subscriptions closed) of those.
        """
        _check_callbacks(router, handlers)
        topics = list(self.hub.topics.topics.values())
        for topic in topics:
            self._stop_timers(topic)
        old_router, old_handlers = self.router, self.handlers
        self.router, self.handlers = router, handlers
        self._push_provider = _push_providers(handlers)
        closed = []
        for topic in topics:
            request = router.match(topic.uri)
            if request is not None:
                for handler in self.handlers_for(request):
                    if ITopicPeriodicTimer.providedBy(handler):
                        self._call(handler, "registerPeriodicTimer", topic, topic.uri, None, topic)
                continue
            old = old_router.match(topic.uri)
            sessions = list(topic)
            for session in sessions:
                if old is not None:
                    for name in old.route.callbacks:
                        handler = old_handlers.get(name)
                        if handler is not None:
                            self._call(handler, "onUnSubscribe", topic, topic.uri, None, session, topic, old)
                self.hub.topics.unsubscribe(session, topic.uri)
            self.log.warn("reload: no route for {topic} any more: closed its {n} subscription(s)",
                          topic=clip(topic.uri), n=len(sessions))
            closed.append((topic.uri, len(sessions)))
        return closed

    def _stop_timers(self, topic: Topic) -> None:
        request = self.router.match(topic.uri)
        if request is None:
            return
        for handler in self.handlers_for(request):
            if ITopicPeriodicTimer.providedBy(handler):
                self._call(handler, "unregisterPeriodicTimer", topic, topic.uri, None, topic)

    def handlers_for(self, request: WampRequest) -> list[Any]:
        return [self.handlers[name] for name in request.route.callbacks]

    # -- IPubSubPolicy ----------------------------------------------------------

    def subscribe(self, session: Any, topic_uri: str) -> None:
        request = self.router.match(topic_uri)
        if request is None:
            self.repeats.info(("unrouted subscribe", session.session_id),
                              "{session} subscribed to unrouted topic {topic}: ignored",
                              session=session.session_id, topic=clip(topic_uri))
            raise SubscriptionDenied(f"no route for {clip(topic_uri)}")
        topic = self.hub.subscribe(session, topic_uri)  # SubscriptionDenied over the limit
        if topic is None:
            return  # already subscribed
        handlers = self.handlers_for(request)
        for handler in handlers:
            try:
                self._call(handler, "onSubscribe", topic, topic_uri, None, session, topic, request)
            except SubscriptionDenied:
                self.hub.topics.forget(session, topic)
                raise
            if session.session_id not in topic.subscribers:
                # Removed by the handler (the GosWebSocket way): undo it everywhere.
                self.hub.topics.forget(session, topic)
                raise SubscriptionDenied(f"{handler.getName()} refused the subscription")
        for handler in handlers:
            if ITopicPeriodicTimer.providedBy(handler):
                self._call(handler, "registerPeriodicTimer", topic, topic_uri, None, topic)
        if self.observer is not None:
            self.observer.onClientSubscribed(session, topic_uri)

    def unsubscribe(self, session: Any, topic_uri: str) -> None:
        if topic_uri not in session.subscriptions:
            return
        topic = self.hub.topics.get(topic_uri)
        request = self.router.match(topic_uri)
        if topic is not None and request is not None:
            for handler in self.handlers_for(request):
                self._call(handler, "onUnSubscribe", topic, topic_uri, None, session, topic, request)
        if self.hub.topics.unsubscribe(session, topic_uri) is not None and self.observer is not None:
            self.observer.onClientUnsubscribed(session, topic_uri)

    def publish(self, session: Any, publish: PublishRequest) -> bool:
        request = self.router.match(publish.topic)
        if request is None:
            self.repeats.info(("unrouted publish", session.session_id),
                              "{session} published to unrouted topic {topic}: dropped",
                              session=session.session_id, topic=clip(publish.topic))
            return False
        return self._publish(session, publish, request, None)

    def _publish(self, session: Any, publish: PublishRequest, request: WampRequest,
                 provider: str | None) -> bool:
        """Run a routed publish through the route's handlers: ``onPublish``,
        or, for a backend push (``provider`` set), ``onPush`` where a handler
        has it.  One path for clients and pushers, so both are checked,
        profiled and numbered alike."""
        topic_uri = request.matched
        if self.may_publish is not None and not self.may_publish(session, request):
            identity = getattr(session, "identity", None)
            self.repeats.warn(("publish refused", session.session_id),
                              "{user} ({session}) may not publish to {topic}: dropped",
                              user=getattr(identity, "username", "?"), session=session.session_id,
                              topic=clip(topic_uri))
            return False
        # The publisher need not be subscribed; a topic nobody is in still
        # reaches other nodes through the broker.
        topic = self.hub.topics.get(topic_uri) or Topic(topic_uri, self.hub.broker)
        exclude = ratchet_exclude(session.session_id, publish.exclude, publish.exclude_flag)
        eligible = ratchet_eligible(publish.eligible)
        event = publish.event
        with self.hub.broker.publishing(publish.publication_id):
            for handler in self.handlers_for(request):
                if provider is not None and IPushableTopic.providedBy(handler):
                    args = (topic, request, event, provider) if self._push_provider[handler.getName()] \
                        else (topic, request, event)
                    self._call(handler, "onPush", topic, topic_uri, event, *args)
                else:
                    self._call(handler, "onPublish", topic, topic_uri, event,
                               session, topic, request, event, exclude, eligible)
        return True

    def session_closed(self, session: Any) -> None:
        for uri in list(session.subscriptions):
            self.unsubscribe(session, uri)

    # -- backend pushes -----------------------------------------------------------

    def push_request(self, name_or_channel: str) -> WampRequest | None:
        """The route a backend push names: a concrete channel (what
        GosWebSocketBundle's pushers send), or the name of a route whose
        channel has no placeholders.  None when nothing matches."""
        request = self.router.match(name_or_channel)
        if request is not None:
            return request
        route = self.router.get(name_or_channel)
        if route is None or "{" in route.channel:
            return None
        return self.router.match(route.channel)

    def push(self, session: Any, request: WampRequest, publish: PublishRequest, provider: str) -> bool:
        """A message a backend pushed (Redis channel, AMQP, HTTP) through
        ``provider``, from ``session`` (a backend's): it reaches the route's
        handlers exactly as that backend's WebSocket publish would, except
        that a handler with ``onPush`` (:class:`IPushableTopic`) gets that
        instead of ``onPublish``.  False if the publish was refused."""
        return self._publish(session, publish, request, provider)

    # -- internals ----------------------------------------------------------------

    def _topic_removed(self, topic: Topic) -> None:
        self._stop_timers(topic)

    def _call(self, handler: Any, method: str, topic: Any, uri: str, event: Any, *args: Any) -> None:
        try:
            getattr(handler, method)(*args)
        except SubscriptionDenied:
            if method == "onSubscribe":  # the one place a refusal means something
                raise
            self._failed(handler, method, uri, event, args)
        except Exception:
            self._failed(handler, method, uri, event, args)

    def _failed(self, handler: Any, method: str, uri: str, event: Any, args: tuple = ()) -> None:
        """Log a handler's failure (called in its ``except``: the traceback is
        the one being handled) and count it."""
        if self.metrics is not None:
            self.metrics.counters["handler_errors"] += 1
        # error, not critical: a client's event may be what made it fail.
        # (onSubscribe, onPublish...: the first argument is the client's session.)
        client = getattr(args[0], "session_id", None) if args else None
        if self.repeats.first(("handler failed", handler.getName(), method, client)):
            self.log.failure("{handler}.{method} failed on topic {topic} (event: {event})",
                             handler=handler.getName(), method=method, topic=clip(uri),
                             event=clip(repr(event)), level=LogLevel.error)


def _push_providers(handlers: dict[str, Any]) -> dict[str, bool]:
    """For each pushable handler, whether its onPush takes the provider name
    (GosWebSocketBundle's 4-argument form) or not (topic, request, data)."""
    return {name: _takes_provider(h) for name, h in handlers.items() if IPushableTopic.providedBy(h)}


def _takes_provider(handler: Any) -> bool:
    """Whether ``handler.onPush`` accepts a fourth argument, the provider."""
    try:
        inspect.signature(handler.onPush).bind(None, None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): call it the Gos way
        return True
    return True


def _check_callbacks(router: Router, handlers: dict[str, Any]) -> None:
    """Every route's callbacks must name a handler (RoutingError otherwise)."""
    missing = [(route, name) for route in router.routes for name in route.callbacks
               if name not in handlers]
    if missing:
        route, name = missing[0]
        raise RoutingError(f"handler.callback names no handler: {name!r} (handlers: "
                           f"{', '.join(sorted(handlers)) or 'none'})", route.source, route.name)
