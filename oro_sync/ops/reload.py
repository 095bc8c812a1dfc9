"""SIGHUP: re-read the routing files, the handler declarations and the users file.

Everything is read and checked first; only if all of it is good does the
server switch, in place: the pub/sub policy gets its new router and
handlers (:meth:`OroPubSub.replace`), the YAML user provider its new users
(:meth:`YamlUserProvider.replace_users`; an SQL provider forgets its cache).
Connections and subscriptions stay; a subscription whose route disappeared
is closed with a log line.  A bad file is refused with one line naming it
and the old configuration stays in use.

What else the configuration file says (listen address, limits, tickets,
origins) is read at start only: a change there is logged as needing a
restart.  Origins are left to their own reload (they come from Oro's
database).
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application import service

from oro_sync.config import ConfigError, load_config
from oro_sync.logs import Logger
from oro_sync.oro.routing import Router, RoutingError
from oro_sync.oro.services import ServiceError, build_handlers, default_references

#: Sections whose changes only a restart applies.
_RESTART_SECTIONS = ("server", "auth", "origins", "limits")


class Reloader:
    """Re-reads what ``srv`` was built from.

    :param config_path: the configuration file (its ``routing``, ``services``
        and ``parameters`` are read again).
    :param routing: routing paths given on the command line (they replace
        the file's list, as at start); None to use the file's.
    :param parameters: parameters given on the command line (``--ping-interval``).
    """

    log = Logger()

    def __init__(self, srv: Any, config_path: str | None, reactor: Any,
                 routing: list[str] | None = None, parameters: dict[str, Any] | None = None):
        self.srv = srv
        self.config_path = config_path
        self.reactor = reactor
        self.routing = list(routing) if routing else None
        self.parameters = dict(parameters or {})
        self.reloads = 0
        # The file as it was read at start (before command-line overrides),
        # to tell which restart-only settings a reload would change.
        try:
            self._baseline: Any = load_config(config_path)
        except ConfigError:
            self._baseline = None

    def reload(self) -> bool:
        """Read and apply; True if the new configuration is in use."""
        try:
            config = load_config(self.config_path)
            if self.routing is not None:
                config.routing = list(self.routing)
            config.parameters.update(self.parameters)
            router = Router.from_files(  # limits are restart-only: the running ones
                config.routing, max_placeholder_length=self.srv.factory.limits.max_placeholder_length)
            hub = self.srv.factory.hub
            handlers = build_handlers(config.services, config.parameters,
                                      default_references(self.reactor, hub, self.srv.presence))
            users = self.srv.users
            records = users.read_file() if callable(getattr(users, "read_file", None)) else None
            policy = self.srv.policy
            closed = policy.replace(router, handlers)
        except (ConfigError, RoutingError, ServiceError, ValueError) as e:
            # One line (YAML errors span several), naming the file: handler
            # declarations live in the configuration file itself.
            problem = " ".join(str(e).split())
            if isinstance(e, ServiceError):
                problem = f"{self.config_path or 'the configuration'}: {problem}"
            self.log.error("reload refused, the running configuration stays: {problem}",
                           log_event="reload_refused", problem=problem)
            return False
        if records is not None:
            users.replace_users(records)
        elif callable(getattr(users, "invalidate", None)):
            users.invalidate()  # SQL: look users up afresh
        self._note_restart_only(config)
        self.srv.router, self.srv.handlers = router, handlers
        self.reloads += 1
        self.log.info("reloaded {file}: {routes} routes, {handlers} handlers{users}, "
                      "{closed} topic(s) closed", log_event="reloaded",
                      file=config.path, routes=len(router.routes), handlers=len(handlers),
                      users="" if records is None else f", {len(records)} users",
                      closed=len(closed))
        return True

    def _note_restart_only(self, config: Any) -> None:
        before, self._baseline = self._baseline, config
        if before is None:
            return
        changed = [name for name in _RESTART_SECTIONS if getattr(before, name) != getattr(config, name)]
        if changed:
            self.log.warn("reload: changes to {sections} take effect on restart",
                          sections=", ".join(changed))


class ReloadService(service.Service):
    """Runs :meth:`Reloader.reload` on SIGHUP (in the reactor thread)."""

    def __init__(self, reloader: Reloader, reactor: Any):
        self.reloader = reloader
        self.reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._signalled)

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reloader.reload)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
