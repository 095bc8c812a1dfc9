"""Topic handlers declared in YAML, the way Oro declares them as services.

::

    parameters:
        oro_sync.websocket_ping.interval: 50
    services:
        oro_sync.topic.websocket_ping:
            class: oro_sync.oro.topics.WebsocketPingTopic
            arguments: ['oro_sync.ping', '@logger', '%oro_sync.websocket_ping.interval%']

``class`` is a dotted path; ``arguments`` (a list, or a mapping of keyword
arguments) may reference parameters (``%name%``; a string that is only a
reference takes the parameter's type, ``%%`` is a literal ``%``) and
services of the server (``@logger``: a logger named after the service;
``@reactor``/``@clock``; ``@broker``; ``@hub``; ``@presence``: this node's
who-is-connected; ``@cluster_presence``: every node's, queries returning
Deferreds; ``@@`` is a literal ``@``).
Every service must provide :class:`~oro_sync.interfaces.ITopic`
(``verifyObject`` is applied); the router refers to it by ``getName()``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Mapping

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from oro_sync.interfaces import ITopic
from oro_sync.logs import Logger

_PARAM = re.compile(r"%([^%\s]+)%|%%")


class ServiceError(Exception):
    """A handler declaration that cannot be built (raised at start-up)."""


def resolve_parameters(value: Any, parameters: Mapping[str, Any], where: str = "") -> Any:
    """Replace ``%name%`` references in ``value`` (recursively)."""
    if isinstance(value, list):
        return [resolve_parameters(v, parameters, where) for v in value]
    if isinstance(value, dict):
        return {k: resolve_parameters(v, parameters, where) for k, v in value.items()}
    if not isinstance(value, str) or "%" not in value:
        return value
    whole = _PARAM.fullmatch(value)
    if whole and whole.group(1):
        return _parameter(whole.group(1), parameters, where)

    def sub(m: re.Match) -> str:
        return "%" if m.group(1) is None else str(_parameter(m.group(1), parameters, where))

    return _PARAM.sub(sub, value)


def _parameter(name: str, parameters: Mapping[str, Any], where: str) -> Any:
    if name not in parameters:
        raise ServiceError(f"{where}: unknown parameter %{name}%")
    return parameters[name]


def import_dotted(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path")
    return getattr(importlib.import_module(module_name), attr)


def build_handlers(services: Mapping[str, Any], parameters: Mapping[str, Any],
                   references: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Instantiate every declared handler; return them by ``getName()``.

    ``references`` maps ``@name`` to a factory taking the service id (so
    ``@logger`` can be named after the service).
    """
    handlers: dict[str, Any] = {}
    for service_id, spec in (services or {}).items():
        where = f"service {service_id!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
            raise ServiceError(f"{where}: needs a 'class' (dotted path)")
        unknown = set(spec) - {"class", "arguments"}
        if unknown:
            raise ServiceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            cls = import_dotted(spec["class"])
        except (ImportError, AttributeError) as e:
            raise ServiceError(f"{where}: cannot import {spec['class']!r} ({e})") from None
        arguments = resolve_parameters(spec.get("arguments") or [], parameters, where)
        arguments = _resolve_references(arguments, references, service_id, where)
        try:
            if isinstance(arguments, dict):
                handler = cls(**arguments)
            elif isinstance(arguments, list):
                handler = cls(*arguments)
            else:
                raise ServiceError(f"{where}: 'arguments' must be a list or a mapping")
        except ServiceError:
            raise
        except Exception as e:
            raise ServiceError(f"{where}: {spec['class']} could not be created: {e}") from None
        try:
            verifyObject(ITopic, handler)
        except Invalid as e:
            raise ServiceError(f"{where}: {spec['class']} is not a topic handler (ITopic): {e}") from None
        name = handler.getName()
        if name in handlers:
            raise ServiceError(f"{where}: another handler is already named {name!r}")
        handlers[name] = handler
    return handlers


def _resolve_references(value: Any, references: Mapping[str, Callable[[str], Any]],
                        service_id: str, where: str) -> Any:
    if isinstance(value, list):
        return [_resolve_references(v, references, service_id, where) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_references(v, references, service_id, where) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("@"):
        if value.startswith("@@"):
            return value[1:]
        factory = references.get(value[1:])
        if factory is None:
            raise ServiceError(f"{where}: unknown reference {value} (known: "
                               f"{', '.join('@' + r for r in sorted(references))})")
        return factory(service_id)
    return value


def default_references(reactor: Any, hub: Any,
                       cluster_presence: Any = None) -> dict[str, Callable[[str], Any]]:
    """The ``@`` references a handler declaration may use.

    ``cluster_presence``: the server's
    :class:`~oro_sync.brokers.presence.IClusterPresence` (``OroServer.presence``:
    every node with a Redis broker); without one, this process's.
    """
    if cluster_presence is None:
        from oro_sync.brokers.presence import HubPresence

        cluster_presence = HubPresence(hub)
    return {
        "logger": lambda service_id: Logger(namespace=service_id),
        "reactor": lambda _: reactor,
        "clock": lambda _: reactor,
        "broker": lambda _: hub.broker,
        "hub": lambda _: hub,
        # Who is connected / subscribed (Gos's ClientManipulator): oro_sync.core.presence.
        "presence": lambda _: hub.presence,
        # Who is connected on any node (Deferred queries): oro_sync.brokers.presence.
        "cluster_presence": lambda _: cluster_presence,
    }
