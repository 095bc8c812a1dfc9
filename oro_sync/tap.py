"""``twistd oro-sync``: command-line options and the service tree.

``twistd -n oro-sync`` runs in the foreground; SIGTERM (or SIGINT) closes
every WebSocket with 1001 "going away", waits briefly for the clients'
replies, and exits cleanly.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.python import usage

from oro_sync import logs
from oro_sync.config import ConfigError, load_config
from oro_sync.logs import Logger
from oro_sync.oro.routing import RoutingError
from oro_sync.oro.services import ServiceError

GOING_AWAY = 1001


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Serve Oro's real-time topics over WAMP v1 (WebSocket subprotocol 'wamp'). "
                "Without --config the packaged default (all Oro 3.1 platform routes) is used.")

    optParameters = [
        ["config", "c", None, "The configuration file (oro-sync.yml)."],
        ["listen", "l", None,
         "Where to listen, as a Twisted endpoint (default from the config: tcp:8080:interface=0.0.0.0:backlog=4096; "
         "TLS: ssl:8443:privateKey=key.pem:certKey=cert.pem)."],
        ["ping-interval", None, None, "Seconds between keep-alive pings on oro/ping (default 50)."],
        ["log-level", None, "info", "Lowest level to log: " + ", ".join(logs.LEVELS) + "."],
        ["broker", None, None,
         "Where nodes meet: 'memory' (one process, the default) or redis://[:password@]host:port/db "
         "(rediss:// for TLS; several, comma-separated, spread topics over them)."],
        ["workers", None, None,
         "Run N worker processes on one port (SO_REUSEPORT); needs --broker."],
        ["worker", None, None, "(internal) Set by --workers on the processes it runs."],
        ["admin", None, None, "The admin HTTP listener (/health, /metrics, /status) as a Twisted endpoint, "
                              "or 'none' (default from the config: tcp:9101:interface=127.0.0.1)."],
        ["log-format", None, None, "text (default) or json (one JSON object per line on stdout)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["routing"] = []

    def opt_routing(self, path: str) -> None:
        """A websocket_routing.yml file, directory or glob (repeatable; replaces the config's list)."""
        self["routing"].append(path)

    opt_r = opt_routing

    def postOptions(self) -> None:
        if self["log-level"] not in logs.LEVELS:
            raise usage.UsageError(f"--log-level must be one of {', '.join(logs.LEVELS)}")
        try:
            config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["log-format"] is not None:
            if self["log-format"] not in ("text", "json"):
                raise usage.UsageError("--log-format must be text or json")
            config.server.log_format = self["log-format"]
        if self["routing"]:
            config.routing = list(self["routing"])
        if self["listen"]:
            config.server.listen = self["listen"]
        if self["ping-interval"] is not None:
            try:
                interval = float(self["ping-interval"])
            except ValueError:
                raise usage.UsageError("--ping-interval must be a number of seconds") from None
            if interval <= 0:
                raise usage.UsageError("--ping-interval must be positive")
            config.parameters["oro_sync.websocket_ping.interval"] = interval
        if self["broker"] is not None:
            config.broker = {**config.broker, "url": self["broker"]}
            from oro_sync.brokers.settings import parse_broker

            try:
                parse_broker(config.broker)
            except ConfigError as e:
                raise usage.UsageError(f"--broker: {e}") from None
        self._check_workers(config)
        self.config = config

    def _check_workers(self, config: Any) -> None:
        for name in ("workers", "worker"):
            if self[name] is None:
                continue
            try:
                self[name] = int(self[name])
            except ValueError:
                raise usage.UsageError(f"--{name} must be a whole number") from None
            if self[name] < (1 if name == "workers" else 0):
                raise usage.UsageError(f"--{name} must be at least {1 if name == 'workers' else 0}")
        if self["workers"] is None:
            return
        from oro_sync.brokers.settings import parse_broker

        if not parse_broker(config.broker).enabled:
            raise usage.UsageError(
                "--workers needs a broker shared by the workers: give --broker redis://host:port/db "
                "(or set broker.url in the configuration); with the in-memory broker a worker's "
                "clients would never see the other workers' events")
        from oro_sync.workers import tcp_address

        try:  # parsing only: no reactor is needed (nor installed) yet
            tcp_address(config.server.listen, None)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


class OroSyncService(service.Service):
    """Listens on the configured endpoint; on stop, says goodbye to every client.

    :param ready: returns a Deferred that fires when the server may accept
        clients (the ticket digest workers are up), so that the first
        clients are not kept waiting (or timed out) while they spawn.
    """

    log = Logger()

    def __init__(self, factory: Any, listen: str, reactor: Any, shutdown_timeout: float = 3.0,
                 ready: Any = None, endpoint: Any = None):
        self.factory = factory
        #: Listen here instead of on ``listen`` parsed (a --workers worker's socket).
        self.endpoint = endpoint
        self.listen = listen
        self.reactor = reactor
        self.shutdown_timeout = shutdown_timeout
        self.ready = ready if ready is not None else (lambda: defer.succeed(None))
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        ready = self.ready()
        ready.addErrback(lambda f: self.log.failure("ticket workers did not start", f))
        ready.addCallback(lambda _: self._listen())

    def _listen(self) -> None:
        if not self.running:
            return
        endpoint = self.endpoint or endpoints.serverFromString(self.reactor, self.listen)
        d = endpoint.listen(self.factory)
        d.addCallbacks(self._listening, self._cannot_listen)

    def _listening(self, port: Any) -> None:
        self.port = port
        self.factory.listeningPort = port
        addr = port.getHost()
        self.log.info("oro-sync listening on {host}:{port} ({listen})",
                      host=getattr(addr, "host", "?"), port=getattr(addr, "port", "?"), listen=self.listen)

    def _cannot_listen(self, failure: Any) -> None:
        self.log.critical("oro-sync cannot listen on {listen}: {why}", listen=self.listen,
                          why=failure.getErrorMessage())
        self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[override]
        super().stopService()
        if self.port is not None:
            yield self.port.stopListening()
        sessions = list(self.factory.hub.sessions.values())
        if sessions:
            self.log.info("closing {n} WebSocket connections (1001)", n=len(sessions))
        closed = []
        for session in sessions:
            closed.append(session.connection.is_closed)
            session.close(GOING_AWAY, "server shutting down")
        if closed:
            done = defer.DeferredList(closed, consumeErrors=True)
            timeout = self.reactor.callLater(self.shutdown_timeout, done.cancel)
            try:
                yield done
            except defer.CancelledError:
                pass
            if timeout.active():
                timeout.cancel()


class InOrderMultiService(service.MultiService):
    """Stops its services one after the other, last added first.

    Twisted's MultiService stops them all at once; here the listener must
    have said goodbye to its clients before the ticket digest workers go, or
    handshakes still being checked would fail with tracebacks.

    ``log_observer``, if set, becomes the application's log observer
    (twistd uses it instead of its own text lines: ``--log-format json``).
    """

    log_observer: Any = None

    def setServiceParent(self, parent: Any) -> None:
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[override]
        service.Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield defer.maybeDeferred(child.stopService)
            except Exception:
                Logger().failure("stopping {service} failed", service=child)


def makeService(options: Options, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor
    logs.set_level(options["log-level"])
    config = options.config
    if options["workers"] is not None:
        from oro_sync.workers import WorkerPool, worker_argv

        top = InOrderMultiService()
        WorkerPool(options["workers"], config.server.listen, worker_argv(options), reactor,
                   config.server.shutdown_timeout).setServiceParent(top)
        return top
    endpoint = None
    if options["worker"] is not None:
        from oro_sync.workers import ReusePortEndpoint, tcp_address

        if config.broker.get("node_id"):  # each worker is a node of its own
            config.broker = {**config.broker,
                             "node_id": f"{config.broker['node_id']}.{options['worker']}"}
        endpoint = ReusePortEndpoint(reactor, *tcp_address(config.server.listen, reactor))
    from oro_sync.server import build_server
    try:
        server = build_server(config, reactor)
    except (ConfigError, RoutingError, ServiceError) as e:
        # twistd reports a UsageError only while it parses options; raised
        # here it would escape as a traceback.  One line and status 1 instead.
        sys.stderr.write(f"twistd oro-sync: {e}\n")
        raise SystemExit(1) from None
    top = InOrderMultiService()
    if config.server.log_format == "json":
        from oro_sync.ops.logformat import json_observer

        top.log_observer = json_observer()
    ready = None
    if server.verifier is not None:
        from oro_sync.auth.verifier import VerifierService

        workers = VerifierService(server.verifier)
        workers.setServiceParent(top)
        ready = workers.when_ready
    if server.watcher is not None:  # Oro's configuration changes (origins)
        server.watcher.setServiceParent(top)
    for extra in server.services:
        extra.setServiceParent(top)
    if options["worker"] is not None:
        from oro_sync.workers import ParentWatchService

        ParentWatchService(reactor).setServiceParent(top)
    from oro_sync.ops.services import add_operations

    parameters = {}
    if options["ping-interval"] is not None:
        parameters["oro_sync.websocket_ping.interval"] = config.parameters["oro_sync.websocket_ping.interval"]
    add_operations(top, server, config, reactor, admin=options["admin"],
                   routing=list(options["routing"]) or None, parameters=parameters)
    # Stopped before everything added before it (and waited for), so
    # clients are told goodbye before the digest workers, the broker and the
    # admin listener go.
    OroSyncService(server.factory, config.server.listen, reactor, config.server.shutdown_timeout,
                   ready=ready, endpoint=endpoint).setServiceParent(top)
    # After the listener: backend pushers stop first, so nothing is pushed
    # while clients are being told goodbye.
    for pusher in pushers_of_this_process(server.pushers, options["worker"]):
        pusher.setServiceParent(top)
    return top


def pushers_of_this_process(pushers: list, worker: int | None) -> list:
    """The pusher services this process runs: with ``--workers`` the HTTP
    pusher's one listening port belongs to worker 0 (the others would fail
    to bind it and be restarted without end); what it pushes reaches every
    worker's clients through the broker.  The Redis and AMQP pushers run in
    every worker (each Redis push is delivered by every worker to its own
    clients; AMQP consumers share the queue)."""
    if not worker:
        return list(pushers)
    from oro_sync.pushers.http import HttpPusher

    return [p for p in pushers if not isinstance(p, HttpPusher)]
