"""WAMP v1 front end: message grammar (pure), server protocol and factory.

The public names are loaded on first use, so that importing a pure module
of the package (``oro_sync.wamp1.messages``, as the WAMP v2 front end does)
does not pull in the factory, which itself imports the WAMP v2 front end.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WampServerFactory": "oro_sync.wamp1.factory",
    "WampServerProtocol": "oro_sync.wamp1.protocol",
    "PUBLISH": "oro_sync.wamp1.pubsub",
    "SUBSCRIBE": "oro_sync.wamp1.pubsub",
    "exportPub": "oro_sync.wamp1.pubsub",
    "exportSub": "oro_sync.wamp1.pubsub",
    "CallError": "oro_sync.wamp1.rpc",
    "exportRpc": "oro_sync.wamp1.rpc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
