"""Namespaces: which handler class serves which WebSocket path.

``@Namespace("/chat/<slug:room>/")`` registers a ``BaseWSClass`` subclass for the full path
``WEBSOCKET_BASE_URI + namespace``. Paths are matched exactly; Django path converters
(``<int:pk>``, ``<slug:room>``) are allowed and their values land in ``websocket.kwargs``.
The registry is filled at import time, before any trio run, and is the one piece of
module-level state (resettable with ``registry.clear()`` in tests).

Features plug into routing through two hooks, registered in ``AppConfig.ready()``
(``trio_djws.apps``), so that routing knows no feature by name:

- fallback resolvers (``registry.add_fallback``): asked, in registration order, for a
  handshake that no ``@Namespace`` matches; ``trio_djws.views`` resolves ``ROOT_URLCONF``.
- discovery hooks (``registry.add_discovery``): run by ``autodiscover()`` after the handler
  modules are imported; ``trio_djws.signals`` imports the ``signals`` modules and routes its
  endpoint at ``WEBSOCKET_SIGNALS_PATH``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from django.urls.resolvers import RoutePattern
from django.utils.module_loading import autodiscover_modules

from .conf import get_settings, require_app
from .exceptions import ConfigurationError
from .typing import WebSocketScope

if TYPE_CHECKING:
    from .handler import BaseWSClass

__all__ = ["Namespace"]

logger = logging.getLogger(__name__)

H = TypeVar("H", bound="type[BaseWSClass]")


@dataclass(frozen=True)
class Route:
    """One registered namespace."""

    namespace: str
    """The path as given to ``@Namespace``, without ``WEBSOCKET_BASE_URI``."""
    handler: type[BaseWSClass]
    """The handler class; one instance is made per connection."""


@dataclass(frozen=True)
class Refusal:
    """A fallback resolver's answer that refuses the handshake with an HTTP status."""

    status: int
    """The HTTP status of the refusal (e.g. 400)."""
    why: str
    """The cause, for the one WARNING line that names it."""


FallbackResolver: TypeAlias = "Callable[[WebSocketScope], type[BaseWSClass] | Refusal | None]"
"""Asked for a handshake that no ``@Namespace`` matches: the handler class to serve it with,
a ``Refusal``, or None (not mine: the next resolver is asked; after the last, HTTP 403)."""


class _Registry:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._compiled: tuple[str, dict[str, Route], list[tuple[RoutePattern, Route]]] | None = None
        self._lock = threading.Lock()
        self._fallbacks: list[FallbackResolver] = []
        self._discovery: list[Callable[[], None]] = []
        self.import_errors: dict[str, BaseException] = {}

    def add_fallback(self, resolver: FallbackResolver) -> None:
        """Ask ``resolver`` for handshakes that no ``@Namespace`` matches (registered once;
        called from ``AppConfig.ready()``). Not cleared by ``clear()``."""
        with self._lock:
            if resolver not in self._fallbacks:
                self._fallbacks.append(resolver)

    def add_discovery(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` in ``autodiscover()``, after the handler modules are imported
        (registered once; called from ``AppConfig.ready()``). Not cleared by ``clear()``."""
        with self._lock:
            if hook not in self._discovery:
                self._discovery.append(hook)

    def fallbacks(self) -> list[FallbackResolver]:
        """The fallback resolvers, in the order they are asked."""
        return list(self._fallbacks)

    def discovery_hooks(self) -> list[Callable[[], None]]:
        """The hooks ``autodiscover()`` runs, in registration order."""
        return list(self._discovery)

    def register(self, namespace: str, handler: type[BaseWSClass]) -> None:
        with self._lock:
            first = self._routes.get(namespace)
            if first is not None and first.handler is not handler:
                raise ConfigurationError(
                    f"Namespace {namespace!r} is registered twice: "
                    f"{first.handler.__module__}.{first.handler.__qualname__} and "
                    f"{handler.__module__}.{handler.__qualname__}"
                )
            self._routes[namespace] = Route(namespace, handler)
            self._compiled = None

    def routes(self) -> list[Route]:
        """Every registered route, in registration order."""
        return list(self._routes.values())

    def clear(self) -> None:
        """Forget every route (for tests)."""
        with self._lock:
            self._routes.clear()
            self._compiled = None

    def _compile(self) -> tuple[dict[str, Route], list[tuple[RoutePattern, Route]]]:
        base = get_settings().base_uri
        compiled = self._compiled
        if compiled is None or compiled[0] != base:
            exact: dict[str, Route] = {}
            patterns: list[tuple[RoutePattern, Route]] = []
            for route in self._routes.values():
                full = base + route.namespace
                if "<" in full:
                    patterns.append((RoutePattern(full, is_endpoint=True), route))
                else:
                    exact[full] = route
            compiled = (base, exact, patterns)
            self._compiled = compiled
        return compiled[1], compiled[2]

    def resolve(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        """Find the route for a request path.

        Returns:
            ``(route, kwargs)`` with the converted path parameters, or None when no
            namespace matches (the handshake then gets HTTP 403).
        """
        exact, patterns = self._compile()
        route = exact.get(path)
        if route is not None:
            return route, {}
        for pattern, candidate in patterns:
            match = pattern.match(path)
            if match is not None:
                return candidate, dict(match[2])
        return None

    def resolve_scope(
        self, scope: WebSocketScope
    ) -> tuple[type[BaseWSClass], dict[str, Any]] | Refusal | None:
        """Route a handshake: the ``@Namespace`` for its path, else the first fallback
        resolver's answer.

        Returns:
            ``(handler class, path kwargs)``; a ``Refusal``; or None when nothing matches
            (the handshake then gets HTTP 403). Resolvers run on the trio thread: pure
            Python, no I/O.
        """
        found = self.resolve(scope["path"])
        if found is not None:
            route, kwargs = found
            return route.handler, kwargs
        for resolver in self._fallbacks:
            answer = resolver(scope)
            if isinstance(answer, Refusal):
                return answer
            if answer is not None:
                return answer, {}
        return None


registry = _Registry()


class Namespace:
    """Class decorator: register a handler class for a WebSocket path.

    Args:
        path: the path after ``WEBSOCKET_BASE_URI``, e.g. ``"/chat/<slug:room>/"``.

    Raises:
        ConfigurationError: another handler class already has this path.
        TypeError: the decorated object is not a ``BaseWSClass`` subclass.
    """

    def __init__(self, path: str) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"Namespace path must be a str starting with '/', got {path!r}")
        self.path = path

    def __call__(self, handler: H) -> H:
        from .handler import BaseWSClass

        if not (isinstance(handler, type) and issubclass(handler, BaseWSClass)):
            raise TypeError(f"@Namespace expects a BaseWSClass subclass, got {handler!r}")
        registry.register(self.path, handler)
        handler.namespace = self.path
        return handler


def autodiscover() -> None:
    """Import every installed app's ``websockets`` module and ``WEBSOCKET_HANDLERS``.

    As the admin autodiscovers ``admin.py``; registering happens as a side effect of import.
    Import errors are recorded in ``registry.import_errors`` (reported by the system check
    ``trio_djws.E010``) and re-raised, so a broken handler module never fails silently.
    Then runs the discovery hooks that features registered (``registry.add_discovery``).

    Raises:
        ConfigurationError: ``"trio_djws"`` is not in ``INSTALLED_APPS`` (its
            ``AppConfig.ready()`` registers the features' hooks).
    """
    require_app()
    autodiscover_modules("websockets")
    for module in get_settings().handlers:
        try:
            importlib.import_module(module)
        except Exception as exc:
            registry.import_errors[module] = exc
            raise
    for hook in registry.discovery_hooks():
        hook()


def iter_namespaces() -> Iterator[tuple[str, type[BaseWSClass]]]:
    """Yield ``(full path, handler class)`` for every registered namespace."""
    base = get_settings().base_uri
    for route in registry.routes():
        yield base + route.namespace, route.handler
