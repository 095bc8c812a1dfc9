"""WAMP v2 messages the router sends, as lists for the session's serializer.

The other half of :mod:`oro_sync.wamp2.messages`, which parses what clients
send: encoding needs no validation (the router builds these from values it
already checked), so it is kept apart from the parser.  Each returns the
message as a list; the session's serializer (:mod:`oro_sync.wamp2.serializers`)
turns it into JSON, MessagePack or CBOR.  Empty ``Arguments``
and ``ArgumentsKw`` are left out, as the specification allows.  The session,
broker and dealer reach these through ``messages`` (``m.event(...)``), which
re-exports them.
"""

from __future__ import annotations

from oro_sync.wamp2.codes import (
    ABORT, CHALLENGE, ERROR, EVENT, GOODBYE, INTERRUPT, INVOCATION, PUBLISHED, REGISTERED, RESULT, SUBSCRIBED,
    UNREGISTERED, UNSUBSCRIBED, WELCOME,
)

__all__ = [
    "abort", "challenge", "error", "event", "goodbye", "interrupt", "invocation", "progress",
    "published", "registered", "result", "subscribed", "unregistered", "unsubscribed", "welcome",
]


def _with_payload(msg: list, args: list | None, kwargs: dict | None) -> list:
    """Append ``Arguments``/``ArgumentsKw`` only when there is something to
    send; ``ArgumentsKw`` needs ``Arguments`` before it, so ``[]`` stands in."""
    if kwargs:
        msg.append(args if args is not None else [])
        msg.append(kwargs)
    elif args:
        msg.append(args)
    return msg


def welcome(session_id: int, details: dict) -> list:
    return [WELCOME, session_id, details]


def abort(reason: str, message: str | None = None) -> list:
    return [ABORT, {"message": message} if message else {}, reason]


def goodbye(reason: str, message: str | None = None) -> list:
    return [GOODBYE, {"message": message} if message else {}, reason]


def error(request_type: int, request_id: int, error_uri: str, args: list | None = None,
          kwargs: dict | None = None) -> list:
    return _with_payload([ERROR, request_type, request_id, {}, error_uri], args, kwargs)


def published(request_id: int, publication: int) -> list:
    return [PUBLISHED, request_id, publication]


def subscribed(request_id: int, subscription: int) -> list:
    return [SUBSCRIBED, request_id, subscription]


def unsubscribed(request_id: int) -> list:
    return [UNSUBSCRIBED, request_id]


def event(subscription: int, publication: int, args: list | None, kwargs: dict | None,
          details: dict | None = None) -> list:
    return _with_payload([EVENT, subscription, publication, details or {}], args, kwargs)


def result(request_id: int, args: list | None, kwargs: dict | None) -> list:
    return _with_payload([RESULT, request_id, {}], args, kwargs)


def registered(request_id: int, registration: int) -> list:
    return [REGISTERED, request_id, registration]


def unregistered(request_id: int) -> list:
    return [UNREGISTERED, request_id]


def invocation(request_id: int, registration: int, args: list | None, kwargs: dict | None,
               details: dict | None = None) -> list:
    return _with_payload([INVOCATION, request_id, registration, details or {}], args, kwargs)


def interrupt(request_id: int) -> list:
    return [INTERRUPT, request_id, {}]



def challenge(authmethod: str, extra: dict | None = None) -> list:
    return [CHALLENGE, authmethod, extra or {}]


def progress(request_id: int, args: list | None, kwargs: dict | None) -> list:
    """A progressive RESULT (the callee yielded with ``progress: true``)."""
    return _with_payload([RESULT, request_id, {"progress": True}], args, kwargs)
