"""AutobahnPython 0.8's per-connection registrations, on the connection.

In 0.8 a protocol subclass registers procedures and topics for its own
connection in ``onSessionOpen``; the WAMP sessions look them up before the
server's (:func:`oro_sync.wamp.contract.own_procedure`,
:class:`oro_sync.wamp1.pubsub.AutobahnPubSub`).  The registries are made on
first use, so a connection that registers nothing pays nothing.
"""

from __future__ import annotations

from typing import Any

from oro_sync.wamp.rpc import RpcRegistry
from oro_sync.wamp1.pubsub import PubSubRegistry


class PerConnectionRegistrations:
    """The 0.8 registration methods of a connection."""

    rpc_registry: RpcRegistry | None = None
    pubsub_registry: PubSubRegistry | None = None

    def _own_rpc(self) -> RpcRegistry:
        if self.rpc_registry is None:
            self.rpc_registry = RpcRegistry()
        return self.rpc_registry

    def _own_pubsub(self) -> PubSubRegistry:
        if self.pubsub_registry is None:
            self.pubsub_registry = PubSubRegistry()
        return self.pubsub_registry

    def registerForRpc(self, obj: Any, baseUri: str = "", methods: list | None = None) -> list[str]:
        return self._own_rpc().registerForRpc(obj, baseUri, methods)

    def registerMethodForRpc(self, uri: str, obj: Any, proc: Any) -> None:
        self._own_rpc().registerMethodForRpc(uri, obj, proc)

    def registerProcedureForRpc(self, uri: str, proc: Any) -> None:
        self._own_rpc().registerProcedureForRpc(uri, proc)

    def registerForPubSub(self, topicUri: str, prefixMatch: bool = False, pubsub: int = 3) -> None:
        self._own_pubsub().registerForPubSub(topicUri, prefixMatch, pubsub)

    def registerHandlerForSub(self, obj: Any, topicUri: str, handler: Any, prefixMatch: bool = False) -> None:
        self._own_pubsub().registerHandlerForSub(obj, topicUri, handler, prefixMatch)

    def registerHandlerForPub(self, obj: Any, topicUri: str, handler: Any, prefixMatch: bool = False) -> None:
        self._own_pubsub().registerHandlerForPub(obj, topicUri, handler, prefixMatch)

    def registerHandlerForPubSub(self, obj: Any, baseUri: str = "") -> None:
        self._own_pubsub().registerHandlerForPubSub(obj, baseUri)
