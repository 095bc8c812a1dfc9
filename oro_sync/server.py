"""The composition root: an Oro server assembled from a :class:`Config`.

Every part is built here, once, and handed to the parts that use it through
their constructors: the metrics, the hub (with the kernel writer for its
outbox), the router and topic handlers, Oro's pub/sub policy, the ticket
verifier and its handshake gate, the permission rules, and finally the
WebSocket factory.  Nothing is replaced on an object after it was built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from oro_sync.config import Config, ConfigError, build_limits, resolve_path, validate_sections
from oro_sync.core.hub import Hub
from oro_sync.core.metrics import Metrics
from oro_sync.oro.pubsub import OroPubSub
from oro_sync.oro.routing import Router
from oro_sync.oro.services import build_handlers, default_references
from oro_sync.websocket.factory import WampServerFactory
from oro_sync.websocket.kernel_write import KernelWriter


@dataclass
class OroServer:
    """The parts of one server that its service and its operators need."""

    factory: WampServerFactory
    #: The ticket verifier (None without an ``auth`` section).
    verifier: Any
    metrics: Metrics
    router: Router
    handlers: dict[str, Any]
    #: Follows Oro's configuration changes (a ServerStateWatcher service), or None.
    watcher: Any = None
    #: Services to run beside the listener (the Redis broker, the cluster
    #: presence registry), started before it and stopped after it.
    services: list = field(default_factory=list)
    #: Who is connected on every node (:mod:`oro_sync.brokers.presence`).
    presence: Any = None
    #: Services of the backend pushers (oro_sync.pushers), none by default.
    pushers: list = field(default_factory=list)
    #: Oro's pub/sub policy (its routes and handlers are replaced on reload).
    policy: Any = None
    #: The user provider (None without an ``auth`` section).
    users: Any = None
    #: What /health checks (see oro_sync.ops.health.IDependency).
    dependencies: list = field(default_factory=list)
    config: Any = None


def build_origin_policy(settings: dict[str, Any]) -> Any:
    from oro_sync.auth.origins import OriginPolicy

    if not settings.get("check", True):
        return None
    return OriginPolicy(settings.get("allowed") or [], settings.get("application_url", "http://localhost"),
                        allow_missing=bool(settings.get("allow_missing", True)))


def build_server_state_watcher(config: Config, policy: Any, reactor: Any) -> Any:
    """The service reloading ``policy`` from Oro's database when its
    configuration changes: with Origin checks on and a database known
    (``origins.database_url``, else the SQL ``auth.users.url``), unless
    ``origins.reload_interval`` is 0."""
    from oro_sync.oro.server_state import DEFAULT_RELOAD_INTERVAL, ServerStateWatcher

    origins = config.origins
    url = origins.get("database_url")
    if url is None:
        url = ((config.auth or {}).get("users") or {}).get("url")
    interval = float(origins.get("reload_interval", DEFAULT_RELOAD_INTERVAL))
    if policy is None or not url or not interval:
        return None
    try:
        return ServerStateWatcher(url, policy, origins.get("allowed") or [],
                                  origins.get("application_url", "http://localhost"),
                                  interval, reactor=reactor)
    except ValueError as e:
        raise ConfigError(f"origins.database_url: {e}") from None


def build_user_provider(settings: Any, base: str) -> Any:
    from oro_sync.auth.sql_users import sql_user_provider_from_url
    from oro_sync.auth.yaml_users import YamlUserProvider

    if settings is None:
        return YamlUserProvider({"users": []})
    if "file" in settings:
        try:
            return YamlUserProvider(resolve_path(str(settings["file"]), base))
        except (OSError, ValueError) as e:
            raise ConfigError(f"auth.users.file: {e}") from None
    try:
        return sql_user_provider_from_url(str(settings["url"]))
    except ValueError as e:
        raise ConfigError(f"auth.users.url: {e}") from None


#: Seconds a ticket may be dated in the future, as Oro >= 5.1 allows (several
#: application servers whose clocks are slightly apart).
DEFAULT_CLOCK_LEEWAY = 30.0


def build_verifier(settings: dict[str, Any], users: Any, reactor: Any) -> Any:
    """The ticket verifier of an ``auth`` section, looking users up in ``users``."""
    from oro_sync.auth.verifier import TicketVerifier

    try:
        return TicketVerifier(settings["secret"], users,
                              ttl=float(settings.get("ticket_ttl", 300)),
                              one_time=bool(settings.get("one_time_tickets", False)),
                              leeway=float(settings.get("clock_leeway", DEFAULT_CLOCK_LEEWAY)),
                              clock=reactor)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"auth: {e}") from None


def build_server(config: Config, reactor: Any = None, hub: Hub | None = None) -> OroServer:
    """Everything ``config`` describes, wired.

    Without an ``auth`` section nobody needs a ticket and anyone may publish
    (a plain pub/sub hub); with one, tickets are checked as Oro does and only
    backends publish unless a route says otherwise.  Raises ConfigError,
    RoutingError or ServiceError for a bad setting.
    """
    from oro_sync.auth.gate import TicketAuthenticator
    from oro_sync.auth.rules import ANYONE, BACKEND, publish_permission, registration_permission

    if reactor is None:
        from twisted.internet import reactor
    validate_sections(config)
    base = os.path.dirname(config.path) if config.path else os.getcwd()
    limits = build_limits(config.limits)
    metrics = Metrics()
    from oro_sync.brokers.settings import parse_broker

    broker_settings = parse_broker(config.broker)
    if hub is None:
        from oro_sync.core.outbox import Outbox

        outbox = Outbox(reactor, KernelWriter)
        make_broker: Any = None  # the hub's LocalBroker
        if broker_settings.enabled:
            from oro_sync.brokers.redis import RedisBroker

            def make_broker(registry: Any) -> Any:
                return RedisBroker(registry, broker_settings, metrics, reactor, outbox)
        hub = Hub(broker=make_broker, max_subscriptions=limits.max_subscriptions, clock=reactor,
                  metrics=metrics, outbox=outbox)
    router = Router.from_files(config.routing, max_placeholder_length=limits.max_placeholder_length)
    from oro_sync.brokers.presence import HubPresence, RedisPresence

    # Built before the handlers, which get it as @cluster_presence.
    presence: Any = (RedisPresence(hub, broker_settings, reactor) if broker_settings.enabled
                     else HubPresence(hub))
    handlers = build_handlers(config.services, config.parameters,
                              default_references(reactor, hub, presence))
    verifier = authenticator = users = None
    dependencies: list = []
    may_publish = publish_permission(ANYONE)
    if config.auth:
        users = build_user_provider(config.auth.get("users"), base)
        verifier = build_verifier(config.auth, users, reactor)
        authenticator = TicketAuthenticator(verifier, bool(config.auth.get("require_ticket", True)))
        may_publish = publish_permission(config.auth.get("publishers", BACKEND))
        metrics.add_source("tickets", lambda: {"computations": verifier.computations,
                                               "cache_hits": verifier.cache_hits,
                                               "deduplicated": verifier.deduplicated})
        if isinstance(getattr(users, "stats", None), dict):
            metrics.add_source("users", lambda: users.stats)
        if callable(getattr(users, "check", None)):
            dependencies.append(users)
    policy = OroPubSub(hub, router, handlers, may_publish=may_publish, metrics=metrics)
    origin_policy = build_origin_policy(config.origins)
    watcher = build_server_state_watcher(config, origin_policy, reactor)
    if callable(getattr(hub.broker, "check", None)):  # a broker spanning nodes (IDependency)
        dependencies.append(hub.broker)
    factory = WampServerFactory(
        hub=hub,
        policy=policy,
        metrics=metrics,
        strictSubprotocol=config.server.strict_subprotocol,
        maxMessageSize=config.server.max_message_size,
        limits=limits,
        originPolicy=origin_policy,
        authenticator=authenticator,
        wamp2=config.server.wamp2,
        wamp2Realms=config.server.wamp2_realms or None,
        mayRegister=registration_permission(config.server.wamp2_registrations),
        # The session meta API shows who is connected: backends only, unless
        # there are no tickets (an open hub has nothing to hide).
        mayUseMeta=registration_permission(BACKEND if config.auth else ANYONE),
        reactor=reactor,
    )
    services = [hub.broker] if hasattr(hub.broker, "startService") else []
    from oro_sync.pushers import build_pushers, parse_pushers

    if hasattr(presence, "startService"):  # the Redis registry: after the broker
        services.append(presence)
    pushers = build_pushers(parse_pushers(config.pushers, str(config.auth.get("secret") or "")),
                            policy, metrics, reactor)
    return OroServer(factory, verifier, metrics, router, handlers, watcher=watcher, services=services,
                     presence=presence, pushers=pushers, policy=policy, users=users,
                     dependencies=dependencies, config=config)


def build_factory(config: Config, reactor: Any = None, hub: Hub | None = None) -> WampServerFactory:
    """The WebSocket factory of :func:`build_server` (for tests and tools
    that need no service around it)."""
    return build_server(config, reactor, hub).factory
