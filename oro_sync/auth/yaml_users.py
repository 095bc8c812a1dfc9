"""Users from a YAML users file (or an already-loaded mapping).

For standalone deployments and tests, where there is no Oro database to
read.  The format::

    users:
      - id: 1                            # required, positive integer, unique
        username: admin                  # required, unique
        email: admin@example.com         # optional, unique
        password: "aGFzaA=="             # required: the *stored* hash, verbatim
        enabled: true                    # optional, default true
        roles: [ROLE_ADMINISTRATOR]      # optional, list of strings
        organization_id: 1               # optional integer

``password`` is whatever the ticket issuer uses as the user's password (for
an Oro installation: ``oro_user.password`` copied verbatim), never a
clear-text password.  Quote it: YAML would turn ``12345`` into a number,
which is rejected.  Unknown keys, duplicate ids/usernames/emails and wrong
types are errors (:class:`UserFileError`), because a typo in a credentials
file should stop the server rather than lock users out silently.
:meth:`YamlUserProvider.reload` re-reads the file and keeps the old table if
the new one is invalid.

Lookups follow :meth:`oro_sync.auth.interfaces.IUserProvider.findUser`;
names compare exactly (case-sensitive).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from oro_sync.auth.interfaces import IUserProvider, UserRecord, usable_lookup_key
from oro_sync.logs import Logger

__all__ = ["UserFileError", "YamlUserProvider"]

log = Logger(namespace=__name__)


class UserFileError(ValueError):
    """A users file (or mapping) is malformed."""


_USER_KEYS = frozenset(
    {"id", "username", "email", "password", "enabled", "roles", "organization_id"}
)


def _is_int(value: object) -> bool:
    # bool is an int subclass; ``id: true`` is a typo, not user 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_user(entry: object, where: str) -> UserRecord:
    if not isinstance(entry, Mapping):
        raise UserFileError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - _USER_KEYS
    if unknown:
        raise UserFileError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
            f" (allowed: {', '.join(sorted(_USER_KEYS))})"
        )
    user_id = entry.get("id")
    if not _is_int(user_id) or user_id <= 0:
        raise UserFileError(f"{where}: 'id' must be a positive integer")
    username = entry.get("username")
    if not isinstance(username, str) or not username:
        raise UserFileError(f"{where}: 'username' must be a non-empty string")
    password = entry.get("password")
    if not isinstance(password, str) or not password:
        raise UserFileError(
            f"{where}: 'password' must be a non-empty string (the stored hash; quote it)"
        )
    email = entry.get("email")
    if email is not None and (not isinstance(email, str) or not email):
        raise UserFileError(f"{where}: 'email' must be a non-empty string or absent")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UserFileError(f"{where}: 'enabled' must be true or false")
    roles = entry.get("roles", ())
    if roles is None:
        roles = ()
    if not isinstance(roles, (list, tuple)) or not all(
        isinstance(r, str) and r for r in roles
    ):
        raise UserFileError(f"{where}: 'roles' must be a list of strings")
    organization_id = entry.get("organization_id")
    if organization_id is not None and not _is_int(organization_id):
        raise UserFileError(f"{where}: 'organization_id' must be an integer or absent")
    return UserRecord(
        id=user_id,
        username=username,
        password=password,
        email=email,
        enabled=enabled,
        roles=tuple(roles),
        organization_id=organization_id,
    )


def _parse_users(data: object, source: str) -> list[UserRecord]:
    """Validate a whole users document; raise :class:`UserFileError` on any fault."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserFileError(f"{source}: expected a mapping with a 'users' list")
    unknown = set(data) - {"users"}
    if unknown:
        raise UserFileError(
            f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}"
        )
    entries = data.get("users")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise UserFileError(f"{source}: 'users' must be a list")
    records: list[UserRecord] = []
    seen: dict[str, dict[object, int]] = {"id": {}, "username": {}, "email": {}}
    for index, entry in enumerate(entries):
        where = f"{source}: users[{index}]"
        record = _parse_user(entry, where)
        for attr in ("id", "username", "email"):
            value = getattr(record, attr)
            if value is None:
                continue
            if value in seen[attr]:
                raise UserFileError(
                    f"{where}: duplicate {attr} {value!r}"
                    f" (also users[{seen[attr][value]}])"
                )
            seen[attr][value] = index
        records.append(record)
    return records


@implementer(IUserProvider)
class YamlUserProvider:
    """Users from a YAML file or mapping (format in the module docstring).

    Everything is in memory, so lookups answer synchronously (an
    already-fired Deferred); no cache is needed.
    """

    def __init__(self, source: str | os.PathLike[str] | Mapping[str, Any]):
        if isinstance(source, (str, os.PathLike)):
            self._path: str | None = os.fspath(source)
            self.reload()
        else:
            # An already-loaded document (e.g. a section of the main config).
            self._path = None
            self._install(_parse_users(source, "<users mapping>"))

    @property
    def path(self) -> str | None:
        """The users file, or ``None`` for a mapping."""
        return self._path

    @property
    def users(self) -> tuple[UserRecord, ...]:
        """All users, enabled or not, in file order."""
        return self._users

    def reload(self) -> None:
        """Re-read the users file (e.g. on SIGHUP).

        On any error the previous table stays in place and the error is
        raised, so a half-edited file cannot lock everybody out.
        """
        if self._path is None:
            return
        self.replace_users(self.read_file())

    def read_file(self) -> list[UserRecord]:
        """The users the file holds now, validated but not yet in use (a
        reload of several files checks them all before changing anything);
        raises :class:`UserFileError`."""
        if self._path is None:
            return list(self._users)
        try:
            with open(self._path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except OSError as exc:
            raise UserFileError(f"{self._path}: cannot read users file: {exc}") from exc
        except yaml.YAMLError as exc:
            raise UserFileError(f"{self._path}: invalid YAML: {exc}") from exc
        return _parse_users(data, self._path)

    def replace_users(self, records: list[UserRecord]) -> None:
        """Serve ``records`` (from :meth:`read_file`) from now on."""
        self._install(records)
        log.info(
            "Loaded {count} user(s) from {path}", count=len(records), path=self._path
        )

    def _install(self, records: list[UserRecord]) -> None:
        self._users = tuple(records)
        self._by_username = {r.username: r for r in records}
        self._by_email = {r.email: r for r in records if r.email is not None}

    def lookup(self, username_or_email: str) -> UserRecord | None:
        """Synchronous form of :meth:`findUser`."""
        if not usable_lookup_key(username_or_email):
            return None
        record = self._by_username.get(username_or_email)
        if record is None:
            record = self._by_email.get(username_or_email)
        if record is None or not record.enabled:
            return None
        return record

    def findUser(self, username_or_email: str) -> Deferred[UserRecord | None]:
        return succeed(self.lookup(username_or_email))

    def close(self) -> None:
        """Nothing to release; present so providers are interchangeable."""
