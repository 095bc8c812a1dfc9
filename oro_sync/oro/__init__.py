"""Oro's application on the hub: routes from ``websocket_routing.yml``,
topic handlers declared like Oro services, and the pub/sub policy that runs
them (GosWebSocketBundle's topic dispatcher), apart from the generic hub and
the WAMP front ends."""
