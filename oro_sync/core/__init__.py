"""The protocol-independent core: sessions, topics and delivery.

Front ends (WAMP v1 today, WAMP v2 next) adapt their connections to
:class:`~oro_sync.core.session.ISession`; topic handlers and server code
publish through an :class:`~oro_sync.core.broker.IBroker`, which delivers
locally (or, later, through Redis to every node).
"""

from oro_sync.core.broker import IBroker, LocalBroker
from oro_sync.core.hub import Hub
from oro_sync.core.session import ISession
from oro_sync.core.topic import Topic, TopicRegistry

__all__ = ["Hub", "IBroker", "ISession", "LocalBroker", "Topic", "TopicRegistry"]
