"""System checks (``manage.py check``) for the values of the ``WEBSOCKET_*`` settings.

Ids are ``trio_djws.E001``... and are never reused; each message's hint names the setting.
The checks reference (docs/reference/checks.md) lists every id, read from this source, with a
paragraph each; the checks of how the project is wired (its ``asgi.py``, handlers, app order,
the extras and apps that settings need) are ``trio_djws.project``'s.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import fields
from typing import Final
from urllib.parse import urlsplit

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from .conf import DEFAULT_MIDDLEWARE, PREFIX, Settings, get_settings, validate
from .exceptions import ConfigurationError
from .origins import allowed_hosts  # the same DEBUG defaults as the handshake check

__all__ = [
    "check_broker",
    "check_compression",
    "check_group_history",
    "check_handler_modules",
    "check_middleware",
    "check_origins",
    "check_settings",
    "check_signals",
    "check_ticket_cache",
    "check_unknown_settings",
]


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


# Django middleware that Django has removed, with what replaces it (djwebsockets' README lists
# SessionAuthenticationMiddleware in its WEBSOCKET_MIDDLEWARE example).
_REMOVED_MIDDLEWARE: Final = {
    "django.contrib.auth.middleware.SessionAuthenticationMiddleware": (
        "Removed in Django 2.0: AuthenticationMiddleware has verified the session hash since "
        "Django 1.10. Remove it from WEBSOCKET_MIDDLEWARE."
    ),
    "django.middleware.transaction.TransactionMiddleware": (
        "Removed in Django 1.8: use ATOMIC_REQUESTS in DATABASES. Remove it from "
        "WEBSOCKET_MIDDLEWARE."
    ),
}
_SESSION_MIDDLEWARE: Final = "django.contrib.sessions.middleware.SessionMiddleware"
_AUTH_MIDDLEWARE: Final = "django.contrib.auth.middleware.AuthenticationMiddleware"
# Settings of the libraries we replace: named in the unknown-setting warning's hint.
_FOREIGN_SETTINGS: Final = {
    "WEBSOCKET_FACTORY_CLASS": "dwebsocket's backend setting; trio_djws has no backends",
    "WEBSOCKET_HOST": "djwebsockets' separate server address; trio_djws serves on the ASGI server",
    "WEBSOCKET_PORT": "djwebsockets' separate server port; trio_djws serves on the ASGI server",
}


def _setting(name: str, default: object) -> object:
    return getattr(settings, name, default)


@register("trio_djws")
def check_unknown_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.W040: a ``WEBSOCKET_*`` setting that trio_djws does not know (a typo, or a
    setting of dwebsocket/djwebsockets that has no effect here)."""
    known = {PREFIX + f.name.upper() for f in fields(Settings)}
    warnings: list[CheckMessage] = []
    for name in sorted(dir(settings)):
        if name.startswith(PREFIX) and name not in known:
            hint = _FOREIGN_SETTINGS.get(
                name, "Check the spelling against docs/reference/settings.md."
            )
            warnings.append(
                Warning(
                    f"{name} is not a trio_djws setting and has no effect.",
                    hint=f"{hint} Known settings: {', '.join(sorted(known))}.",
                    id="trio_djws.W040",
                )
            )
    return warnings


def _is_origin(value: str) -> bool:
    # What a browser sends in Origin (RFC 6454 §6.1): scheme://host[:port], nothing more.
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return False
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and parts.path in {"", "/"}
        and not (parts.query or parts.fragment or parts.username)
    )


@register("trio_djws")
def check_origins(app_configs: Sequence[AppConfig] | None, **kwargs: object) -> list[CheckMessage]:
    """trio_djws.E041: the origin settings reject every browser's handshake;
    trio_djws.W041: a ``WEBSOCKET_ALLOWED_ORIGINS`` entry can never match a browser's
    ``Origin`` header (browsers send ``scheme://host[:port]``)."""
    origins = _setting("WEBSOCKET_ALLOWED_ORIGINS", None)
    if origins is None:
        if not allowed_hosts():
            return [
                Error(
                    "ALLOWED_HOSTS is empty and DEBUG is off, so every browser's WebSocket "
                    "handshake is refused with 403 (its Origin is checked against ALLOWED_HOSTS).",
                    hint="Add your domain to ALLOWED_HOSTS, or list full origins in "
                    "WEBSOCKET_ALLOWED_ORIGINS.",
                    id="trio_djws.E041",
                )
            ]
        return []
    if not isinstance(origins, list | tuple):
        return []  # a wrong type is E001's
    bad = [o for o in origins if not (o == "*" or (isinstance(o, str) and _is_origin(o)))]
    if len(bad) == len(origins):
        return [
            Error(
                "WEBSOCKET_ALLOWED_ORIGINS "
                + ("is empty" if not origins else f"has no usable origin ({bad!r})")
                + ", so every browser's WebSocket handshake is refused with 403.",
                hint="List full origins such as 'https://example.com' (scheme and host, port "
                "if not the default), '*' for any, or remove the setting to use ALLOWED_HOSTS.",
                id="trio_djws.E041",
            )
        ]
    return [
        Warning(
            f"WEBSOCKET_ALLOWED_ORIGINS entry {origin!r} never matches a browser's Origin header.",
            hint="Write it as a full origin, e.g. 'https://example.com' or "
            "'http://localhost:8000', without a path.",
            id="trio_djws.W041",
        )
        for origin in bad
    ]


@register("trio_djws")
def check_middleware(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.E042: a ``WEBSOCKET_MIDDLEWARE`` entry that Django has removed;
    trio_djws.E043: an entry that does not import; trio_djws.E044: ``AuthenticationMiddleware``
    without ``SessionMiddleware`` before it."""
    paths = _setting("WEBSOCKET_MIDDLEWARE", DEFAULT_MIDDLEWARE)
    if not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths):
        return []  # a wrong type is E001's
    errors: list[CheckMessage] = []
    for path in paths:
        if path in _REMOVED_MIDDLEWARE:
            errors.append(
                Error(
                    f"WEBSOCKET_MIDDLEWARE lists {path!r}, which Django has removed.",
                    hint=_REMOVED_MIDDLEWARE[path],
                    id="trio_djws.E042",
                )
            )
            continue
        try:
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"WEBSOCKET_MIDDLEWARE entry {path!r} does not import: {exc}",
                    hint="Fix the dotted path or remove the entry from WEBSOCKET_MIDDLEWARE.",
                    id="trio_djws.E043",
                )
            )
    if _AUTH_MIDDLEWARE in paths and (
        _SESSION_MIDDLEWARE not in paths
        or paths.index(_SESSION_MIDDLEWARE) > paths.index(_AUTH_MIDDLEWARE)
    ):
        errors.append(
            Error(
                "WEBSOCKET_MIDDLEWARE has AuthenticationMiddleware without SessionMiddleware "
                "before it, so websocket.user cannot be resolved.",
                hint=f"Put {_SESSION_MIDDLEWARE!r} before {_AUTH_MIDDLEWARE!r} in "
                "WEBSOCKET_MIDDLEWARE (the order Django's MIDDLEWARE needs too).",
                id="trio_djws.E044",
            )
        )
    return errors


@register("trio_djws")
def check_signals(app_configs: Sequence[AppConfig] | None, **kwargs: object) -> list[CheckMessage]:
    """trio_djws.E050: ``WEBSOCKET_TOPIC_SERIALIZER`` does not import; trio_djws.E051:
    ``WEBSOCKET_CELERY_APP`` does not import; trio_djws.W051: it is set but ``celery`` is not
    installed, so ``@signal(queue=...)`` functions run in worker threads instead."""
    errors: list[CheckMessage] = []
    serializer = getattr(settings, "WEBSOCKET_TOPIC_SERIALIZER", None)
    if isinstance(serializer, str):
        try:
            import_string(serializer)
        except ImportError as exc:
            errors.append(
                Error(
                    f"WEBSOCKET_TOPIC_SERIALIZER {serializer!r} does not import: {exc}.",
                    hint="Give the dotted path of a function (topic) -> str, or remove the "
                    "setting for app_label.model:pk topics.",
                    id="trio_djws.E050",
                )
            )
    app = getattr(settings, "WEBSOCKET_CELERY_APP", None)
    if isinstance(app, str):
        if importlib.util.find_spec("celery") is None:
            errors.append(
                Warning(
                    f"WEBSOCKET_CELERY_APP is {app!r} but celery is not installed.",
                    hint="pip install 'trio-djws[celery]'; until then @signal(queue=...) "
                    "functions run in worker threads of this process.",
                    id="trio_djws.W051",
                )
            )
        else:
            try:
                import_string(app)
            except ImportError as exc:
                errors.append(
                    Error(
                        f"WEBSOCKET_CELERY_APP {app!r} does not import: {exc}.",
                        hint="Give the dotted path of your Celery app instance, e.g. "
                        "'myproject.celery.app'.",
                        id="trio_djws.E051",
                    )
                )
    return errors


@register("trio_djws")
def check_group_history(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.E060: ``WEBSOCKET_GROUP_HISTORY`` has a pattern or policy that is wrong
    (a size that is not an int >= 1, a TTL under a second, a formatter that does not
    import)."""
    from .history import history_policies

    if validate("group_history", getattr(settings, "WEBSOCKET_GROUP_HISTORY", {})) is not None:
        return []  # a wrong type is E001's
    try:
        history_policies()
    except ConfigurationError as exc:
        return [
            Error(
                str(exc),
                hint='Map group-name patterns to {"SIZE": messages, "TTL": seconds}, e.g. '
                '{"chat.*": {"SIZE": 1000, "TTL": 3600}}; remove the setting for no history.',
                id="trio_djws.E060",
            )
        ]
    return []


@register("trio_djws")
def check_compression(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """trio_djws.W080: ``WEBSOCKET_COMPRESSION`` is on while ``WEBSOCKET_ENGINE`` is
    ``"trio_websocket"``, which negotiates no extension: the standalone server then serves
    uncompressed (``manage.py serve`` uses the ``websockets`` engine and compresses)."""
    compression = getattr(settings, "WEBSOCKET_COMPRESSION", None)
    engine = getattr(settings, "WEBSOCKET_ENGINE", "websockets")
    if compression is None or engine != "trio_websocket":
        return []
    return [
        Warning(
            f"WEBSOCKET_COMPRESSION is {compression!r} but WEBSOCKET_ENGINE is "
            f"'trio_websocket', which negotiates no extension: the standalone server "
            f"(runwebsocket) serves WebSockets uncompressed.",
            hint="Use WEBSOCKET_ENGINE = 'websockets' for permessage-deflate, or remove "
            "WEBSOCKET_COMPRESSION.",
            id="trio_djws.W080",
        )
    ]


@register("trio_djws")
def check_ticket_cache(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    """When a handler uses ``TicketMixin``: trio_djws.E091, ``WEBSOCKET_TICKET_CACHE`` is not
    a ``CACHES`` alias; trio_djws.W090, it is a per-process cache (``LocMemCache``): a ticket
    is single-use within one process only, and ``manage.py serve --workers N`` refuses it
    (trio_djws.E090)."""
    from .tickets import per_process_ticket_cache, tickets_in_use

    try:
        get_settings()
    except ConfigurationError:
        return []  # a wrong setting is E001's
    if not tickets_in_use():
        return []
    try:
        backend = per_process_ticket_cache()
    except ConfigurationError as exc:
        return [
            Error(
                str(exc) + ".",
                hint="Connection tickets are consumed in that cache; name a CACHES alias.",
                id="trio_djws.E091",
            )
        ]
    if backend is None:
        return []
    return [
        Warning(
            f"WEBSOCKET_TICKET_CACHE is {backend}, which each process has to itself: a "
            f"connection ticket is single-use only within one process.",
            hint="Fine for one process; for manage.py serve --workers N (refused: "
            "trio_djws.E090) or several servers use Redis, Memcached or the database cache.",
            id="trio_djws.W090",
        )
    ]
