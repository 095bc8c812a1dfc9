"""Who is behind a session: the identity handlers (e.g. SecuredTopic) read."""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import implementer

from oro_sync.interfaces import IIdentity


@implementer(IIdentity)
@dataclass(frozen=True, slots=True)
class Identity:
    """A connection's identity.

    ``anonymous`` covers browsers without a user and backends; ``backend``
    marks an anonymous ticket signed with the application secret (Oro's PHP
    backend publisher), which is what may publish to routed topics by default.
    """

    username: str
    user_id: int | None = None
    anonymous: bool = True
    backend: bool = False
    email: str | None = None
    roles: tuple[str, ...] = field(default=())
    organization_id: int | None = None

    @classmethod
    def anonymous_for(cls, session_id: str, backend: bool = False) -> "Identity":
        """Oro's anonymous identity: ``anonymous-<sessionId>``."""
        return cls(username=f"anonymous-{session_id}", backend=backend)

    @classmethod
    def user(cls, user_id: int, username: str, **extra) -> "Identity":
        return cls(username=username, user_id=user_id, anonymous=False, **extra)
