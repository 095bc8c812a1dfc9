"""``POST /publish``: the backend pushes over plain HTTP.

::

    curl -X POST http://127.0.0.1:8081/publish \\
         -H 'Authorization: Bearer <secret>' \\
         -d '{"topic": "oro/maintenance", "data": {"isOn": true, "userId": null}}'

Authentication is the backend secret (``pushers.http.secret``, by default
``auth.secret``, the one that signs Oro's backend tickets) as a bearer
token, compared in constant time: a missing or malformed ``Authorization``
header is 401 (with ``WWW-Authenticate: Bearer``), a wrong secret 403.
The body is one pushed message (see :mod:`oro_sync.pushers.dispatch`);
the answers are JSON: 200 ``{"published": true, "id": <publication id>}``,
400 (not a message), 404 (no route for the topic), 413 (over
``pushers.max_message_size``), 405 for any method but POST.

:class:`PublishResource` is a plain twisted.web resource, so it can be
mounted on any site (an admin listener, say); :class:`HttpPusher` serves
it alone on ``pushers.http.listen`` at ``pushers.http.path``, with a site
that stops buffering a body once it is over the limit.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.web import resource, server

from oro_sync.logs import Logger
from oro_sync.pushers.dispatch import (
    OVERSIZED, REFUSED, UNAUTHORIZED, UNROUTED, BadPush, PushDispatcher,
)

PROVIDER = "http"

_STATUS = {UNROUTED: 404, OVERSIZED: 413, REFUSED: 403}


def _answer(request: Any, status: int, body: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8")


class PublishResource(resource.Resource):
    """Takes one pushed message per POST, authenticated with the secret."""

    isLeaf = True

    def __init__(self, dispatcher: PushDispatcher, secret: str):
        super().__init__()
        if not secret:
            raise ValueError("the HTTP pusher needs a secret")
        self.dispatcher = dispatcher
        self._secret = secret.encode("utf-8")

    def render_POST(self, request: Any) -> bytes:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            self.dispatcher.reject(PROVIDER, BadPush(UNAUTHORIZED, "no bearer token"))
            request.setHeader(b"www-authenticate", b'Bearer realm="oro-sync"')
            return _answer(request, 401, {"error": "unauthorized",
                                          "detail": "send Authorization: Bearer <secret>"})
        if not hmac.compare_digest(token.strip(), self._secret):
            self.dispatcher.reject(PROVIDER, BadPush(UNAUTHORIZED, "wrong secret"))
            return _answer(request, 403, {"error": "forbidden", "detail": "wrong secret"})
        limit = self.dispatcher.max_message_size
        if getattr(request, "content_too_large", False):
            body = b"x" * (limit + 1)  # only its length matters: refused as oversized
        else:
            request.content.seek(0)
            body = request.content.read(limit + 1) if limit else request.content.read()
        result = self.dispatcher.dispatch(body, PROVIDER)
        if result.delivered:
            return _answer(request, 200, {"published": True, "id": result.publication_id})
        error = result.error
        return _answer(request, _STATUS.get(error.reason, 400),
                       {"error": error.reason, "detail": error.detail})


class CappedRequest(server.Request):
    """A request that stops keeping its body past ``site.max_body`` bytes
    (twisted.web would otherwise buffer any size before the resource runs)."""

    content_too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        cap = self.channel.site.max_body
        if cap and length is not None and length > cap:
            self._cut()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        cap = self.channel.site.max_body
        self._received += len(data)
        if self.content_too_large or (cap and self._received > cap):
            self._cut()
            return
        super().handleContentChunk(data)

    def _cut(self) -> None:
        if not self.content_too_large:
            self.content_too_large = True
            self.channel.site.bodies_cut += 1


class PushSite(server.Site):
    """A site for :class:`PublishResource` that caps request bodies."""

    requestFactory = CappedRequest
    #: Request bodies not kept because they were over the limit.
    bodies_cut = 0

    def __init__(self, root: Any, max_body: int):
        super().__init__(root)
        self.max_body = max_body
        self.noisy = False


class HttpPusher(service.Service):
    """Serves :class:`PublishResource` at ``path`` on the ``listen`` endpoint."""

    log = Logger()

    def __init__(self, listen: str, path: str, resource_: PublishResource, reactor: Any,
                 max_body: int):
        self.listen = listen
        root = resource.Resource()
        parent = root
        parts = [p for p in path.strip("/").split("/") if p]
        for part in parts[:-1]:
            child = resource.Resource()
            parent.putChild(part.encode("utf-8"), child)
            parent = child
        parent.putChild(parts[-1].encode("utf-8"), resource_)
        self.site = PushSite(root, max_body)
        self.reactor = reactor
        self.port: Any = None
        self._listening: defer.Deferred | None = None

    def startService(self) -> None:
        super().startService()
        d = endpoints.serverFromString(self.reactor, self.listen).listen(self.site)
        self._listening = d
        d.addCallbacks(self._listened, self._cannot_listen)

    def _listened(self, port: Any) -> Any:
        self.port = port
        addr = port.getHost()
        self.log.info("HTTP pusher listening on {host}:{port} ({listen})",
                      host=getattr(addr, "host", "?"), port=getattr(addr, "port", "?"),
                      listen=self.listen)
        return port

    def _cannot_listen(self, failure: Any) -> None:
        self.log.critical("HTTP pusher cannot listen on {listen}: {why}", listen=self.listen,
                          why=failure.getErrorMessage())
        self.reactor.callWhenRunning(self.reactor.stop)

    def when_listening(self) -> defer.Deferred:
        """Fires with the listening port."""
        if self.port is not None:
            return defer.succeed(self.port)
        d: defer.Deferred = defer.Deferred()
        assert self._listening is not None, "not started"
        self._listening.addCallback(lambda port: (d.callback(port), port)[1])
        return d

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
