"""Presence across the cluster: who is connected, how many subscribe where.

:class:`IClusterPresence` is a small interface whose queries return
Deferreds, so that the local presence API and the WAMP meta API can answer
for every node.  :class:`HubPresence` answers for one process (the
in-memory broker); :class:`RedisPresence` keeps a registry in Redis:

- ``<prefix>presence:nodes``: a sorted set of node ids scored by the time
  (seconds since the epoch) until which each node's entries are valid;
- ``<prefix>presence:<node>:users``: a hash, username -> connections (named
  users only; anonymous browsers and backends are in the session count);
- ``<prefix>presence:<node>:topics``: a hash, topic URI -> subscribers;
- ``<prefix>presence:<node>:sessions``: the node's session count.

Every ``broker.presence_interval`` seconds a node sends only what changed
since its last update (everything after it connected), and renews the
keys' expiry (``broker.presence_ttl``).  A node that dies stops renewing:
queries ignore it once its score is past, and Redis drops its keys when
they expire, so it is gone within ``presence_ttl`` seconds.  A node that
stops cleanly removes its entries at once.  The registry lives on the first
Redis of ``broker.url``.  An update is one pass over this node's sessions and
topics (a few ms for tens of thousands of sessions, once per interval) and
sends O(changes); a query costs O(nodes) Redis commands.
Node clocks must agree to within a fraction of ``presence_ttl`` (NTP).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from zope.interface import Interface, implementer

import txredisapi

from oro_sync.brokers.link import RedisLink
from oro_sync.brokers.settings import BrokerSettings
from oro_sync.logs import Logger

#: Fields per HSET/HDEL command when a large node sends everything.
CHUNK = 1000


class IClusterPresence(Interface):
    """Presence on every node; each query returns a Deferred."""

    def nodes() -> defer.Deferred:
        """The ids of the live nodes (list of str)."""

    def connected_users() -> defer.Deferred:
        """username -> number of connections, over all nodes (named users only)."""

    def is_connected(username: str) -> defer.Deferred:
        """Whether ``username`` has a connection on any node (bool)."""

    def session_count() -> defer.Deferred:
        """Sessions on all nodes, anonymous ones and backends included (int)."""

    def subscriber_count(topic_uri: str) -> defer.Deferred:
        """Subscribers of ``topic_uri`` on all nodes (int)."""

    def subscriber_counts() -> defer.Deferred:
        """topic URI -> subscribers, over all nodes."""


def snapshot(hub: Any) -> tuple[Counter, dict[str, int], int]:
    """This node's (users, topics, sessions) as the registry holds them."""
    users: Counter = Counter()
    for session in hub.sessions.values():
        identity = getattr(session, "identity", None)
        if identity is not None and not identity.anonymous:
            users[identity.username] += 1
    topics = {uri: len(topic) for uri, topic in hub.topics.topics.items()}
    return users, topics, len(hub.sessions)


@implementer(IClusterPresence)
class HubPresence:
    """One process's presence (no broker between nodes)."""

    def __init__(self, hub: Any, node_id: str = "local"):
        self.hub = hub
        self.node_id = node_id

    def nodes(self) -> defer.Deferred:
        return defer.succeed([self.node_id])

    def connected_users(self) -> defer.Deferred:
        return defer.succeed(dict(snapshot(self.hub)[0]))

    def is_connected(self, username: str) -> defer.Deferred:
        return defer.succeed(username in snapshot(self.hub)[0])

    def session_count(self) -> defer.Deferred:
        return defer.succeed(len(self.hub.sessions))

    def subscriber_count(self, topic_uri: str) -> defer.Deferred:
        topic = self.hub.topics.topics.get(topic_uri)
        return defer.succeed(len(topic) if topic is not None else 0)

    def subscriber_counts(self) -> defer.Deferred:
        return defer.succeed(snapshot(self.hub)[1])


class RegistryUnavailable(Exception):
    """The presence registry's Redis is not reachable right now."""


@implementer(IClusterPresence)
class RedisPresence(service.Service):
    """This node's entries in the Redis registry, and queries over all nodes.

    :param clock: drives the updates and gives the time (the reactor).
    """

    log = Logger()

    def __init__(self, hub: Any, settings: BrokerSettings, reactor: Any = None, clock: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        self.hub = hub
        self.settings = settings
        self.clock = clock if clock is not None else reactor
        self.node_id = settings.node_id
        p = settings.channel_prefix + "presence:"
        self.nodes_key = p + "nodes"
        self._key = lambda node, what: f"{p}{node}:{what}"
        self.link = RedisLink(settings.urls[0], txredisapi.RedisProtocol, reactor, self._up,
                              self._down, settings.reconnect_max_delay,
                              convert_numbers=False,  # a username "007" stays "007"
                              tls_ca=settings.tls_ca)
        self._sent: tuple[dict, dict, int] | None = None
        self._waiting_up: list[defer.Deferred] = []
        self._last: defer.Deferred = defer.succeed(None)
        self._loop = task.LoopingCall(self.update)
        self._loop.clock = self.clock

    # -- the service ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.link.start()
        self._loop.start(self.settings.presence_interval, now=False)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[override]
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        proto = self.link.protocol
        if proto is not None:
            try:  # a clean stop leaves the registry at once
                yield proto.execute_command("ZREM", self.nodes_key, self.node_id)
                yield proto.execute_command("DEL", *(self._key(self.node_id, w)
                                                     for w in ("users", "topics", "sessions")))
            except Exception:
                pass
        yield self.link.stop()

    def _up(self, proto: Any) -> None:
        self._sent = None  # send everything again
        self.update()
        waiting, self._waiting_up = self._waiting_up, []
        for d in waiting:
            d.callback(None)

    def when_up(self) -> defer.Deferred:
        """Fires once the registry's Redis link is connected (at once if it
        is): from then on :meth:`update` sends (for tests and tools)."""
        if self.link.up:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiting_up.append(d)
        return d

    def _down(self, why: str) -> None:
        self._sent = None  # the broker logs the outage

    # -- this node's entries -------------------------------------------------

    def update(self) -> None:
        """Send what changed since the last update and renew the expiry."""
        proto = self.link.protocol
        if proto is None:
            return
        users, topics, sessions = snapshot(self.hub)
        ttl_ms = int(self.settings.presence_ttl * 1000)
        cmd = proto.execute_command
        sent = self._sent
        results = []
        for what, now in (("users", users), ("topics", topics)):
            key = self._key(self.node_id, what)
            before = sent[0 if what == "users" else 1] if sent is not None else None
            if before is None:
                results.append(cmd("DEL", key))
                changed, gone = list(now.items()), []
            else:
                changed = [(k, v) for k, v in now.items() if before.get(k) != v]
                gone = [k for k in before if k not in now]
            for i in range(0, len(changed), CHUNK):
                flat = [x for pair in changed[i:i + CHUNK] for x in pair]
                results.append(cmd("HSET", key, *flat))
            for i in range(0, len(gone), CHUNK):
                results.append(cmd("HDEL", key, *gone[i:i + CHUNK]))
            renewed = cmd("PEXPIRE", key, ttl_ms)
            if now:
                # 0: the key is gone although it holds entries (it expired
                # while this node was stalled longer than the ttl, or Redis
                # lost it): the next update sends everything again.
                renewed.addCallback(self._renewed)
            results.append(renewed)
        results.append(cmd("SET", self._key(self.node_id, "sessions"), sessions, "PX", ttl_ms))
        now_s = self.clock.seconds()
        results.append(cmd("ZADD", self.nodes_key, now_s + self.settings.presence_ttl, self.node_id))
        results.append(cmd("ZREMRANGEBYSCORE", self.nodes_key, "-inf", f"({now_s}"))
        self._sent = (dict(users), topics, sessions)
        done = defer.gatherResults(results, consumeErrors=True)
        done.addErrback(self._update_failed)
        self._last = done

    def _update_failed(self, failure: Any) -> None:
        self._sent = None

    def _renewed(self, existed: Any) -> Any:
        if existed == 0:
            self._sent = None
        return existed

    def flushed(self) -> defer.Deferred:
        """Fires once Redis has applied the last update (for tests)."""
        d: defer.Deferred = defer.Deferred()
        self._last.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    # -- queries ---------------------------------------------------------------

    def _proto(self) -> Any:
        proto = self.link.protocol
        if proto is None:
            raise RegistryUnavailable(f"Redis {self.link.url} is not reachable")
        return proto

    @defer.inlineCallbacks
    def nodes(self):
        proto = self._proto()
        live = yield proto.execute_command("ZRANGEBYSCORE", self.nodes_key,
                                           f"({self.clock.seconds()}", "+inf")
        return [str(n) for n in (live or [])]

    @defer.inlineCallbacks
    def _per_node(self, *command: Any):
        """``command`` (with the node's key for ``command[1]``) on every live node."""
        nodes = yield self.nodes()
        proto = self._proto()
        replies = yield defer.gatherResults(
            [proto.execute_command(command[0], self._key(n, command[1]), *command[2:])
             for n in nodes])
        if command[0] == "HGETALL":
            replies = [dict(zip(r[::2], r[1::2])) if isinstance(r, list) else {} for r in replies]
        return replies

    @defer.inlineCallbacks
    def connected_users(self):
        total: Counter = Counter()
        for reply in (yield self._per_node("HGETALL", "users")):
            for name, n in (reply or {}).items():
                total[str(name)] += int(n)
        return dict(total)

    @defer.inlineCallbacks
    def is_connected(self, username: str):
        replies = yield self._per_node("HEXISTS", "users", username)
        return any(bool(r) for r in replies)

    @defer.inlineCallbacks
    def session_count(self):
        replies = yield self._per_node("GET", "sessions")
        return sum(int(r or 0) for r in replies)

    @defer.inlineCallbacks
    def subscriber_count(self, topic_uri: str):
        replies = yield self._per_node("HGET", "topics", topic_uri)
        return sum(int(r or 0) for r in replies)

    @defer.inlineCallbacks
    def subscriber_counts(self):
        total: Counter = Counter()
        for reply in (yield self._per_node("HGETALL", "topics")):
            for uri, n in (reply or {}).items():
                total[str(uri)] += int(n)
        return dict(total)
