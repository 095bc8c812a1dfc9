"""Assembling an Oro server from a :class:`~oro_sync.config.Config`.

Builds the hub, the router from the routing files, the topic handlers from
the service declarations, and a :class:`~oro_sync.wamp1.WampServerFactory`
whose pub/sub policy is :class:`~oro_sync.oro_pubsub.OroPubSub`.
"""

from __future__ import annotations

from typing import Any

from oro_sync.config import Config
from oro_sync.core.hub import Hub
from oro_sync.oro_pubsub import OroPubSub
from oro_sync.routing import Router
from oro_sync.services import build_handlers, default_references
from oro_sync.wamp1.factory import WampServerFactory


def build_factory(config: Config, reactor: Any = None, hub: Hub | None = None) -> WampServerFactory:
    """The WAMP v1 factory serving ``config``'s routes and handlers.

    Raises RoutingError / ServiceError for a bad routing file or handler.
    """
    if reactor is None:
        from twisted.internet import reactor
    hub = hub if hub is not None else Hub()
    router = Router.from_files(config.routing)
    handlers = build_handlers(config.services, config.parameters, default_references(reactor, hub))
    factory = WampServerFactory(
        hub=hub,
        strictSubprotocol=config.server.strict_subprotocol,
        maxMessageSize=config.server.max_message_size,
        reactor=reactor,
    )
    factory.pubsub = OroPubSub(hub, router, handlers)
    factory.router = router
    factory.handlers = handlers
    return factory
