"""Where users come from: the interface ticket verification relies on.

Shared by every provider (:mod:`oro_sync.auth.yaml_users`,
:mod:`oro_sync.auth.sql_users`), so that they answer the same inputs the
same way and fail the same way.
"""

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


#: Oro's ``username`` and ``email`` columns are ``VARCHAR(255)``: longer input
#: cannot match, so it is refused before reaching any store.
MAX_LOOKUP_LENGTH = 255


class UserLookupError(Exception):
    """The user store could not be asked (database down, bad schema...).

    Distinct from "no such user" (``None``) so an outage is logged and
    reported as such instead of looking like a wrong ticket.
    """


def usable_lookup_key(value: object) -> bool:
    """Whether ``value`` could possibly name a user.

    Providers answer ``None`` for anything else without consulting their
    store: not a string, empty, longer than the 255-character columns, or
    containing NUL.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_LOOKUP_LENGTH
        and "\x00" not in value
    )


class IUserProvider(Interface):
    """Looks users up by username, then by email (as Oro's ticket check does)."""

    def findUser(username_or_email: str):
        """Return a Deferred firing with the enabled :class:`UserRecord`
        whose username (or, failing that, email) matches, or ``None``.

        As Oro's ``findUserByUsernameOrEmail``: the user whose username
        matches exactly wins; only when no username matches is the email
        tried.  A matching but disabled user yields ``None`` (the search
        does not fall through to another user's email).  Input that
        :func:`usable_lookup_key` refuses yields ``None``.  When the store
        cannot be asked, the Deferred fails with :class:`UserLookupError`.
        """
