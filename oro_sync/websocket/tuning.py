"""Adjustments to Autobahn that keep its behaviour and cut its per-connection cost."""

from __future__ import annotations

import types
from typing import Any

#: Seconds to wait for the peer's answer to our close frame before dropping
#: TCP; it fires up to one second early (txaio's batched timers), so 2-3 s,
#: inside the default shutdown_timeout of 3 s.
CLOSE_HANDSHAKE_TIMEOUT = 3.0


def skip_pformat_unless_debug() -> None:
    """Autobahn pretty-prints its ~45 options for a debug line on every new
    connection, before the log level is checked: a fifth of the cost of a
    connection (Oro's backend opens one per publish).  Format only when
    Autobahn's debug logging is on.  Idempotent; called by the factory."""
    import txaio
    from autobahn.websocket import protocol as ab_protocol

    if getattr(ab_protocol.pformat, "_oro_sync_real", None) is not None:
        return
    real = ab_protocol.pformat

    def pformat_if_debug(obj: Any, *args: Any, **kwargs: Any) -> str:
        if txaio.get_global_log_level() in ("debug", "trace"):
            return real(obj, *args, **kwargs)
        return "<not formatted: debug logging is off>"

    pformat_if_debug._oro_sync_real = real  # type: ignore[attr-defined]
    ab_protocol.pformat = pformat_if_debug


def as_class_attr(value: Any) -> Any:
    """A protocol option as a class attribute that reads back unchanged.

    A plain function (``perMessageCompressionAccept`` is a lambda) would
    become a method there and get the protocol as an extra first argument.
    """
    return staticmethod(value) if isinstance(value, types.FunctionType) else value


def protocol_with_options(base: type, factory: Any) -> type:
    """A subclass of ``base`` carrying ``factory``'s protocol options.

    Autobahn copies every option from the factory into each protocol
    instance's ``__dict__`` unless the instance already has it; as class
    attributes they are found there and shared, which saves about 2 KB per
    connection.
    """
    attrs = {name: as_class_attr(getattr(factory, name)) for name in base.CONFIG_ATTRS
             if hasattr(factory, name)}
    return type(base.__name__, (base,), {"__module__": base.__module__, **attrs})
