"""Topic routing: ``websocket_routing.yml`` files -> routes -> :class:`WampRequest`.

A route maps a channel pattern such as ``oro/email_event/{user_id}/{organization_id}``
to one or more topic handlers.  The file format is OroSyncBundle's (one YAML
mapping per route, keys ``channel``, ``handler.callback``, ``handler.args``,
``requirements.<param>.pattern`` / ``.wildcard``; oro-sync adds an optional
``publishers:``, a rule of :mod:`oro_sync.auth.rules` such as ``backend``,
``users`` or ``anyone``).  Matching follows
GosWebSocketBundle's pubsub router with its quirks fixed (see the README):

- channel and URI are split on ``/`` and must have as many segments;
- literal segments match exactly; a placeholder is a whole segment ``{name}``;
- a requirement pattern must match the whole segment (``^(?:pattern)$``),
  an unconstrained placeholder matches any one non-empty segment, and both
  are captured as attributes;
- ``wildcard: true`` also accepts the segments ``*`` and ``all``;
- the first matching route wins (file order, then key order); a route name
  seen again replaces the earlier route in its original position.

Routes are indexed by segment count and first literal segment, and results
are cached per URI, so hundreds of routes cost little per lookup.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from oro_sync.auth.rules import normalize_rule

_ROUTE_KEYS = {"channel", "handler", "requirements", "publishers"}
_HANDLER_KEYS = {"callback", "args"}
_REQUIREMENT_KEYS = {"pattern", "wildcard"}
_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_WILDCARDS = ("*", "all")
_CACHE_SIZE = 4096
_CACHE_MAX_URI = 512


class RoutingError(Exception):
    """A routing file or route that cannot be used (raised at start-up)."""

    def __init__(self, problem: str, source: str = "", route: str = ""):
        where = ", ".join(p for p in (source and f"file {source}", route and f"route {route!r}") if p)
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem = problem
        self.source = source
        self.route = route


@dataclass(frozen=True, slots=True)
class _Segment:
    """One segment of a channel: a literal, or a placeholder with its matcher."""

    literal: str | None
    name: str | None = None
    regex: re.Pattern | None = None
    wildcard: bool = False

    def match(self, value: str) -> bool:
        if self.literal is not None:
            return value == self.literal
        if not value:
            return False
        if self.wildcard and value in _WILDCARDS:
            return True
        return self.regex is None or self.regex.match(value) is not None


@dataclass(slots=True)
class Route:
    """One route: its name, channel, handler names and placeholder rules."""

    name: str
    channel: str
    callbacks: tuple[str, ...]
    args: tuple = ()
    requirements: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""
    segments: tuple[_Segment, ...] = ()
    #: Who may publish (an oro-sync extension): a rule's name from
    #: :mod:`oro_sync.auth.rules`, aliases already resolved; None means the
    #: server's default.
    publishers: str | None = None

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The attributes captured from ``parts``, or None if it does not match."""
        if len(parts) != len(self.segments):
            return None
        attributes = {}
        for segment, value in zip(self.segments, parts):
            if not segment.match(value):
                return None
            if segment.name is not None:
                attributes[segment.name] = value
        return attributes


@dataclass(frozen=True, slots=True)
class WampRequest:
    """What a topic handler learns about the URI it is called for."""

    route_name: str
    route: Route
    matched: str
    attributes: Mapping[str, str]

    # GosWebSocketBundle's accessor names, for handlers ported from PHP.
    def getRouteName(self) -> str:
        return self.route_name

    def getRoute(self) -> Route:
        return self.route

    def getMatched(self) -> str:
        return self.matched

    def getAttributes(self) -> Mapping[str, str]:
        return self.attributes


def _no_unknown_keys(mapping: dict, known: set, what: str, source: str, route: str) -> None:
    unknown = set(mapping) - known
    if unknown:
        raise RoutingError(f"unknown key(s) {what}{', '.join(sorted(map(str, unknown)))}", source, route)


def compile_route(name: str, spec: Any, source: str = "") -> Route:
    """Validate one route mapping from a routing file and compile it."""
    if not isinstance(spec, dict):
        raise RoutingError("a route must be a mapping", source, name)
    _no_unknown_keys(spec, _ROUTE_KEYS, "", source, name)
    channel = spec.get("channel")
    if not isinstance(channel, str) or not channel:
        raise RoutingError("'channel' must be a non-empty string", source, name)
    handler = spec.get("handler")
    if not isinstance(handler, dict):
        raise RoutingError("'handler' must be a mapping with a 'callback'", source, name)
    _no_unknown_keys(handler, _HANDLER_KEYS, "in handler: ", source, name)
    callback = handler.get("callback")
    callbacks = (callback,) if isinstance(callback, str) else callback
    if (not isinstance(callbacks, (list, tuple)) or not callbacks
            or not all(isinstance(c, str) and c for c in callbacks)):
        raise RoutingError("'handler.callback' must be a handler name or a list of names", source, name)
    args = handler.get("args") or []
    if not isinstance(args, list):
        raise RoutingError("'handler.args' must be a list", source, name)
    publishers = spec.get("publishers")
    if publishers is not None:
        # The one vocabulary of permission rules, so that a route and the
        # server-wide auth.publishers accept the same words.
        try:
            publishers = normalize_rule(publishers, "'publishers'")
        except ValueError as e:
            raise RoutingError(str(e), source, name) from None
    requirements = spec.get("requirements") or {}
    if not isinstance(requirements, dict):
        raise RoutingError("'requirements' must be a mapping", source, name)

    placeholders = set()
    segments = []
    for part in channel.split("/"):
        m = _PLACEHOLDER.match(part)
        if m is None:
            if "{" in part or "}" in part:
                raise RoutingError(f"placeholder {part!r} must be a whole segment named {{name}}", source, name)
            segments.append(_Segment(literal=part))
            continue
        pname = m.group(1)
        if pname in placeholders:
            raise RoutingError(f"placeholder {{{pname}}} appears twice", source, name)
        placeholders.add(pname)
        segments.append(_placeholder(pname, requirements.get(pname), source, name))
    for pname in requirements:
        if pname not in placeholders:
            raise RoutingError(f"requirement for {pname!r}, which is not a placeholder of the channel",
                               source, name)
    return Route(name=name, channel=channel, callbacks=tuple(callbacks), args=tuple(args),
                 requirements=requirements, source=source, segments=tuple(segments),
                 publishers=publishers)


def _placeholder(pname: str, rule: Any, source: str, route: str) -> _Segment:
    if rule is None:
        return _Segment(literal=None, name=pname)
    if not isinstance(rule, dict):
        raise RoutingError(f"requirement {pname!r} must be a mapping", source, route)
    _no_unknown_keys(rule, _REQUIREMENT_KEYS, f"in requirement {pname!r}: ", source, route)
    regex = None
    pattern = rule.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise RoutingError(f"pattern of {pname!r} must be a string", source, route)
        try:
            # ASCII: like PCRE in PHP, \d is 0-9 only (not other scripts' digits).
            regex = re.compile(f"(?:{pattern})\\Z", re.ASCII)
        except re.error as e:
            raise RoutingError(f"bad regular expression for {pname!r}: {pattern!r} ({e})", source, route) from None
    wildcard = rule.get("wildcard", False)
    if not isinstance(wildcard, bool):
        raise RoutingError(f"wildcard of {pname!r} must be true or false", source, route)
    return _Segment(literal=None, name=pname, regex=regex, wildcard=wildcard)


def load_routing_file(path: str) -> list[Route]:
    """Read one ``websocket_routing.yml``; an empty file has no routes."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise RoutingError(f"cannot read: {e.strerror}", path) from None
    except yaml.YAMLError as e:
        raise RoutingError(f"invalid YAML: {e}", path) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise RoutingError("a routing file must be a mapping of route names to routes", path)
    return [compile_route(str(name), spec, path) for name, spec in data.items()]


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Explicit paths stay as given; globs (``*``, ``?``, ``[``, ``**``) expand
    in sorted order.  A glob that matches nothing is not an error."""
    out = []
    for p in paths:
        if glob.has_magic(p):
            out.extend(sorted(glob.glob(p, recursive=True)))
        elif os.path.isdir(p):
            out.extend(sorted(glob.glob(os.path.join(p, "**", "websocket_routing.yml"), recursive=True)))
        else:
            out.append(p)
    return out


class Router:
    """Ordered routes and the lookup from topic URI to :class:`WampRequest`."""

    #: Longest value a placeholder captures by default: a longer segment
    #: does not match (client input must not become megabytes of attributes
    #: and topic names).
    MAX_PLACEHOLDER_LENGTH = 128

    def __init__(self, routes: Iterable[Route] = (), max_placeholder_length: int = MAX_PLACEHOLDER_LENGTH):
        self.max_placeholder_length = max_placeholder_length
        self._routes: dict[str, Route] = {}
        for route in routes:
            self._routes[route.name] = route
        self._reindex()

    @classmethod
    def from_files(cls, paths: Iterable[str],
                   max_placeholder_length: int = MAX_PLACEHOLDER_LENGTH) -> "Router":
        routes: list[Route] = []
        for path in expand_paths(paths):
            routes.extend(load_routing_file(path))
        return cls(routes, max_placeholder_length)

    @property
    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def get(self, name: str) -> Route | None:
        return self._routes.get(name)

    def add(self, route: Route) -> None:
        self._routes[route.name] = route
        self._reindex()

    def _reindex(self) -> None:
        # (segment count, first segment literal or None) -> [(order, route)]
        index: dict[tuple[int, str | None], list[tuple[int, Route]]] = {}
        for order, route in enumerate(self._routes.values()):
            first = route.segments[0].literal
            index.setdefault((len(route.segments), first), []).append((order, route))
        self._index = index
        self._cache: dict[str, WampRequest | None] = {}

    def match(self, uri: str) -> WampRequest | None:
        """The request for the first route matching ``uri``, or None."""
        cache = self._cache
        try:
            return cache[uri]
        except KeyError:
            pass
        parts = uri.split("/")
        n = len(parts)
        candidates = self._index.get((n, parts[0]), [])
        wild = self._index.get((n, None))
        if wild:
            candidates = sorted(candidates + wild, key=lambda c: c[0])
        result = None
        longest = self.max_placeholder_length
        for _, route in candidates:
            attributes = route.match(parts)
            if attributes is not None and longest and any(len(v) > longest for v in attributes.values()):
                attributes = None
            if attributes is not None:
                result = WampRequest(route.name, route, uri, attributes)
                break
        if len(uri) <= _CACHE_MAX_URI:  # client input: never keep huge keys
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[uri] = result
        return result
