"""Backend pushers: the backend publishes without opening a WebSocket.

GosWebSocketBundle's pusher idea, with three transports sharing one
dispatcher (:mod:`oro_sync.pushers.dispatch`):

- :mod:`~oro_sync.pushers.redis_channel`: ``PUBLISH oro-sync:push <json>``;
- :mod:`~oro_sync.pushers.amqp`: RabbitMQ, exchange ``gos_websocket_exchange``,
  queue ``gos_websocket``, as Gos's AMQP pusher;
- :mod:`~oro_sync.pushers.http`: ``POST /publish`` with the backend secret.

Every message is ``{"topic": <channel or route name>, "data": <JSON>}``
and reaches the route's handlers as the backend's WebSocket PUBLISH would
(``onPush`` for handlers that have it).  :func:`build_pushers` makes the
services the composition root adds to the server's service tree.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from oro_sync.pushers.dispatch import DropLog, PushDispatcher
from oro_sync.pushers.settings import PushersSettings, parse_pushers

__all__ = ["PushDispatcher", "PushersSettings", "build_pushers", "parse_pushers"]


def build_pushers(settings: PushersSettings, policy: Any, metrics: Any, reactor: Any) -> list:
    """The services of the pushers ``settings`` turns on (none by default)."""
    if not settings.any:
        return []
    dispatcher = PushDispatcher(policy, DropLog(reactor, settings.log_interval),
                                settings.max_message_size, metrics)
    metrics.add_source("pushers", lambda: {"dropped_by_reason": dict(dispatcher.drops.totals)})
    services: list = [_DropLogService(dispatcher.drops)]
    delays = (settings.reconnect_initial_delay, settings.reconnect_max_delay)
    if settings.redis is not None:
        from oro_sync.pushers.redis_channel import RedisChannelPusher

        services.append(RedisChannelPusher(settings.redis, dispatcher, reactor, *delays))
    if settings.amqp is not None:
        from oro_sync.pushers.amqp import AmqpPusher

        services.append(AmqpPusher(settings.amqp, dispatcher, reactor, *delays))
    if settings.http is not None:
        from oro_sync.pushers.http import HttpPusher, PublishResource

        http = settings.http
        services.append(HttpPusher(http.listen, http.path, PublishResource(dispatcher, http.secret),
                                   reactor, settings.max_message_size))
    return services


class _DropLogService(service.Service):
    """Stops the drop summary's timer with the server (first in the list,
    so stopped after the pushers)."""

    def __init__(self, drops: DropLog):
        self.drops = drops

    def stopService(self) -> Any:
        super().stopService()
        self.drops.stop()
