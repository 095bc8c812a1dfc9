"""Where users come from: the interface ticket verification relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import Interface


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A row of Oro's ``oro_user`` table (what tickets are checked against).

    ``password`` is the stored password hash, used as the ticket "password".
    """

    id: int
    username: str
    password: str
    email: str | None = None
    enabled: bool = True
    roles: tuple[str, ...] = field(default=())
    organization_id: int | None = None


class IUserProvider(Interface):
    """Looks users up by username, then by email (as Oro's ticket check does)."""

    def findUser(username_or_email: str):
        """Return a Deferred firing with the enabled :class:`UserRecord`
        whose username (or, failing that, email) matches, or ``None``."""
