"""The WebSocket server of oro-sync: one Autobahn protocol/factory pair for
WAMP v1 and WAMP v2 (handshake gate, subprotocol choice, flow control,
keep-alive), each connection carrying one WAMP session.

- :mod:`~oro_sync.websocket.factory`: :class:`WampServerFactory`;
- :mod:`~oro_sync.websocket.connection`: :class:`WampConnection`;
- :mod:`~oro_sync.websocket.limits`: :class:`Limits`, the token bucket;
- :mod:`~oro_sync.websocket.kernel_write`: the outbox's direct writer.

Nothing is imported here, so that plain settings (``Limits``) can be read
without loading Autobahn.
"""
