"""The protocol-independent core: sessions, topics, delivery and the publish contract.

The WAMP v1 and v2 sessions are :class:`~oro_sync.core.session.ISession`\ s;
they hand clients' actions to an :class:`~oro_sync.core.policy.IPubSubPolicy`
as core types (:class:`~oro_sync.core.publish.PublishRequest`); topic
handlers and server code publish through an
:class:`~oro_sync.core.broker.IBroker`, which delivers
:class:`~oro_sync.core.publish.Publication`\ s locally (or, with a broker
spanning nodes, everywhere).  Nothing here knows a wire format or Twisted's
internals.
"""

from oro_sync.core.broker import IBroker, LocalBroker
from oro_sync.core.hub import Hub
from oro_sync.core.session import ISession
from oro_sync.core.topic import Topic, TopicRegistry

__all__ = ["Hub", "IBroker", "ISession", "LocalBroker", "Topic", "TopicRegistry"]
