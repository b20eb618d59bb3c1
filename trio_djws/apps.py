"""The ``trio_djws`` Django app (required in ``INSTALLED_APPS``): registers the system checks,
the ORM guard and the features' routing hooks (``trio_djws.routing``): the ``ROOT_URLCONF``
view fallback (``trio_djws.views``) and the signals endpoint (``trio_djws.signals``); and the
instrumentation the settings turn on (``trio_djws.instrument``): metrics
(``WEBSOCKET_METRICS``), tracing (``WEBSOCKET_TRACING``) and the live connections page
(``WEBSOCKET_DASHBOARD_PATH``, with its socket)."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["TrioDjwsConfig"]


class TrioDjwsConfig(AppConfig):
    """``"trio_djws"`` in ``INSTALLED_APPS``: required by ``get_asgi_application``, the
    commands and the servers (``ConfigurationError`` naming the fix otherwise)."""

    name = "trio_djws"
    verbose_name = "trio-djws WebSockets"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .project import refuse_django_asgi_handler  # and the project-wiring checks
        from .routing import registry
        from .threads import install_orm_guard
        from .views import resolve_fallback

        install_orm_guard()
        # The features plug into routing here, so that routing names none of them.
        registry.add_fallback(resolve_fallback)
        registry.add_discovery(_discover_signals)
        refuse_django_asgi_handler()
        _enable_observability()


def _enable_observability() -> None:
    # WEBSOCKET_METRICS / WEBSOCKET_TRACING: the features register into trio_djws.instrument.
    # A missing extra is reported by the system checks (E093, E094), not raised here.
    # (A wrong type is E001's: only True turns either on.)
    import importlib.util

    from django.conf import settings

    if getattr(settings, "WEBSOCKET_METRICS", False) is True and importlib.util.find_spec(
        "prometheus_client"
    ):
        from .metrics import enable

        enable()
    path = getattr(settings, "WEBSOCKET_DASHBOARD_PATH", None)
    if isinstance(path, str) and path.startswith("/") and path.endswith("/"):
        from .dashboard import enable as enable_dashboard
        from .routing import registry

        enable_dashboard()
        registry.add_discovery(_discover_dashboard)
    if getattr(settings, "WEBSOCKET_TRACING", False) is True and importlib.util.find_spec(
        "opentelemetry"
    ):
        from .tracing import enable as enable_tracing

        enable_tracing()


def _discover_signals() -> None:
    # A discovery hook (trio_djws.routing.autodiscover): the @signal functions, then the
    # signals endpoint at WEBSOCKET_SIGNALS_PATH (None: not served).
    from django.utils.module_loading import import_string

    from .conf import get_settings
    from .routing import registry
    from .signals import autodiscover

    autodiscover()
    path = get_settings().signals_path
    if path is not None:
        # handlers/ is installed as trio_djws.handlers (pyproject package-dir), which mypy,
        # checking the source tree, does not see as a subpackage: imported by name.
        registry.register(path, import_string("trio_djws.handlers.SignalHandler"))


def _discover_dashboard() -> None:
    # A discovery hook: the dashboard socket at WEBSOCKET_DASHBOARD_PATH.
    from .conf import get_settings
    from .dashboard import DashboardHandler
    from .routing import registry

    path = get_settings().dashboard_path
    if path is not None:
        registry.register(path, DashboardHandler)
