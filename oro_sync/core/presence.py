"""Presence: who is connected and who is subscribed where.

What Gos's ClientManipulator gives topic handlers (``findByUsername``,
``getAll``, ``findByRoles``, ``getClient``) and what Crossbar's WAMP meta
API (``wamp.session.*``, ``wamp.subscription.*``) gives backends, asked of
one small interface, :class:`IPresence`, so that the answers can later come
from every node of a cluster (a Redis registry) instead of this one.

:class:`LocalPresence` answers from this node's hub.  Its methods return
plain values; a cluster-wide implementation may return Deferreds, so
callers that can wait (the meta API does) go through ``maybeDeferred``.

It also tells :class:`IPresenceObserver` objects (the WAMP v2 meta events)
when sessions join and leave and subscriptions come and go, for WAMP v1 and
v2 sessions alike: the server registers it as a session observer, and
:class:`ObservedPolicy` wraps the pub/sub policy both WAMP versions use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from zope.interface import Interface, implementer

from oro_sync.core.policy import IPubSubPolicy
from oro_sync.logs import Logger

__all__ = ["IPresence", "IPresenceObserver", "LocalPresence", "ObservedPolicy", "SessionInfo"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What presence tells about one session (never its ticket)."""

    session_id: str
    #: The username of a user ticket, else ``anonymous-<session id>``.
    username: str
    #: ``user``, ``anonymous`` (which includes backends), as in WELCOME.
    authrole: str
    #: The WebSocket subprotocol (``wamp``, ``wamp.2.json``, ...).
    protocol: str
    user_id: int | None = None
    backend: bool = False
    roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, session: Any) -> "SessionInfo":
        identity = session.identity
        return cls(session.session_id, identity.username,
                   "anonymous" if identity.anonymous else "user",
                   getattr(session, "protocol", ""), identity.user_id, bool(identity.backend),
                   tuple(getattr(identity, "roles", ()) or ()))

    @property
    def anonymous(self) -> bool:
        return self.authrole != "user"


class IPresence(Interface):
    """Who is connected, and who is subscribed to a topic."""

    def count(authroles: Iterable[str] | None = None) -> int:
        """Sessions connected (only those of ``authroles`` if given)."""

    def sessions(authroles: Iterable[str] | None = None) -> list:
        """Every session's :class:`SessionInfo` (only ``authroles`` if given)."""

    def get(session_id: str) -> Any:
        """One session's SessionInfo, or None."""

    def find_by_username(username: str, topic_uri: str | None = None) -> list:
        """The sessions of ``username`` (in ``topic_uri`` only, if given)."""

    def is_connected(username: str) -> bool:
        """Whether ``username`` has at least one session."""

    def subscribers(topic_uri: str) -> list:
        """SessionInfo of every subscriber of ``topic_uri`` (empty if none)."""


class IPresenceObserver(Interface):
    """Told of presence changes (called synchronously, in order)."""

    def joined(info: SessionInfo) -> None: ...
    def left(info: SessionInfo) -> None: ...
    def subscribed(info: SessionInfo, topic_uri: str) -> None: ...
    def unsubscribed(info: SessionInfo, topic_uri: str) -> None: ...


@implementer(IPresence)
class LocalPresence:
    """Presence of this node, read from its hub (sessions and topics)."""

    _log = Logger()

    def __init__(self, hub: Any):
        self.hub = hub
        self.observers: list[Any] = []

    # -- IPresence ------------------------------------------------------------------

    def count(self, authroles: Iterable[str] | None = None) -> int:
        if authroles is None:
            return len(self.hub.sessions)
        return len(self.sessions(authroles))

    def sessions(self, authroles: Iterable[str] | None = None) -> list[SessionInfo]:
        infos = [SessionInfo.of(s) for s in list(self.hub.sessions.values())]
        if authroles is not None:
            wanted = set(authroles)
            infos = [i for i in infos if i.authrole in wanted]
        return infos

    def get(self, session_id: str) -> SessionInfo | None:
        session = self.hub.sessions.get(str(session_id))
        return SessionInfo.of(session) if session is not None else None

    def find_by_username(self, username: str, topic_uri: str | None = None) -> list[SessionInfo]:
        pool = self._members(topic_uri) if topic_uri is not None else list(self.hub.sessions.values())
        return [SessionInfo.of(s) for s in pool if s.identity.username == username]

    def is_connected(self, username: str) -> bool:
        return any(s.identity.username == username for s in list(self.hub.sessions.values()))

    def subscribers(self, topic_uri: str) -> list[SessionInfo]:
        return [SessionInfo.of(s) for s in self._members(topic_uri)]

    # -- Gos's ClientManipulator, by its names ------------------------------------

    def get_all(self, topic_uri: str, anonymous: bool = False) -> list[SessionInfo]:
        """Subscribers of ``topic_uri``; users only unless ``anonymous``."""
        return [i for i in self.subscribers(topic_uri) if anonymous or not i.anonymous]

    def find_by_roles(self, topic_uri: str, roles: Iterable[str]) -> list[SessionInfo]:
        wanted = set(roles)
        return [i for i in self.subscribers(topic_uri) if wanted.intersection(i.roles)]

    findByUsername = find_by_username
    getAll = get_all
    findByRoles = find_by_roles

    def _members(self, topic_uri: str) -> list[Any]:
        topic = self.hub.topics.get(topic_uri)
        return list(topic.subscribers.values()) if topic is not None else []

    # -- what the server tells it ---------------------------------------------------

    def add_observer(self, observer: Any) -> None:
        self.observers.append(observer)

    def sessionOpened(self, session: Any) -> None:
        """A session joined (the factory's session observer hook)."""
        if self.observers:
            self._tell("joined", SessionInfo.of(session))

    def sessionClosed(self, session: Any) -> None:
        if self.observers:
            self._tell("left", SessionInfo.of(session))

    def subscription_changed(self, session: Any, topic_uri: str, subscribed: bool) -> None:
        if self.observers:
            self._tell("subscribed" if subscribed else "unsubscribed", SessionInfo.of(session), topic_uri)

    def _tell(self, what: str, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, what)(*args)
            except Exception:  # an observer's bug must not break joining or leaving
                self._log.failure("presence observer failed on {what}", what=what)


@implementer(IPubSubPolicy)
class ObservedPolicy:
    """The pub/sub policy, reporting subscriptions made and ended to presence.

    Both WAMP versions subscribe and unsubscribe through the policy, so this
    is the one place that sees every accepted subscription (after the topic
    handlers accepted it) and every end of one, whatever the protocol.  An
    end is reported just before it happens, while the topic still exists.
    """

    def __init__(self, policy: Any, presence: LocalPresence):
        self.policy = policy
        self.presence = presence

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def subscribe(self, session: Any, topic_uri: str) -> Any:
        before = topic_uri in session.subscriptions
        result = self.policy.subscribe(session, topic_uri)
        if not before and topic_uri in session.subscriptions:
            self.presence.subscription_changed(session, topic_uri, True)
        return result

    def unsubscribe(self, session: Any, topic_uri: str) -> Any:
        if topic_uri in session.subscriptions:
            self.presence.subscription_changed(session, topic_uri, False)
        return self.policy.unsubscribe(session, topic_uri)

    def publish(self, session: Any, request: Any) -> Any:
        return self.policy.publish(session, request)

    def session_closed(self, session: Any) -> Any:
        for uri in list(session.subscriptions):
            self.presence.subscription_changed(session, uri, False)
        return self.policy.session_closed(session)
