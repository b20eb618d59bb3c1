"""Namespaces: which handler class serves which WebSocket path.

``@Namespace("/chat/<slug:room>/")`` registers a ``BaseWSClass`` subclass for the full path
``WEBSOCKET_BASE_URI + namespace``. Paths are matched exactly; Django path converters
(``<int:pk>``, ``<slug:room>``) are allowed and their values land in ``websocket.kwargs``.
The registry is filled at import time, before any trio run, and is the one piece of
module-level state (resettable with ``registry.clear()`` in tests).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.urls.resolvers import RoutePattern
from django.utils.module_loading import autodiscover_modules

from .conf import get_settings
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .handler import BaseWSClass

__all__ = ["Namespace", "Route", "autodiscover", "registry"]

logger = logging.getLogger(__name__)

H = TypeVar("H", bound="type[BaseWSClass]")


@dataclass(frozen=True)
class Route:
    """One registered namespace."""

    namespace: str
    """The path as given to ``@Namespace``, without ``WEBSOCKET_BASE_URI``."""
    handler: type[BaseWSClass]
    """The handler class; one instance is made per connection."""


class _Registry:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._compiled: tuple[str, dict[str, Route], list[tuple[RoutePattern, Route]]] | None = None
        self._lock = threading.Lock()
        self.import_errors: dict[str, BaseException] = {}

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
    """
    autodiscover_modules("websockets")
    for module in get_settings().handlers:
        try:
            importlib.import_module(module)
        except Exception as exc:
            registry.import_errors[module] = exc
            raise
    from .signals import autodiscover as autodiscover_signals  # the signals endpoint

    autodiscover_signals()


def iter_namespaces() -> Iterator[tuple[str, type[BaseWSClass]]]:
    """Yield ``(full path, handler class)`` for every registered namespace."""
    base = get_settings().base_uri
    for route in registry.routes():
        yield base + route.namespace, route.handler
