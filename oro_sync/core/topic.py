"""Topics (a channel and its subscribers) and the registry that owns them.

Delivery is the hot path of the whole server: an event is encoded and framed
once per front end, and the same bytes are written to every receiver.
Receivers are chosen from normalized lists: ``exclude`` (a set of session ids)
and ``eligible`` (a set of session ids, or ``None`` for everyone).  The WAMP
profiles (Autobahn, Ratchet/Oro) are mapped to that form before delivery, in
:mod:`oro_sync.core.profiles`.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator

Send = Callable[[bytes], None]


class Topic:
    """One channel: its URI, its subscribers, and delivery to them."""

    __slots__ = ("uri", "subscribers", "_groups", "broker", "last_bytes", "__weakref__")

    def __init__(self, uri: str, broker: Any = None):
        self.uri = uri
        #: session id -> session, for handlers that look at who is here.
        self.subscribers: dict[str, Any] = {}
        # encoder -> {session id -> send_frame}: one frame per group.
        self._groups: dict[Any, dict[str, Send]] = {}
        #: The broker through which :meth:`broadcast` reaches every node.
        self.broker = broker
        #: Bytes the last :meth:`deliver` wrote (frame size × receivers), for
        #: metrics: counted once per publication, not once per receiver.
        self.last_bytes = 0

    def __len__(self) -> int:
        return len(self.subscribers)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.subscribers.values()))

    def __contains__(self, session: Any) -> bool:
        return getattr(session, "session_id", session) in self.subscribers

    def __repr__(self) -> str:
        return f"<Topic {self.uri!r} with {len(self.subscribers)} subscribers>"

    def add(self, session: Any) -> bool:
        sid = session.session_id
        if sid in self.subscribers:
            return False
        self.subscribers[sid] = session
        group = self._groups.get(session.encoder)
        if group is None:
            group = self._groups[session.encoder] = {}
        group[sid] = session.send_frame
        return True

    def remove(self, session: Any) -> bool:
        sid = session.session_id
        if self.subscribers.pop(sid, None) is None:
            return False
        group = self._groups.get(session.encoder)
        if group is not None:
            group.pop(sid, None)
            if not group:
                del self._groups[session.encoder]
        return True

    def broadcast(self, event: Any, exclude: Collection[str] = (), eligible: Collection[str] = ()) -> None:
        """Send ``event`` to subscribers, with Ratchet/Oro semantics.

        Sessions in ``exclude`` are skipped; a non-empty ``eligible`` keeps
        only the sessions it names, and an empty one means everyone.  Goes
        through the broker so that every node's subscribers receive it.
        """
        exclude_set = frozenset(exclude) if exclude else frozenset()
        eligible_set = frozenset(eligible) if eligible else None
        if self.broker is not None:
            self.broker.publish_event(self.uri, event, exclude_set, eligible_set)
        else:
            self.deliver(event, exclude_set, eligible_set)

    def deliver(self, event: Any, exclude: Collection[str] = frozenset(),
                eligible: Collection[str] | None = None, publication_id: int = 0) -> int:
        """Write ``event`` to this node's receivers; return how many got it.

        An encoder returns None for an event its wire format cannot carry
        (a MessagePack subscriber and an integer beyond 64 bits): that group
        is skipped, the others still get the event.

        ``publication_id`` 0 lets each front end's encoder pick a new one
        (node-local events such as the keep-alive ping)."""
        count = nbytes = 0
        for encode, members in list(self._groups.items()):
            data = encode(self, event, publication_id)
            if data is None:  # this front end cannot carry the event (its encoder said why)
                continue
            if eligible is None:
                if not exclude or not any(sid in members for sid in exclude):
                    targets = list(members.values())  # a snapshot: a send may unsubscribe
                else:
                    targets = [send for sid, send in members.items() if sid not in exclude]
            else:
                targets = [members[sid] for sid in eligible if sid in members and sid not in exclude]
            for send in targets:
                send(data)
            count += len(targets)
            nbytes += len(data) * len(targets)
        self.last_bytes = nbytes
        return count


class TopicRegistry:
    """All topics with at least one subscriber on this node.

    A topic exists from its first subscriber to its last: empty topics are
    dropped at once, so memory follows the live subscriptions (GosWebSocket
    1.x kept every topic forever).  ``on_created`` / ``on_removed`` let other
    parts (timers, the Redis broker) follow topics coming and going.
    """

    def __init__(self, broker: Any = None, max_subscriptions: int = 0):
        self.topics: dict[str, Topic] = {}
        self.broker = broker
        #: Per-session subscription cap; 0 means unlimited.
        self.max_subscriptions = max_subscriptions
        self.on_created: list[Callable[[Topic], None]] = []
        self.on_removed: list[Callable[[Topic], None]] = []

    def get(self, uri: str) -> Topic | None:
        return self.topics.get(uri)

    def get_or_create(self, uri: str) -> Topic:
        topic = self.topics.get(uri)
        if topic is None:
            topic = self.topics[uri] = Topic(uri, self.broker)
            for callback in self.on_created:
                callback(topic)
        return topic

    def subscribe(self, session: Any, uri: str) -> Topic | None:
        """Add ``session`` to ``uri``; return the topic, or None if it was already there."""
        if uri in session.subscriptions:
            return None
        if self.max_subscriptions and len(session.subscriptions) >= self.max_subscriptions:
            raise SubscriptionLimitExceeded(self.max_subscriptions)
        topic = self.get_or_create(uri)
        topic.add(session)
        session.subscriptions.add(uri)
        return topic

    def unsubscribe(self, session: Any, uri: str) -> Topic | None:
        """Remove ``session`` from ``uri``; return the topic it left, or None."""
        if uri not in session.subscriptions:
            return None
        session.subscriptions.discard(uri)
        topic = self.topics.get(uri)
        if topic is None:
            return None
        topic.remove(session)
        if not topic.subscribers:
            self._drop(topic)
        return topic

    def forget(self, session: Any, topic: Topic) -> None:
        """Undo a subscription a handler refused (the session was already
        removed from ``topic``): drop it from the session and drop the topic
        if it is now empty."""
        topic.remove(session)
        session.subscriptions.discard(topic.uri)
        if not topic.subscribers:
            self._drop(topic)

    def leave_all(self, session: Any) -> list[Topic]:
        """Remove ``session`` from every topic (on disconnect)."""
        left = []
        for uri in list(session.subscriptions):
            topic = self.unsubscribe(session, uri)
            if topic is not None:
                left.append(topic)
        return left

    def _drop(self, topic: Topic) -> None:
        if self.topics.get(topic.uri) is topic:
            del self.topics[topic.uri]
            for callback in self.on_removed:
                callback(topic)


class SubscriptionLimitExceeded(Exception):
    """A session asked for more subscriptions than the configured maximum."""

    def __init__(self, limit: int):
        super().__init__(f"at most {limit} subscriptions per connection")
        self.limit = limit
