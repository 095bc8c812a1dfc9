"""The WAMP session meta API, for backends: Crossbar's procedures and events.

Procedures (CALL)::

    wamp.session.count([filter_authroles])        -> int
    wamp.session.list([filter_authroles])         -> [session id, ...]
    wamp.session.get(session_id)                  -> {session, authid, authrole, ...}
    wamp.subscription.lookup(topic[, options])    -> subscription id or null
    wamp.subscription.list_subscribers(sub_id)    -> [session id, ...]
    wamp.subscription.count_subscribers(sub_id)   -> int

Events (SUBSCRIBE)::

    wamp.session.on_join          [details as wamp.session.get]
    wamp.session.on_leave         [session id, authid, authrole]
    wamp.subscription.on_subscribe    [session id, subscription id]
    wamp.subscription.on_unsubscribe  [session id, subscription id]

They count WAMP v1 and v2 sessions alike (v1 session ids are strings, v2
ones integers), from the hub's :class:`~oro_sync.core.presence.IPresence`.
Only sessions the router's ``may_use_meta`` rule admits (backends, injected
by the server) may call them or subscribe to them: users must not see each
other.  Subscriptions to ``wamp.*`` topics themselves are not reported.
Meta events are delivered on this node (not through the broker).
"""

from __future__ import annotations

from typing import Any, Callable

from zope.interface import implementer

from oro_sync.core.payload import from_v2
from oro_sync.core.presence import IPresenceObserver, SessionInfo

__all__ = ["EVENTS", "MetaApi", "MetaError", "is_meta"]

ON_JOIN = "wamp.session.on_join"
ON_LEAVE = "wamp.session.on_leave"
ON_SUBSCRIBE = "wamp.subscription.on_subscribe"
ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe"
EVENTS = frozenset((ON_JOIN, ON_LEAVE, ON_SUBSCRIBE, ON_UNSUBSCRIBE))

ERROR_NO_SUCH_SESSION = "wamp.error.no_such_session"
ERROR_NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
ERROR_INVALID_ARGUMENT = "wamp.error.invalid_argument"


def is_meta(uri: str) -> bool:
    """A URI of the reserved ``wamp.`` namespace (meta procedures and topics)."""
    return uri.startswith("wamp.")


class MetaError(Exception):
    """A meta call's error: its URI and a message."""

    def __init__(self, uri: str, message: str):
        super().__init__(message)
        self.uri = uri
        self.message = message


def wire_id(session_id: str) -> int | str:
    """A session id as WAMP shows it: v2's are integers, v1's stay strings."""
    return int(session_id) if session_id.isdigit() else session_id


def details(info: SessionInfo) -> dict:
    return {"session": wire_id(info.session_id), "authid": info.username, "authrole": info.authrole,
            "authmethod": "ticket" if (info.backend or not info.anonymous) else "anonymous",
            "authprovider": "oro-sync", "transport": {"protocol": info.protocol}}


def _roles(args: list) -> list[str] | None:
    if not args or args[0] is None:
        return None
    roles = args[0]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise MetaError(ERROR_INVALID_ARGUMENT, "filter_authroles must be a list of strings")
    return roles


@implementer(IPresenceObserver)
class MetaApi:
    """The meta procedures and events of one router.

    :param presence: the hub's IPresence (also told to report to this).
    :param subscription_id: ``subscription_id(uri) -> int`` (the router's).
    :param uri_of: ``uri_of(subscription id) -> uri or None``.
    :param deliver: ``deliver(topic_uri, event)`` to this node's subscribers.
    """

    def __init__(self, presence: Any, subscription_id: Callable[[str], int],
                 uri_of: Callable[[int], str | None], deliver: Callable[[str, Any], None]):
        self.presence = presence
        self._subscription_id = subscription_id
        self._uri_of = uri_of
        self._deliver = deliver
        self._procedures: dict[str, Callable[[list, dict], Any]] = {
            "wamp.session.count": lambda a, k: presence.count(_roles(a)),
            "wamp.session.list": lambda a, k: [wire_id(i.session_id) for i in presence.sessions(_roles(a))],
            "wamp.session.get": self._get,
            "wamp.subscription.lookup": self._lookup,
            "wamp.subscription.list_subscribers":
                lambda a, k: [wire_id(i.session_id) for i in presence.subscribers(self._topic(a))],
            "wamp.subscription.count_subscribers": lambda a, k: len(presence.subscribers(self._topic(a))),
        }
        presence.add_observer(self)

    def procedure(self, uri: str) -> Callable[[list, dict], Any] | None:
        """The meta procedure ``uri`` (call it with (args, kwargs)), or None."""
        return self._procedures.get(uri)

    # -- procedures -------------------------------------------------------------

    def _get(self, args: list, kwargs: dict) -> dict:
        if not args or not isinstance(args[0], (int, str)) or isinstance(args[0], bool):
            raise MetaError(ERROR_INVALID_ARGUMENT, "wamp.session.get takes a session id")
        info = self.presence.get(str(args[0]))
        if info is None:
            raise MetaError(ERROR_NO_SUCH_SESSION, f"no session {args[0]}")
        return details(info)

    def _lookup(self, args: list, kwargs: dict) -> int | None:
        if not args or not isinstance(args[0], str):
            raise MetaError(ERROR_INVALID_ARGUMENT, "wamp.subscription.lookup takes a topic URI")
        options = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        if options.get("match", "exact") != "exact":
            return None  # only exact subscriptions exist here
        return self._subscription_id(args[0]) if self.presence.subscribers(args[0]) else None

    def _topic(self, args: list) -> str:
        if not args or not isinstance(args[0], int) or isinstance(args[0], bool):
            raise MetaError(ERROR_INVALID_ARGUMENT, "takes a subscription id")
        uri = self._uri_of(args[0])
        if uri is None or not self.presence.subscribers(uri):
            raise MetaError(ERROR_NO_SUCH_SUBSCRIPTION, f"no subscription {args[0]}")
        return uri

    # -- events (IPresenceObserver) -----------------------------------------------

    def joined(self, info: SessionInfo) -> None:
        self._deliver(ON_JOIN, from_v2([details(info)], None))

    def left(self, info: SessionInfo) -> None:
        self._deliver(ON_LEAVE, from_v2([wire_id(info.session_id), info.username, info.authrole], None))

    def subscribed(self, info: SessionInfo, topic_uri: str) -> None:
        if not is_meta(topic_uri):
            self._deliver(ON_SUBSCRIBE, from_v2([wire_id(info.session_id),
                                                 self._subscription_id(topic_uri)], None))

    def unsubscribed(self, info: SessionInfo, topic_uri: str) -> None:
        if not is_meta(topic_uri):
            self._deliver(ON_UNSUBSCRIBE, from_v2([wire_id(info.session_id),
                                                   self._subscription_id(topic_uri)], None))
