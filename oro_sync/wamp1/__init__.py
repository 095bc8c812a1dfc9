"""WAMP v1 front end: message grammar (pure), server protocol and factory."""

from oro_sync.wamp1.factory import WampServerFactory
from oro_sync.wamp1.protocol import WampServerProtocol
from oro_sync.wamp1.pubsub import PUBLISH, SUBSCRIBE, exportPub, exportSub
from oro_sync.wamp1.rpc import CallError, exportRpc

__all__ = [
    "CallError", "PUBLISH", "SUBSCRIBE", "WampServerFactory", "WampServerProtocol",
    "exportPub", "exportRpc", "exportSub",
]
