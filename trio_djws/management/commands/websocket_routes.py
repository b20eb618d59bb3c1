"""``manage.py websocket_routes``: what serves each WebSocket path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import URLPattern, URLResolver, get_resolver

from trio_djws.conf import get_settings
from trio_djws.handler import BaseMixin, BaseWSClass
from trio_djws.routing import autodiscover, iter_namespaces

__all__ = ["Command"]


def _name(klass: type | Any) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _mixins(handler: type[BaseWSClass]) -> list[str]:
    # In the order their hooks run: right to left in the bases, as the handler chains them.
    return [
        _name(klass)
        for klass in reversed(handler.__mro__)
        if issubclass(klass, BaseMixin)
        and klass is not BaseMixin
        and not issubclass(klass, BaseWSClass)  # the handler itself
    ]


def _views(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _views(entry.url_patterns, route)
        else:
            yield route, entry.callback


class Command(BaseCommand):
    help = (
        "List the WebSocket routes: every @Namespace path with its handler class and mixins "
        "(in the order they run), then the ROOT_URLCONF views that accept WebSockets "
        "(dwebsocket-style: @accept_websocket, @require_websocket, accept_websocket = True, "
        "or every view with WEBSOCKET_ACCEPT_ALL). A @Namespace wins over a view."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            autodiscover()
        except Exception as exc:  # re-raised as CommandError, with the cause
            raise CommandError(
                f"a handler module failed to import: {type(exc).__name__}: {exc} "
                "(manage.py check reports it as trio_djws.E010)"
            ) from exc
        namespaces = list(iter_namespaces())
        self.stdout.write(f"Namespaces ({len(namespaces)}):")
        for path, handler in namespaces:
            mixins = ", ".join(_mixins(handler)) or "-"
            self.stdout.write(f"  {path}  {_name(handler)}  mixins: {mixins}")
        urlconf = getattr(settings, "ROOT_URLCONF", None)
        views: list[tuple[str, Any]] = []
        if urlconf:
            accept_all = get_settings().accept_all
            views = [
                (route, view)
                for route, view in _views(get_resolver(urlconf).url_patterns)
                if accept_all or getattr(view, "accept_websocket", False)
            ]
        self.stdout.write(f"Views accepting WebSockets ({len(views)}):")
        for route, view in views:
            kind = "require_websocket" if getattr(view, "require_websocket", False) else "accept"
            self.stdout.write(f"  /{route}  {_name(view)}  {kind}")
