"""The admin HTTP listener: ``/health``, ``/metrics`` and ``/status``.

A twisted.web site on its own endpoint (``server.admin`` or ``--admin``;
``tcp:9101:interface=127.0.0.1`` by default, ``none`` turns it off).  It
has no authentication: keep it on localhost or a private network.  If its
port cannot be opened the WebSocket server still runs (one error line):
operations must never take the service down.

The service is started before the WebSocket listener and stopped after it,
so that during a shutdown ``/health`` answers 503 while clients are being
sent away.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.web import resource, server

from oro_sync.logs import Logger
from oro_sync.ops.health import Health
from oro_sync.ops.prometheus import metrics_resource
from oro_sync.ops.status import StatusFeed, StatusPage

#: The default admin endpoint.
DEFAULT_ADMIN = "tcp:9101:interface=127.0.0.1"
#: Values of ``--admin`` / ``server.admin`` that turn the listener off.
DISABLED = ("", "none", "off", "false", "no")


def admin_disabled(endpoint: Any) -> bool:
    return endpoint is None or endpoint is False or str(endpoint).strip().lower() in DISABLED


class HealthResource(resource.Resource):
    """``GET /health``: 200 with JSON, or 503 while something needed is down."""

    isLeaf = True

    def __init__(self, health: Health):
        super().__init__()
        self.health = health

    def render_GET(self, request: Any) -> Any:
        d = self.health.check_all()
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(states: dict) -> None:
            if gone:  # the prober hung up before the dependencies answered
                return
            status, body = self.health.report(states)
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-cache")
            request.write(json.dumps(body, indent=1).encode("utf-8") + b"\n")
            request.finish()

        def failed(failure: Any) -> None:
            Logger().failure("/health failed", failure)
            if not gone:  # never leave the prober hanging
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"application/json")
                request.write(b'{"status": "error"}\n')
                request.finish()

        d.addCallback(answer)
        d.addErrback(failed)
        return server.NOT_DONE_YET


class _Root(resource.Resource):
    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (b"<!doctype html><title>oro-sync admin</title><ul>"
                b"<li><a href=/status>/status</a><li><a href=/health>/health</a>"
                b"<li><a href=/metrics>/metrics</a></ul>")


def admin_site(srv: Any, health: Health, clock: Any, status_interval: float = 1.0) -> server.Site:
    """The admin web site of one server (also used by tests in-process)."""
    root = _Root()
    root.putChild(b"", root)
    root.putChild(b"health", HealthResource(health))
    root.putChild(b"metrics", metrics_resource(srv, health))
    feed = StatusFeed(srv, health, clock, status_interval)
    root.putChild(b"status", StatusPage(feed))
    site = server.Site(root)
    site.noisy = False
    site.status_feed = feed  # type: ignore[attr-defined]
    return site


class AdminService(service.Service):
    """Listens on the admin endpoint; marks the server as shutting down first."""

    log = Logger()

    def __init__(self, srv: Any, health: Health, endpoint: str, reactor: Any,
                 status_interval: float = 1.0):
        self.health = health
        self.endpoint = endpoint
        self.reactor = reactor
        self.site = admin_site(srv, health, reactor, status_interval)
        self.port: Any = None
        self._trigger: Any = None

    def startService(self) -> None:
        super().startService()
        # Before anything stops: /health must say 503 from the first moment.
        self._trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self.health.begin_shutdown)
        d = endpoints.serverFromString(self.reactor, self.endpoint).listen(self.site)
        d.addCallbacks(self._listening, self._cannot_listen)

    def _listening(self, port: Any) -> None:
        self.port = port
        addr = port.getHost()
        self.log.info("oro-sync admin (/health /metrics /status) on {host}:{port}",
                      host=getattr(addr, "host", "?"), port=getattr(addr, "port", "?"))

    def _cannot_listen(self, failure: Any) -> None:
        self.log.error("oro-sync admin cannot listen on {endpoint}: {why} (the WebSocket server "
                       "runs without it)", endpoint=self.endpoint, why=failure.getErrorMessage())

    def stopService(self) -> Any:
        super().stopService()
        self.health.begin_shutdown()
        self.site.status_feed.close_all()
        if self._trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._trigger)
            except ValueError:
                pass
            self._trigger = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return defer.succeed(None)
