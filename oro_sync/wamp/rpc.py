"""Server procedures: registration in the AutobahnPython 0.8 style and error mapping.

Both WAMP versions call the same procedures; WAMP v2 maps the internal error
URI to ``wamp.error.runtime_error``.

Procedures are plain callables; results and errors may be Deferreds.  An
exception maps to CALLERROR the way AutobahnPython 0.8 did it, so clients
written against it see the same errors:

- no args: ``http://api.wamp.ws/error#generic``, "generic error";
- one string arg: the generic URI with that text;
- ``(uri, desc)`` or ``(uri, desc, details)`` strings (plus any details):
  as given;
- anything else: ``http://api.wamp.ws/error#internal``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

#: The error URIs of AutobahnPython 0.8 (WAMP v1's), which clients written
#: against it know.
ERROR_URI_BASE = "http://api.wamp.ws/error#"
ERROR_GENERIC = ERROR_URI_BASE + "generic"
ERROR_INTERNAL = ERROR_URI_BASE + "internal"

_RPC_ATTR = "_oro_sync_rpc_id"


def exportRpc(arg: Any = None) -> Any:
    """Mark a method for :meth:`RpcRegistry.registerForRpc`.

    ``@exportRpc`` exports under the method's name, ``@exportRpc("name")``
    under the given name (appended to the base URI).
    """
    if callable(arg):
        setattr(arg, _RPC_ATTR, arg.__name__)
        return arg

    def mark(func: Callable) -> Callable:
        setattr(func, _RPC_ATTR, arg if arg is not None else func.__name__)
        return func

    return mark


class CallError(Exception):
    """An application error with an explicit URI, description and details."""

    def __init__(self, uri: str, desc: str = "", details: Any = None):
        args = (uri, desc) if details is None else (uri, desc, details)
        super().__init__(*args)


def error_triple(exc: BaseException) -> tuple[str, str, Any]:
    """Map an exception raised by a procedure to (errorURI, errorDesc, details)."""
    args = exc.args
    if not args:
        return ERROR_GENERIC, "generic error", None
    if len(args) == 1:
        if isinstance(args[0], str):
            return ERROR_GENERIC, args[0], None
        return ERROR_INTERNAL, "invalid error description type", None
    if len(args) in (2, 3) and isinstance(args[0], str) and isinstance(args[1], str):
        return args[0], args[1], (args[2] if len(args) == 3 else None)
    return ERROR_INTERNAL, "invalid error arguments", None


class RpcRegistry:
    """procedure URI -> callable."""

    def __init__(self) -> None:
        self.procs: dict[str, Callable[..., Any]] = {}

    def registerForRpc(self, obj: Any, baseUri: str = "", methods: list | None = None) -> list[str]:
        """Register every ``@exportRpc`` method of ``obj`` under ``baseUri + name``."""
        uris = []
        for _, member in inspect.getmembers(obj, callable):
            rpc_id = getattr(member, _RPC_ATTR, None)
            if rpc_id is None:
                continue
            if methods is not None and member.__func__ not in methods and member not in methods:
                continue
            uri = baseUri + rpc_id
            self.procs[uri] = member
            uris.append(uri)
        return uris

    def registerMethodForRpc(self, uri: str, obj: Any, proc: Callable) -> None:
        """Register ``proc`` (an unbound function) to be called as ``proc(obj, *args)``."""
        self.procs[uri] = lambda *args: proc(obj, *args)

    def registerProcedureForRpc(self, uri: str, proc: Callable) -> None:
        """Register a plain callable, called as ``proc(*args)``."""
        self.procs[uri] = proc

    def lookup(self, uri: str) -> Callable | None:
        return self.procs.get(uri)
