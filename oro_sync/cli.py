"""The ``oro-sync`` command: tools around the server (``twistd oro-sync`` runs it).

``oro-sync ticket [--user NAME] [--config FILE]`` prints a sync ticket the
server accepts: anonymous (a backend ticket, signed with the secret) by
default, or for a user found through the configured user provider.

``oro-sync config-from-oro APP_DIR [-o oro-sync.yml]`` writes a configuration
from an Oro application's own settings (see :mod:`oro_sync.oro.config_from_oro`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from oro_sync.config import ConfigError, load_config


def _ticket(args: argparse.Namespace) -> int:
    from oro_sync.auth.ticket_signing import issue_ticket

    config = load_config(args.config)
    secret = config.auth.get("secret")
    if not secret:
        raise ConfigError(f"{config.path}: auth.secret is not set")
    if not args.user:
        print(issue_ticket(secret))
        return 0

    from twisted.internet import defer, task

    from oro_sync.server import build_user_provider

    provider = build_user_provider(config.auth.get("users"), os.path.dirname(config.path))
    result: dict[str, Any] = {}

    @defer.inlineCallbacks
    def lookup(reactor: Any):
        try:
            result["user"] = yield defer.maybeDeferred(provider.findUser, args.user)
        finally:
            close = getattr(provider, "close", None)
            if close is not None:
                yield defer.maybeDeferred(close)

    try:
        task.react(lookup)
    except SystemExit as e:
        if e.code:
            return int(e.code)
    user = result.get("user")
    if user is None:
        print(f"oro-sync: no enabled user {args.user!r}", file=sys.stderr)
        return 1
    print(issue_ticket(secret, user.username, user.password))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oro-sync", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ticket = commands.add_parser("ticket", help="print a sync ticket the server accepts")
    ticket.add_argument("--user", "-u", help="username or email (default: an anonymous backend ticket)")
    ticket.add_argument("--config", "-c", help="the server configuration (default: the packaged one)")
    from_oro = commands.add_parser("config-from-oro", help="write an oro-sync.yml from an Oro application")
    from_oro.add_argument("app_dir", metavar="APP_DIR", help="the Oro application's root directory")
    from_oro.add_argument("--output", "-o", default="oro-sync.yml", help="where to write (default: %(default)s)")
    from_oro.add_argument("--force", "-f", action="store_true", help="replace an existing file")
    from_oro.add_argument("--no-database", action="store_true",
                          help="do not connect to Oro's database (no application URL)")
    args = parser.parse_args(argv)
    try:
        if args.command == "config-from-oro":
            from oro_sync.oro.config_from_oro import run

            return run(args.app_dir, args.output, args.force, not args.no_database)
        return _ticket(args)
    except ConfigError as e:
        print(f"oro-sync: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
