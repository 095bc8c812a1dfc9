"""The seam between whoever publishes (handlers, server code) and delivery.

Handlers never write to sockets: they publish through an :class:`IBroker`.
:class:`LocalBroker` delivers to this node's subscribers; a broker spanning
nodes (Redis) implements the same interface, carrying each
:class:`~oro_sync.core.publish.Publication` in its wire form.

While a policy runs the handlers of one client publish, every publication
they make carries that publish's id (:meth:`BrokerBase.publishing`), so a
WAMP v2 publisher's PUBLISHED and its subscribers' EVENTs agree.
"""

from __future__ import annotations

from contextlib import contextmanager
from time import perf_counter
from typing import Any, Collection, Iterator

from zope.interface import Interface, implementer

from oro_sync.core.metrics import LATENCY_SAMPLE
from oro_sync.core.publish import Publication


class IBroker(Interface):
    """Routes publications to the subscribers of a topic."""

    def publish(publication: Publication) -> int:
        """Deliver to the topic's subscribers on every node; return the
        number of local deliveries (remote ones are not known)."""

    def publish_event(topic_uri: str, event: Any, exclude: Collection[str] = frozenset(),
                      eligible: Collection[str] | None = None) -> int:
        """:meth:`publish` for a bare event: the publication id is the one of
        the client publish being handled, or a new one."""

    def local_only() -> Any:
        """A context manager: publications made inside reach this node's
        subscribers only (see :meth:`BrokerBase.local_only`)."""


class BrokerBase:
    """What every broker shares: the publication id of the publish in progress."""

    _current_id = 0

    @contextmanager
    def publishing(self, publication_id: int) -> Iterator[None]:
        """Publications made inside carry ``publication_id``."""
        outer, self._current_id = self._current_id, publication_id
        try:
            yield
        finally:
            self._current_id = outer

    def publish_event(self, topic_uri: str, event: Any, exclude: Collection[str] = frozenset(),
                      eligible: Collection[str] | None = None) -> int:
        return self.publish(Publication.of(topic_uri, event, exclude, eligible, self._current_id))

    @contextmanager
    def local_only(self) -> Iterator[None]:
        """Publications made inside reach this node's subscribers only.

        For what every node receives anyway (a push on the Redis channel,
        which each node subscribes to): handled on every node, it must not
        also be sent to the others.  A broker spanning nodes overrides
        this; a single node's broker is always local.
        """
        yield

    def publish(self, publication: Publication) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    #: The server's :class:`~oro_sync.core.metrics.Metrics` (or None) and the
    #: hub's outbox, told of sampled publications (or None: not measured).
    metrics: Any = None
    outbox: Any = None
    _until_sample = LATENCY_SAMPLE

    def deliver_here(self, topic: Any, publication: Publication) -> int:
        """Deliver ``publication`` to ``topic``'s subscribers on this node
        and count it; one call in :data:`LATENCY_SAMPLE` is timed until its
        frames are written (the outbox measures the publish-to-send latency).
        Every broker delivers here, whether the publication was made on this
        node or received from another one."""
        self._until_sample -= 1
        if self._until_sample or self.outbox is None:
            n = topic.deliver(publication.event, publication.exclude, publication.eligible,
                              publication.publication_id)
        else:
            self._until_sample = LATENCY_SAMPLE
            started = perf_counter()
            n = topic.deliver(publication.event, publication.exclude, publication.eligible,
                              publication.publication_id)
            if n:
                self.outbox.probe(started)
        if self.metrics is not None:
            counters = self.metrics.counters
            counters["events_delivered"] += n
            counters["event_bytes"] += topic.last_bytes
        return n


@implementer(IBroker)
class LocalBroker(BrokerBase):
    """Deliver to the subscribers held by one :class:`TopicRegistry`."""

    def __init__(self, registry: Any, metrics: Any = None, outbox: Any = None):
        self.registry = registry
        self.metrics = metrics
        #: Told of sampled publications, to measure publish-to-send latency.
        self.outbox = outbox

    def publish(self, publication: Publication) -> int:
        topic = self.registry.topics.get(publication.topic)
        if topic is None:
            return 0
        return self.deliver_here(topic, publication)
