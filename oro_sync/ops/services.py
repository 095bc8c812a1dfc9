"""The operations services of ``twistd oro-sync``, added in one call.

:func:`add_operations` gives the service tree its admin listener
(``/health``, ``/metrics``, ``/status``), the periodic summary line and the
SIGHUP reload.  It must be called before the WebSocket listener is added,
so that the admin listener is stopped after it (and reports 503 while
clients are being sent away).
"""

from __future__ import annotations

from typing import Any

from oro_sync.ops.admin import AdminService, admin_disabled
from oro_sync.ops.health import Health
from oro_sync.ops.logformat import SummaryService
from oro_sync.ops.reload import Reloader, ReloadService


def add_operations(parent: Any, srv: Any, config: Any, reactor: Any, *,
                   admin: str | None = None, routing: list[str] | None = None,
                   parameters: dict[str, Any] | None = None) -> Health:
    """Add the operations services of ``srv`` under ``parent``; returns its Health.

    :param admin: the admin endpoint (``--admin``), else ``config.server.admin``.
    :param routing: ``--routing`` paths, kept on reload; :param parameters:
        parameters given on the command line, kept on reload.
    """
    health = Health(srv, reactor, srv.dependencies)
    endpoint = admin if admin is not None else config.server.admin
    if not admin_disabled(endpoint):
        AdminService(srv, health, endpoint, reactor).setServiceParent(parent)
    if config.server.summary_interval > 0:
        SummaryService(srv, health, config.server.summary_interval, reactor).setServiceParent(parent)
    reloader = Reloader(srv, config.path or None, reactor, routing=routing, parameters=parameters)
    ReloadService(reloader, reactor).setServiceParent(parent)
    return health
