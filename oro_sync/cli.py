"""The ``oro-sync`` command: tools around the server (``twistd oro-sync`` runs it).

``oro-sync ticket [--user NAME] [--config FILE]`` prints a sync ticket the
server accepts: anonymous (a backend ticket, signed with the secret) by
default, or for a user found through the configured user provider.
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
    args = parser.parse_args(argv)
    try:
        return _ticket(args)
    except ConfigError as e:
        print(f"oro-sync: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
