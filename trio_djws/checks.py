"""System checks (``manage.py check``) for the ``WEBSOCKET_*`` settings.

Ids are ``trio_djws.E001``... and are never reused.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import fields

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from .conf import PREFIX, Settings, validate
from .exceptions import ConfigurationError

__all__ = ["check_broker", "check_handler_modules", "check_settings"]


@register("trio_djws")
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: object) -> list[CheckMessage]:
    """trio_djws.E001: a ``WEBSOCKET_*`` setting has the wrong type or range."""
    errors: list[CheckMessage] = []
    for f in fields(Settings):
        name = PREFIX + f.name.upper()
        if not hasattr(settings, name):
            continue
        problem = validate(f.name, getattr(settings, name))
        if problem is not None:
            errors.append(
                Error(
                    problem + ".",
                    hint=f"Fix {name}, or remove it for the default "
                    f"{getattr(Settings(), f.name)!r}.",
                    id="trio_djws.E001",
                )
            )
    return errors


@register("trio_djws")
def check_handler_modules(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.E010: a handler module (an app's ``websockets`` or one listed in
    ``WEBSOCKET_HANDLERS``) fails to import, so its namespaces would be missing."""
    modules = [f"{app.name}.websockets" for app in apps.get_app_configs()]
    listed = getattr(settings, "WEBSOCKET_HANDLERS", [])
    if isinstance(listed, list | tuple):
        modules.extend(str(module) for module in listed)
    errors: list[CheckMessage] = []
    for module in modules:
        try:
            if module.endswith(".websockets") and module not in listed:
                package = module.rsplit(".", 1)[0]
                if importlib.util.find_spec(module, package) is None:
                    continue
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001  (reported as a check error, never swallowed)
            errors.append(
                Error(
                    f"Handler module {module!r} failed to import: {type(exc).__name__}: {exc}",
                    hint="Fix the module (or remove it from WEBSOCKET_HANDLERS); "
                    "its @Namespace handlers are not registered.",
                    id="trio_djws.E010",
                )
            )
    return errors


@register("trio_djws")
def check_broker(app_configs: Sequence[AppConfig] | None, **kwargs: object) -> list[CheckMessage]:
    """trio_djws.E030: ``WEBSOCKET_BROKER['BACKEND']`` does not import (e.g. RedisBroker
    without the ``redis`` extra); trio_djws.E031: the broker refuses its ``CONFIG``."""
    value = getattr(settings, "WEBSOCKET_BROKER", None)
    if value is None or validate("broker", value) is not None:
        return []  # absent (the default) or malformed: check_settings reports it
    backend = value["BACKEND"]
    try:
        broker_class = import_string(backend)
    except ImportError as exc:
        return [
            Error(
                f"WEBSOCKET_BROKER['BACKEND'] {backend!r} cannot be imported: {exc}.",
                hint="Use trio_djws.brokers.InMemoryBroker or trio_djws.brokers.RedisBroker "
                "(pip install 'trio-djws[redis]').",
                id="trio_djws.E030",
            )
        ]
    from .groups import Groups

    try:
        broker_class(Groups(), value.get("CONFIG", {}))
    except (ConfigurationError, TypeError, ValueError) as exc:
        return [
            Error(
                f"WEBSOCKET_BROKER['CONFIG'] is not valid for {backend}: {exc}.",
                hint="Fix WEBSOCKET_BROKER['CONFIG'] (RedisBroker reads 'url' and 'prefix').",
                id="trio_djws.E031",
            )
        ]
    return []
