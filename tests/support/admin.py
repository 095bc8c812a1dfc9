"""The admin site (/health, /metrics, /status) of an in-process server, over real HTTP.

Tests build the server with :func:`tests.support.oro_server.start_oro_server`
and put its admin site on a port the OS picks (never the fixed default
9101: other suites run on this machine at the same time).  Requests go
through treq without persistent connections, so nothing is left open for
trial's dirty-reactor check.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.protocols.policies import WrappingFactory

from oro_sync.ops.admin import admin_site
from oro_sync.ops.health import Health


class Admin:
    def __init__(self, health: Health, site: Any, port: Any):
        self.health = health
        self.site = site
        self.port = port
        self.url = f"http://127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def get(self, path: str):
        """(status code, body text) of ``GET path``."""
        response = yield treq.get(self.url + path, persistent=False)
        body = yield treq.text_content(response, encoding="utf-8")
        return response.code, body

    @defer.inlineCallbacks
    def health_report(self):
        code, body = yield self.get("/health")
        return code, json.loads(body)

    @defer.inlineCallbacks
    def metrics(self):
        """Every sample of ``/metrics``: {(name, sorted label items): value}."""
        code, body = yield self.get("/metrics")
        assert code == 200, (code, body)
        samples = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples


class _Tracking(WrappingFactory):
    """Knows the open HTTP connections (a browser keeps some alive), to
    close them and wait until they are gone when the test ends."""

    def __init__(self, site: Any):
        super().__init__(site)
        self._gone: list[defer.Deferred] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._gone = self._gone, []
            for d in waiting:
                d.callback(None)

    def close_all(self) -> defer.Deferred:
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._gone.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d.addTimeout(10, reactor)


def start_admin(testcase: Any, built: Any, status_interval: float = 0.2) -> Admin:
    """The admin site of ``built`` (an oro_sync.server.OroServer) on 127.0.0.1:0."""
    health = Health(built, reactor, built.dependencies)
    site = admin_site(built, health, reactor, status_interval)
    tracking = _Tracking(site)
    port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
    testcase.addCleanup(tracking.close_all)
    testcase.addCleanup(port.stopListening)
    testcase.addCleanup(site.status_feed.close_all)
    return Admin(health, site, port)
