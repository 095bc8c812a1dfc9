"""WAMP v1: the message grammar (:mod:`~oro_sync.wamp1.messages`, pure), the
session of one client (:mod:`~oro_sync.wamp1.session`) and AutobahnPython
0.8's reference pub/sub rules (:mod:`~oro_sync.wamp1.pubsub`).

The WebSocket server that carries WAMP v1 and v2 sessions is
:class:`oro_sync.websocket.factory.WampServerFactory`.
"""
