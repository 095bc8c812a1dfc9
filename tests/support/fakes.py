"""A session without a socket, for testing the core and the Oro layer directly."""

from __future__ import annotations

import json
from typing import Any

from zope.interface import implementer

from oro_sync.core.session import ISession
from oro_sync.identity import Identity
from oro_sync.wamp1.session import encode_event


@implementer(ISession)
class FakeSession:
    """Collects what the server would write; decodes WAMP v1 frames for asserts."""

    encoder = staticmethod(encode_event)

    def __init__(self, session_id: str, identity: Identity | None = None):
        self.session_id = session_id
        self.identity = identity or Identity.anonymous_for(session_id)
        self.subscriptions: set[str] = set()
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send_frame(self, data: bytes) -> None:
        self.frames.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def texts(self) -> list[str]:
        """Payloads of the text frames received (server frames are unmasked)."""
        out = []
        for data in self.frames:
            n = data[1] & 0x7F
            offset = 2 if n < 126 else (4 if n == 126 else 10)
            out.append(data[offset:].decode("utf-8"))
        return out

    def events(self) -> list[Any]:
        """The (topic, payload) of every EVENT received, in order."""
        out = []
        for text in self.texts():
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if isinstance(msg, list) and msg and msg[0] == 8:
                out.append((msg[1], msg[2]))
        return out


def user_session(session_id: str, user_id: int, username: str = "") -> FakeSession:
    return FakeSession(session_id, Identity.user(user_id, username or f"user{user_id}"))


class V1FrontEnd:
    """A policy as a WAMP v1 session drives it: a refused subscription is
    rendered (Oro's denial text, if any, as a raw frame) and a parsed
    PUBLISH becomes the core's PublishRequest.  Anything else is the
    policy's own."""

    def __init__(self, policy: Any):
        self.policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def subscribe(self, session: Any, uri: str) -> Any:
        """Returns the refusal (a SubscriptionDenied), or None."""
        from oro_sync.core.frames import text_frame
        from oro_sync.core.policy import SubscriptionDenied

        try:
            self.policy.subscribe(session, uri)
        except SubscriptionDenied as e:
            if e.notice is not None:
                session.send_frame(text_frame(e.notice))
            return e
        return None

    def publish(self, session: Any, uri: str, message: Any) -> bool:
        from oro_sync.core.publish import PublishRequest, new_id

        return self.policy.publish(session, PublishRequest(
            uri, message.event, session.session_id, new_id(), exclude_me=message.exclude_me,
            exclude_flag=message.flag_truthy, exclude=message.exclude, eligible=message.eligible))
