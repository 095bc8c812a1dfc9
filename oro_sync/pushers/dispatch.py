"""What every backend pusher shares: read a message, hand it to the policy.

A pusher (the Redis channel, RabbitMQ, ``POST /publish``) receives bytes;
:meth:`PushDispatcher.dispatch` checks that they are one message
``{"topic": <channel or route name>, "data": <any JSON>}`` of at most
``max_message_size`` bytes, finds the route, and hands it to the pub/sub
policy (:meth:`oro_sync.oro.pubsub.OroPubSub.push`) from a backend
session, with a publication id assigned as a WebSocket publish gets it
(:func:`oro_sync.core.publish.new_id`), so the handlers see exactly what
they would see for the backend's WAMP PUBLISH.

A bad message is dropped and counted, never fatal.  Logging one line per
bad message would let a broken producer flood the log, so
:class:`DropLog` logs the first drop of a quiet period at once (with its
reason) and then one summary line per interval for the rest.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from zope.interface import implementer

from oro_sync.core.publish import PublishRequest, new_id
from oro_sync.core.session import ISession, new_session_id
from oro_sync.identity import Identity
from oro_sync.logs import Logger, clip
from oro_sync.wamp.codec import JsonError, decode_json

#: Why a message was dropped (the keys of the drop counters).
NOT_JSON, NOT_OBJECT, NO_TOPIC, BAD_TOPIC, NO_DATA, OVERSIZED, UNROUTED, REFUSED, UNAUTHORIZED = (
    "not JSON", "not a JSON object", "no topic", "topic not a non-empty string", "no data",
    "oversized", "unrouted topic", "refused", "bad secret")
INTERNAL = "internal error"


class BadPush(ValueError):
    """A pushed message that cannot be delivered; ``reason`` is one of the
    constants above, ``detail`` says more for the log."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PushMessage:
    """A well-formed pushed message."""

    topic: str
    data: Any


def parse_push(body: bytes | str, max_size: int) -> PushMessage:
    """Read one pushed message; raise :class:`BadPush` for anything else.

    Extra keys are ignored (producers may add their own); ``data`` must be
    present but may be any JSON value, ``null`` and ``""`` included (Oro's
    heartbeat carries an empty string).
    """
    if max_size and len(body) > max_size:
        raise BadPush(OVERSIZED, f"{len(body)} bytes (at most {max_size})")
    try:
        message = decode_json(body)
    except JsonError as e:
        raise BadPush(NOT_JSON, e.reason) from None
    if not isinstance(message, dict):
        raise BadPush(NOT_OBJECT, type(message).__name__)
    if "topic" not in message:
        raise BadPush(NO_TOPIC)
    topic = message["topic"]
    if not isinstance(topic, str) or not topic:
        raise BadPush(BAD_TOPIC, repr(topic)[:80])
    if "data" not in message:
        raise BadPush(NO_DATA, clip(topic))
    return PushMessage(topic, message["data"])


@implementer(ISession)
class BackendSession:
    """The backend as a publisher, for the handlers a push reaches.

    Not a connection: it is never attached to the hub, subscribes to
    nothing and receives nothing; handlers see a session with a backend
    identity, as for the PHP backend's WebSocket connection.
    """

    encoder = None

    def __init__(self, provider: str):
        self.session_id = new_session_id()
        self.identity = Identity.anonymous_for(self.session_id, backend=True)
        self.subscriptions: set[str] = set()
        self.protocol = f"push:{provider}"

    def send_frame(self, data: bytes) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


class DropLog:
    """Counts dropped messages; logs the first of a quiet period and then
    one summary per ``interval`` seconds while drops go on."""

    log = Logger()

    def __init__(self, clock: Any, interval: float = 10.0):
        self.clock = clock
        self.interval = interval
        #: Drops by reason since the start.
        self.totals: Counter = Counter()
        self._pending: Counter = Counter()
        self._timer: Any = None

    def dropped(self, provider: str, error: BadPush) -> None:
        self.totals[error.reason] += 1
        if self._timer is None:
            self.log.warn("dropped a pushed message ({provider}): {reason}{detail}",
                          provider=provider, reason=error.reason,
                          detail=f" ({error.detail})" if error.detail else "")
            self._timer = self.clock.callLater(self.interval, self._summary)
        else:
            self._pending[f"{provider}: {error.reason}"] += 1

    def _summary(self) -> None:
        pending, self._pending = self._pending, Counter()
        if not pending:
            self._timer = None  # quiet: the next drop is logged at once
            return
        self.log.warn("dropped {n} more pushed messages in {interval:g} s ({reasons})",
                      n=sum(pending.values()), interval=self.interval,
                      reasons=", ".join(f"{k}: {v}" for k, v in sorted(pending.items())))
        self._timer = self.clock.callLater(self.interval, self._summary)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


@dataclass
class PushResult:
    """What became of one pushed message."""

    delivered: bool
    publication_id: int = 0
    error: BadPush | None = None


@dataclass
class PushDispatcher:
    """Validates pushed messages and hands them to the policy."""

    log = Logger()

    policy: Any
    drops: DropLog
    max_message_size: int = 1024 * 1024
    metrics: Any = None
    _sessions: dict[str, BackendSession] = field(default_factory=dict)

    def session(self, provider: str) -> BackendSession:
        """The backend session of ``provider`` (one per pusher)."""
        s = self._sessions.get(provider)
        if s is None:
            s = self._sessions[provider] = BackendSession(provider)
        return s

    def dispatch(self, body: bytes | str, provider: str, everywhere: bool = False) -> PushResult:
        """Deliver one pushed message; a bad one is counted, logged (rate
        limited) and reported in the result, never raised.

        ``everywhere``: every node of a cluster receives this message (the
        Redis channel), so what the handlers publish stays on this node
        (the broker's ``local_only``); otherwise (AMQP's competing consumers,
        one HTTP request) one node handles it and the broker carries the
        handlers' publications to the others.
        """
        broker = self.policy.hub.broker
        scope = broker.local_only() if everywhere and hasattr(broker, "local_only") else nullcontext()
        with scope:
            return self._dispatch(body, provider)

    def _dispatch(self, body: bytes | str, provider: str) -> PushResult:
        try:
            message = parse_push(body, self.max_message_size)
            request = self.policy.push_request(message.topic)
            if request is None:
                raise BadPush(UNROUTED, clip(message.topic))
            session = self.session(provider)
            publish = PublishRequest(request.matched, message.data, session.session_id, new_id())
            if not self.policy.push(session, request, publish, provider):
                raise BadPush(REFUSED, clip(message.topic))
        except BadPush as e:
            self.reject(provider, e)
            return PushResult(False, error=e)
        except Exception:  # a bug, not the message's fault: the pusher goes on
            self.log.failure("pushed message ({provider}) failed", provider=provider)
            e = BadPush(INTERNAL)
            self.reject(provider, e)
            return PushResult(False, error=e)
        if self.metrics is not None:
            self.metrics.count("pushes_delivered")
        return PushResult(True, publish.publication_id)

    def reject(self, provider: str, error: BadPush) -> None:
        """Count and log a message dropped before or during dispatch."""
        if self.metrics is not None:
            self.metrics.count("pushes_dropped")
        self.drops.dropped(provider, error)
