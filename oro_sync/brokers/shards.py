"""Which Redis server carries which topic.

With several Redis URLs the broker spreads topics over them by a hash of the
topic URI: every node computes the same map from the same ordered list, so a
topic's publications and its subscriptions meet on one server, and each
server carries only its share of the traffic.  CRC32 is stable across
processes and Python versions (Python's own ``hash`` of a str is salted per
process and would send each node elsewhere).  Changing the list moves topics:
nodes of one cluster must be given the same list in the same order.
"""

from __future__ import annotations

import zlib
from typing import Generic, Sequence, TypeVar

T = TypeVar("T")


class ShardMap(Generic[T]):
    """Maps a topic URI to one of ``shards`` (in the order given)."""

    def __init__(self, shards: Sequence[T]):
        if not shards:
            raise ValueError("a shard map needs at least one shard")
        self.shards = list(shards)

    def index(self, topic: str) -> int:
        n = len(self.shards)
        if n == 1:
            return 0
        return zlib.crc32(topic.encode("utf-8", "surrogatepass")) % n

    def __call__(self, topic: str) -> T:
        return self.shards[self.index(topic)]
