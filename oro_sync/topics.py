"""Kept so that existing configurations naming ``oro_sync.topics.<Handler>``
keep working; the handlers live in :mod:`oro_sync.oro.topics`."""

from oro_sync.oro.topics import (  # noqa: F401
    AbstractTopic, BroadcastTopic, SecuredTopic, SyncFailTopic, Topic, WebsocketPingTopic)

__all__ = ["AbstractTopic", "BroadcastTopic", "SecuredTopic", "SyncFailTopic", "Topic",
           "WebsocketPingTopic"]
