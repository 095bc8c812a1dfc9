"""``GET /metrics``: the server's figures in Prometheus' text format.

A custom prometheus-client Collector reads :class:`~oro_sync.core.metrics.Metrics`,
the hub and the ticket verifier *at scrape time*.  Nothing is counted twice:
the hot path keeps incrementing its plain counters and never calls into
prometheus-client, whose own Counter objects take a lock per increment.

Every metric is always exported (zero until something happens), so that
dashboards and alerts do not depend on an event having occurred first;
the broker's figures stay 0 with the local broker and are counted by the
Redis broker under the same names in ``Metrics.counters`` (``broker_reconnects``,
``broker_dropped``, ``broker_held``, ``broker_sent``, ``broker_received``,
``broker_malformed``).
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import (
    CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
from prometheus_client.twisted import MetricsResource

from oro_sync.core.metrics import LATENCY_BUCKETS
from oro_sync.ops.health import connection_count

#: Counters of ``Metrics.counters``: (exported name, help).
_COUNTERS = {
    "messages_in": ("oro_sync_messages_received", "WAMP messages received from clients."),
    "messages_out": ("oro_sync_messages_sent", "WAMP messages sent to one client (answers, not events)."),
    "bytes_in": ("oro_sync_received_bytes", "Payload bytes of the WAMP messages received."),
    "events_delivered": ("oro_sync_events_delivered", "Events delivered to subscribers (one per receiver)."),
    "slow_consumers_closed": ("oro_sync_slow_consumers_closed",
                              "Connections cut off for not reading their events."),
    "publishes_throttled": ("oro_sync_publishes_throttled", "Publishes dropped by the publish rate limit."),
    "handler_errors": ("oro_sync_handler_errors", "Exceptions raised by topic handlers."),
    "accept_pauses": ("oro_sync_accept_pauses", "Times accept() was paused for too many pending handshakes."),
    "broker_reconnects": ("oro_sync_broker_reconnects", "Reconnections of the broker to its server."),
    "broker_dropped": ("oro_sync_broker_publications_dropped",
                       "Publications for other nodes dropped (Redis away, the hold buffer full)."),
    "broker_held": ("oro_sync_broker_publications_held",
                    "Publications for other nodes held while Redis was away (sent once it is back)."),
    "broker_sent": ("oro_sync_broker_publications_sent", "Publications sent to other nodes (Redis PUBLISH)."),
    "broker_received": ("oro_sync_broker_publications_received",
                        "Publications received from other nodes and delivered here."),
    "broker_malformed": ("oro_sync_broker_malformed", "Messages on the broker's channels ignored as malformed."),
}
#: Known protocols and refusal reasons, exported at 0 before they happen.
_PROTOCOLS = ("wamp", "wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor")
_REASONS = ("origin", "ticket", "authentication_unavailable", "max_connections",
            "max_connections_per_address", "subprotocol")


class OroSyncCollector:
    """Reads one server's figures each time Prometheus scrapes."""

    def __init__(self, server: Any, health: Any = None):
        self.server = server
        self.health = health

    def describe(self) -> list:
        # No samples at registration: collect() reads live objects.
        return []

    def collect(self) -> Iterator[Any]:
        server = self.server
        factory, metrics = server.factory, server.metrics
        topics = factory.hub.topics.topics
        counters = metrics.counters

        yield _gauge("oro_sync_connections", "Open TCP connections (sessions and handshakes).",
                     connection_count(factory))
        sessions = GaugeMetricFamily("oro_sync_sessions", "Open WAMP sessions by protocol.",
                                     labels=["protocol"])
        for protocol in sorted(set(_PROTOCOLS) | set(metrics.sessions)):
            sessions.add_metric([protocol], metrics.sessions.get(protocol, 0))
        yield sessions
        refused = CounterMetricFamily("oro_sync_handshakes_refused", "Opening handshakes refused, by reason.",
                                      labels=["reason"])
        for reason in sorted(set(_REASONS) | set(metrics.refusals)):
            refused.add_metric([reason], metrics.refusals.get(reason, 0))
        yield refused
        yield _gauge("oro_sync_topics", "Topics with at least one subscriber on this node.", len(topics))
        yield _gauge("oro_sync_subscriptions", "Subscriptions (a session in a topic).",
                     sum(len(t.subscribers) for t in list(topics.values())))
        for key, (name, text) in _COUNTERS.items():
            yield CounterMetricFamily(name, text, value=counters.get(key, 0))
        # Bytes out: events through the outbox, everything else through the connection.
        yield CounterMetricFamily("oro_sync_sent_bytes", "Bytes written to clients (events and answers).",
                                  value=counters.get("event_bytes", 0) + counters.get("bytes_out", 0))
        yield from self._tickets()
        yield from self._users()
        yield from self._dependencies()
        yield self._latency()

    def _tickets(self) -> Iterator[Any]:
        verifier = self.server.verifier
        snap = getattr(verifier, "computations", 0), getattr(verifier, "cache_hits", 0)
        yield CounterMetricFamily("oro_sync_ticket_verifications",
                                  "Ticket digests computed (sha512 x 5000).", value=snap[0])
        yield CounterMetricFamily("oro_sync_ticket_cache_hits",
                                  "Tickets answered from the verification cache.", value=snap[1])
        yield CounterMetricFamily("oro_sync_ticket_deduplicated",
                                  "Ticket checks that shared a computation in progress.",
                                  value=getattr(verifier, "deduplicated", 0))
        yield _gauge("oro_sync_digest_queue", "Ticket checks waiting for a digest worker.",
                     getattr(verifier, "pending", 0))

    def _users(self) -> Iterator[Any]:
        stats = getattr(getattr(self.server, "users", None), "stats", None)
        if isinstance(stats, dict):
            family = CounterMetricFamily("oro_sync_user_lookups", "User database lookups, by outcome.",
                                         labels=["outcome"])
            for outcome, value in sorted(stats.items()):
                family.add_metric([outcome], value)
            yield family

    def _dependencies(self) -> Iterator[Any]:
        if self.health is None:
            return
        family = GaugeMetricFamily("oro_sync_dependency_up",
                                   "1 if a dependency (database, broker) answered its last check.",
                                   labels=["dependency"])
        for name, state in self.health.states().items():
            family.add_metric([name], 1 if state["up"] else 0)
        yield family

    def _latency(self) -> Any:
        metrics = self.server.metrics
        buckets, running = [], 0
        for bound, n in zip(LATENCY_BUCKETS, metrics.latency_buckets):
            running += n
            buckets.append((_bound(bound), running))
        buckets.append(("+Inf", metrics.latency_count))
        return HistogramMetricFamily(
            "oro_sync_publish_to_send_seconds",
            "Seconds from a publication entering delivery to the write of its last frame "
            "(one publication in 16 is measured).", buckets=buckets, sum_value=metrics.latency_sum)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _bound(value: float) -> str:
    return repr(float(value))


def metrics_resource(server: Any, health: Any = None) -> MetricsResource:
    """The ``/metrics`` resource, on a registry of its own (several servers
    in one process, as in tests, must not share the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OroSyncCollector(server, health))
    return MetricsResource(registry=registry)
