"""System checks on how the project is wired to trio_djws (``manage.py check``).

- E070 ``ASGI_APPLICATION`` names Django's own ``ASGIHandler``; W070 the project's ``asgi.py``
  (as ``startproject`` writes it) does, so
  ``hypercorn --worker-class trio project.asgi:application`` answers every request with 500.
  Under Hypercorn's trio worker the same finding stops the process at start-up with
  ``ImproperlyConfigured`` (once, naming the fix) instead;
- W071 no WebSocket handler of the project is registered, so every handshake gets HTTP 403;
- W072 ``trio_djws`` comes after ``django.contrib.staticfiles`` in ``INSTALLED_APPS``, so
  ``manage.py runserver`` is staticfiles' (no WebSockets: every handshake gets 404);
- E093 ``WEBSOCKET_METRICS`` without prometheus-client; E094 ``WEBSOCKET_TRACING`` without
  opentelemetry-api; W095 ``WEBSOCKET_DASHBOARD_PATH`` without ``django.contrib.admin``.

Django's ``ASGIHandler`` needs asyncio (``request_started.asend`` gathers with asyncio, and it
refuses ``websocket`` scopes), so it can never serve under trio.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Final

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver

from .routing import registry

__all__ = [
    "check_app_order",
    "check_asgi_module",
    "check_handlers_registered",
    "check_observability",
    "project_asgi_module",
    "refuse_django_asgi_handler",
]

_DJANGO_ASGI: Final = "django.core.asgi"
_FIX: Final = (
    "In {file}, replace 'from django.core.asgi import get_asgi_application' with "
    "'from trio_djws.asgi import get_asgi_application': Django's ASGIHandler needs asyncio "
    "and fails under trio (HTTP 500 on every request, WebSockets refused)."
)


def project_asgi_module() -> tuple[str, bool] | None:
    """The dotted name of the project's ASGI module, and whether ``ASGI_APPLICATION`` named it.

    ``ASGI_APPLICATION`` (``"mysite.asgi.application"``) when set; otherwise the ``asgi``
    module next to ``WSGI_APPLICATION`` or the settings module, where ``startproject`` puts it.
    None when no such module exists.
    """
    configured = getattr(settings, "ASGI_APPLICATION", None)
    if isinstance(configured, str) and "." in configured:
        return configured.rpartition(".")[0], True
    for anchor in (
        getattr(settings, "WSGI_APPLICATION", None),
        os.environ.get("DJANGO_SETTINGS_MODULE"),
    ):
        if isinstance(anchor, str) and "." in anchor:
            package = anchor.split(".")[0]
            name = f"{package}.asgi"
            try:
                if importlib.util.find_spec(name) is not None:
                    return name, False
            except ImportError:
                continue
    return None


def _source_file(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return spec.origin


def _uses_django_asgi_handler(path: str) -> bool:
    # Read, never import: importing the module would build the application. The module
    # uses Django's handler when it imports get_asgi_application (or the module) from
    # django.core.asgi and nothing from trio_djws.asgi.
    try:
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read(), path)
    except (OSError, SyntaxError, ValueError):
        return False
    django_handler = ours = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == _DJANGO_ASGI:
                django_handler = True
            elif node.module.startswith("trio_djws"):
                ours = True
        elif isinstance(node, ast.Import):
            for alias in node.names:
                django_handler |= alias.name == _DJANGO_ASGI
                ours |= alias.name.startswith("trio_djws")
    return django_handler and not ours


@register("trio_djws")
def check_asgi_module(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.E070: ``ASGI_APPLICATION`` is built by ``django.core.asgi``; trio_djws.W070:
    the project's ``asgi.py`` is (only plain Hypercorn serves it: ``manage.py serve`` and
    ``runserver`` build trio_djws' application when ``ASGI_APPLICATION`` is unset)."""
    found = project_asgi_module()
    if found is None:
        return []
    module, configured = found
    path = _source_file(module)
    if path is None or not _uses_django_asgi_handler(path):
        return []
    if configured:
        return [
            Error(
                f"ASGI_APPLICATION names {module!r}, which builds Django's ASGIHandler: it "
                "cannot serve under trio.",
                hint=_FIX.format(file=path) + " Or remove ASGI_APPLICATION.",
                id="trio_djws.E070",
            )
        ]
    return [
        Warning(
            f"{path} builds Django's ASGIHandler: 'hypercorn --worker-class trio "
            f"{module}:application' would answer every request with HTTP 500.",
            hint=_FIX.format(file=path),
            id="trio_djws.W070",
        )
    ]


def refuse_django_asgi_handler() -> None:
    """Stop a Hypercorn trio worker that is loading a Django-``ASGIHandler`` ``asgi.py``.

    Called from ``AppConfig.ready()``. Hypercorn's trio worker imports the application module
    (which calls ``django.setup()``, hence ``ready()``) before it starts serving; when that
    module is the project's ASGI module and it builds Django's handler, every request would
    fail with a traceback that does not name the cause. Fails once, at start-up, instead.

    Raises:
        ImproperlyConfigured: the message names the file and the line to change.
    """
    if "hypercorn.trio.run" not in sys.modules:
        return
    found = project_asgi_module()
    if found is None:
        return
    module = sys.modules.get(found[0])
    spec = getattr(module, "__spec__", None)
    # Only while that module is being imported: a test process that merely has Hypercorn
    # loaded (the pytest plugin's live server) is not serving it.
    if spec is None or not getattr(spec, "_initializing", False):
        return
    path = _source_file(found[0])
    if path is not None and _uses_django_asgi_handler(path):
        raise ImproperlyConfigured(_FIX.format(file=path))


def _views(patterns: Sequence[URLPattern | URLResolver]) -> Iterator[Any]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _views(entry.url_patterns)
        else:
            yield entry.callback


def _accepting_views() -> bool:
    urlconf = getattr(settings, "ROOT_URLCONF", None)
    if not urlconf:
        return False
    if getattr(settings, "WEBSOCKET_ACCEPT_ALL", False) is True:
        return True
    try:
        return any(
            getattr(view, "accept_websocket", False)
            for view in _views(get_resolver(urlconf).url_patterns)
        )
    except Exception:  # noqa: BLE001  (a broken URLconf is Django's own check's to report)
        return True


@register("trio_djws")
def check_handlers_registered(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.W071: no ``@Namespace`` handler of the project and no view accepting
    WebSockets is registered, so every handshake gets HTTP 403 (typically: the handlers'
    app is missing from ``INSTALLED_APPS``)."""
    # Settings are read raw: a malformed one is E001's to report, not this check's to raise.
    modules = [f"{app.name}.websockets" for app in apps.get_app_configs()]
    listed = getattr(settings, "WEBSOCKET_HANDLERS", [])
    if isinstance(listed, list | tuple):
        modules.extend(str(module) for module in listed)
    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
        except Exception:  # noqa: BLE001  (E010 reports a module that fails to import)
            continue
    own = [r for r in registry.routes() if not r.handler.__module__.startswith("trio_djws.")]
    if own or _accepting_views():
        return []
    return [
        Warning(
            "No WebSocket handler of this project is registered: every handshake will be "
            "refused with HTTP 403.",
            hint="Put your @Namespace handlers in a 'websockets.py' module of an app listed in "
            "INSTALLED_APPS (or list their module in WEBSOCKET_HANDLERS); "
            "'manage.py websocket_routes' lists what is registered.",
            id="trio_djws.W071",
        )
    ]


_STATICFILES: Final = "django.contrib.staticfiles"


@register("trio_djws")
def check_app_order(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.W072: ``trio_djws`` is listed after ``django.contrib.staticfiles``, whose
    ``runserver`` then wins (Django takes a command from the first app in ``INSTALLED_APPS``
    that has it): WebSocket handshakes through ``manage.py runserver`` get HTTP 404."""
    names = [app.name for app in apps.get_app_configs()]
    if _STATICFILES not in names or "trio_djws" not in names:
        return []
    if names.index("trio_djws") < names.index(_STATICFILES):
        return []
    return [
        Warning(
            f"'trio_djws' comes after {_STATICFILES!r} in INSTALLED_APPS, so 'manage.py "
            "runserver' is Django's and serves no WebSockets (every handshake gets 404).",
            hint=f"Move 'trio_djws' above {_STATICFILES!r} in INSTALLED_APPS (first is "
            "simplest), as Daphne asks for Channels.",
            id="trio_djws.W072",
        )
    ]


_EXTRAS: Final = {  # setting: (module, extra, package)
    "WEBSOCKET_METRICS": ("prometheus_client", "trio-djws[metrics]", "prometheus-client"),
    "WEBSOCKET_TRACING": ("opentelemetry", "trio-djws[tracing]", "opentelemetry-api"),
}


def _missing_extra(name: str) -> tuple[str, str] | None:
    # (message, hint) if setting ``name`` is True and its extra is not installed.
    module, extra, package = _EXTRAS[name]
    if getattr(settings, name, False) is not True or importlib.util.find_spec(module):
        return None
    return (
        f"{name} is True but {package} is not installed.",
        f"pip install '{extra}', or set {name} = False.",
    )


@register("trio_djws")
def check_observability(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.E093 / E094: ``WEBSOCKET_METRICS`` / ``WEBSOCKET_TRACING`` is True but its
    optional dependency (prometheus-client / opentelemetry-api) is not installed. W095:
    ``WEBSOCKET_DASHBOARD_PATH`` is set without ``django.contrib.admin`` (the page's look and
    login)."""
    errors: list[CheckMessage] = []
    if getattr(settings, "WEBSOCKET_DASHBOARD_PATH", None) is not None and not apps.is_installed(
        "django.contrib.admin"
    ):
        errors.append(
            Warning(
                "WEBSOCKET_DASHBOARD_PATH is set but django.contrib.admin is not installed: "
                "the live connections page extends the admin's templates and login.",
                hint="Add 'django.contrib.admin' to INSTALLED_APPS, or remove "
                "WEBSOCKET_DASHBOARD_PATH.",
                id="trio_djws.W095",
            )
        )
    metrics = _missing_extra("WEBSOCKET_METRICS")
    if metrics is not None:
        errors.append(Error(metrics[0], hint=metrics[1], id="trio_djws.E093"))
    tracing = _missing_extra("WEBSOCKET_TRACING")
    if tracing is not None:
        errors.append(Error(tracing[0], hint=tracing[1], id="trio_djws.E094"))
    return errors
