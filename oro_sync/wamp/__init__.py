"""What WAMP v1 and WAMP v2 share, and neither owns: the strict JSON codec,
server procedures and their error mapping, and the contract between a WAMP
session and the WebSocket connection that carries it."""
