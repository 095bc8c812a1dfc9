"""Assembling an Oro server from a :class:`~oro_sync.config.Config`.

Builds the hub, the router from the routing files, the topic handlers from
the service declarations, the handshake gate (tickets, origins, limits) and
a :class:`~oro_sync.wamp1.WampServerFactory` whose pub/sub policy is
:class:`~oro_sync.oro_pubsub.OroPubSub`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from oro_sync.config import Config, ConfigError, resolve_path
from oro_sync.core.hub import Hub
from oro_sync.oro_pubsub import OroPubSub
from oro_sync.routing import Router
from oro_sync.services import build_handlers, default_references
from oro_sync.wamp1.factory import Limits, WampServerFactory

_AUTH_KEYS = {"secret", "require_ticket", "ticket_ttl", "one_time_tickets", "users", "publishers",
              "clock_leeway"}
_ORIGIN_KEYS = {"check", "allowed", "application_url", "allow_missing"}


def build_limits(settings: dict[str, Any]) -> Limits:
    limits = Limits()
    known = {f.name: f for f in fields(Limits)}
    for key, value in settings.items():
        if key not in known:
            raise ConfigError(f"unknown limit {key!r} (known: {', '.join(sorted(known))})")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"limits.{key} must be a number >= 0")
        setattr(limits, key, type(getattr(limits, key))(value))
    return limits


def build_origin_policy(settings: dict[str, Any]) -> Any:
    from oro_sync.auth.origins import OriginPolicy

    unknown = set(settings) - _ORIGIN_KEYS
    if unknown:
        raise ConfigError(f"unknown origins setting(s) {', '.join(sorted(unknown))}")
    if not settings.get("check", True):
        return None
    allowed = settings.get("allowed") or []
    if not isinstance(allowed, list) or not all(isinstance(o, str) for o in allowed):
        raise ConfigError("origins.allowed must be a list of hosts or URLs")
    return OriginPolicy(allowed, settings.get("application_url", "http://localhost"),
                        allow_missing=bool(settings.get("allow_missing", True)))


def build_user_provider(settings: Any, base: str) -> Any:
    from oro_sync.auth.sql_users import sql_user_provider_from_url
    from oro_sync.auth.yaml_users import YamlUserProvider

    if settings is None:
        return YamlUserProvider({"users": []})
    if not isinstance(settings, dict) or len(settings) != 1 or not set(settings) <= {"file", "url"}:
        raise ConfigError("auth.users must be {file: users.yml} or {url: postgresql://...}")
    if "file" in settings:
        try:
            return YamlUserProvider(resolve_path(str(settings["file"]), base))
        except (OSError, ValueError) as e:
            raise ConfigError(f"auth.users.file: {e}") from None
    try:
        return sql_user_provider_from_url(str(settings["url"]))
    except ValueError as e:
        raise ConfigError(f"auth.users.url: {e}") from None


def build_authenticator(settings: dict[str, Any], base: str, reactor: Any) -> tuple[Any, Any]:
    """(authenticator, may_publish) for the ``auth`` section.

    Without an ``auth`` section nobody needs a ticket and anyone may publish
    (a plain pub/sub hub); with one, tickets are checked as Oro does and only
    backends publish unless a route says otherwise.
    """
    from oro_sync.auth.gate import ANYONE, BACKEND, TicketAuthenticator, publish_permission
    from oro_sync.auth.verifier import TicketVerifier

    if not settings:
        return None, publish_permission(ANYONE)
    unknown = set(settings) - _AUTH_KEYS
    if unknown:
        raise ConfigError(f"unknown auth setting(s) {', '.join(sorted(unknown))}")
    secret = settings.get("secret")
    if not isinstance(secret, str) or not secret:
        raise ConfigError("auth.secret (the application secret) is required")
    try:
        may_publish = publish_permission(settings.get("publishers", BACKEND))
        verifier = TicketVerifier(secret, build_user_provider(settings.get("users"), base),
                                  ttl=float(settings.get("ticket_ttl", 300)),
                                  one_time=bool(settings.get("one_time_tickets", False)),
                                  leeway=float(settings.get("clock_leeway", 0)), clock=reactor)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"auth: {e}") from None
    return TicketAuthenticator(verifier, bool(settings.get("require_ticket", True))), may_publish


def build_factory(config: Config, reactor: Any = None, hub: Hub | None = None) -> WampServerFactory:
    """The WAMP v1 factory serving ``config``'s routes and handlers.

    Raises ConfigError, RoutingError or ServiceError for a bad setting.
    """
    if reactor is None:
        from twisted.internet import reactor
    import os
    base = os.path.dirname(config.path) if config.path else os.getcwd()
    limits = build_limits(config.limits)
    hub = hub if hub is not None else Hub(max_subscriptions=limits.max_subscriptions, clock=reactor)
    router = Router.from_files(config.routing)
    handlers = build_handlers(config.services, config.parameters, default_references(reactor, hub))
    authenticator, may_publish = build_authenticator(config.auth, base, reactor)
    factory = WampServerFactory(
        hub=hub,
        strictSubprotocol=config.server.strict_subprotocol,
        maxMessageSize=config.server.max_message_size,
        limits=limits,
        originPolicy=build_origin_policy(config.origins),
        authenticator=authenticator,
        wamp2=config.server.wamp2,
        wamp2Realms=config.server.wamp2_realms or None,
        wamp2Registrations=config.server.wamp2_registrations,
        reactor=reactor,
    )
    factory.pubsub = OroPubSub(hub, router, handlers, may_publish=may_publish, observer=factory)
    factory.router = router
    factory.handlers = handlers
    return factory
