"""What the backend pusher tests share: a server with pushers, a pushable
handler, WAMP v1 subscriptions that are known to be in place, log capture."""

from __future__ import annotations

import os
import time
from typing import Any

import yaml
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer

from oro_sync.interfaces import IPushableTopic
from oro_sync.oro.topics import BroadcastTopic
from tests.support.client import round_trip as client_round_trip
from tests.support.oro_server import start_oro_server

#: A route whose handler has onPush (the shipped routes have none).
PUSHABLE_CHANNEL = "test/pushable/{id}"
PUSHABLE_NAME = "test.pushable"


@implementer(IPushableTopic)
class RecordingPushTopic(BroadcastTopic):
    """Records onPush calls and broadcasts what it got and from whom."""

    def __init__(self, name: str):
        super().__init__(name)
        self.pushes: list[tuple] = []

    def onPush(self, topic: Any, request: Any, data: Any, provider: str) -> None:
        self.pushes.append((topic.uri, dict(request.attributes), data, provider))
        topic.broadcast({"pushed": data, "via": provider})


def start_pushing_server(testcase: Any, pushers: dict, broker: dict | None = None) -> Any:
    """The shipped configuration plus a pushable route, with ``pushers``
    (and the ``broker`` section given: one node of a cluster)."""
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    routing = os.path.join(base, "websocket_routing.yml")
    with open(routing, "w") as f:
        yaml.safe_dump({PUSHABLE_NAME: {"channel": PUSHABLE_CHANNEL,
                                        "handler": {"callback": PUSHABLE_NAME}}}, f)

    def tweak(config: Any) -> None:
        config.routing.append(routing)
        config.services["test.topic.pushable"] = {
            "class": "tests.support.pushing.RecordingPushTopic", "arguments": [PUSHABLE_NAME]}
        config.pushers = pushers
        if broker is not None:
            config.broker = broker

    return start_oro_server(testcase, tweak)


@defer.inlineCallbacks
def round_trip(client: Any) -> Any:
    """Everything ``client`` sent before has been processed once this fires
    (a CALL of an unknown procedure is answered in order)."""
    seen = yield client_round_trip(client)
    if seen:
        raise AssertionError(f"unexpected message before the round trip's answer: {seen[0]!r}")


@defer.inlineCallbacks
def subscriber(server: Any, testcase: Any, *topics: str, user: str = "admin") -> Any:
    """A WAMP v1 client subscribed to ``topics`` (subscriptions in place)."""
    client = yield server.client(testcase, user)
    for uri in topics:
        client.subscribe(uri)
    yield round_trip(client)
    return client


class LogCapture:
    """Formatted log lines of ``oro_sync.pushers`` while a test runs."""

    def __init__(self, testcase: Any):
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        if str(event.get("log_namespace", "")).startswith("oro_sync.pushers"):
            self.lines.append(formatEvent(event))

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


@defer.inlineCallbacks
def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 20 ms until true, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield task.deferLater(reactor, 0.02, lambda: None)
