"""Internal: the ``WEBSOCKET_*`` settings (documented in the settings reference).

Settings: every ``WEBSOCKET_*`` Django setting with its default and unit.

``get_settings()`` reads them once and caches the result; the cache is cleared on Django's
``setting_changed`` signal (as ``channels/layers.py`` does), so ``override_settings`` works.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .exceptions import ConfigurationError

__all__: list[str] = []

PREFIX: Final = "WEBSOCKET_"
SECONDS: Final = 1.0
KIB: Final = 1024
MIB: Final = 1024 * KIB
ENGINES: Final = ("websockets", "trio_websocket")  # WEBSOCKET_ENGINE values (trio_djws.engines)
COMPRESSIONS: Final = (None, "deflate")  # WEBSOCKET_COMPRESSION values: off, or RFC 7692


def _default_broker() -> Mapping[str, object]:
    return {"BACKEND": "trio_djws.brokers.InMemoryBroker"}


DEFAULT_MIDDLEWARE: Final = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)


@dataclass(frozen=True)
class Settings:
    """The library's settings; field ``x`` is the Django setting ``WEBSOCKET_X``."""

    base_uri: str = ""  # prefix of every namespace path
    handlers: tuple[str, ...] = ()  # modules imported at startup to register handlers
    allowed_origins: tuple[str, ...] | None = None  # None: derived from ALLOWED_HOSTS
    require_origin: bool = False  # refuse handshakes that carry no Origin header
    max_message_size: int = 1 * MIB  # bytes; also Hypercorn's websocket_max_message_size
    send_queue_size: int = 64  # messages per connection
    send_timeout: float = 10 * SECONDS  # a send queue full this long: 1008 "slow consumer"
    close_timeout: float = 5 * SECONDS  # on_close, then flush + closing handshake
    shutdown_timeout: float = 10 * SECONDS  # drain at server shutdown, then 1001 for all
    http_threads: int = 40  # worker threads for Django's WSGI handler (HTTP requests)
    db_threads: int = 10  # worker threads for ORM and other sync calls from handlers
    ping_timeout: float | None = 20 * SECONDS  # no frame since a ping this old: closed
    ping_interval: float | None = 20 * SECONDS  # Hypercorn's websocket_ping_interval
    tcp_user_timeout: float | None = 30 * SECONDS  # TCP_USER_TIMEOUT on listening sockets
    broker: Mapping[str, object] = field(default_factory=_default_broker)
    middleware: tuple[str, ...] = DEFAULT_MIDDLEWARE  # Django middleware for DjangoMiddlewareMixin
    accept_all: bool = False  # every ROOT_URLCONF view accepts WebSockets (dwebsocket's setting)
    view_threads: int = 20  # threads for dwebsocket-style views: one per open view connection
    presence_ttl: float = 30 * SECONDS  # a dead process's presence expires after this
    engine: str = "websockets"  # standalone server's protocol engine: see ENGINES
    # "deflate": permessage-deflate (RFC 7692) on the websockets engine; None (default): off,
    # as measured it costs 2.7x the memory per idle connection and 10x the CPU per broadcast
    compression: str | None = None
    host: str = "127.0.0.1"  # standalone server (runwebsocket, trio_djws.wsgi): address
    port: int = 8001  # standalone server: TCP port (0: any free port)
    signals_path: str | None = "/ws/signals/"  # SignalHandler's namespace; None: not served
    topic_serializer: str = "trio_djws.signals.topics.default_serializer"  # dotted path
    topics_max_age: float = 24 * 3600 * SECONDS  # a topics token older than this is refused
    celery_app: str | None = None  # dotted path to a Celery app for @signal(queue=...)
    signal_queue_threads: Mapping[str, int] = field(default_factory=dict)  # queue → threads
    rate_limit: float | None = None  # messages per second per connection; None: no limit
    rate_burst: int = 10  # messages a connection may send at once above WEBSOCKET_RATE_LIMIT
    max_connections: int | None = None  # WebSockets per process, 503 above (None: no limit)
    max_connections_per_ip: int | None = None  # WebSockets per client IP, 503 above
    trusted_proxies: tuple[str, ...] = ()  # proxy IPs/networks whose X-Forwarded-For counts
    fd_headroom: int = 100  # file descriptors kept free below RLIMIT_NOFILE (0: unchecked)
    http_body_timeout: float | None = 60 * SECONDS  # whole HTTP request body, else 408
    view_idle_timeout: float | None = 120 * SECONDS  # a view connection silent this long: 1001
    max_lifetime: float | None = None  # seconds; then closed with 1001 (None: no limit)
    ticket_max_age: float = 30 * SECONDS  # a connection ticket is valid this long, once
    ticket_cache: str = "default"  # CACHES alias that consumes tickets; shared by all workers
    # group-name pattern → {"SIZE": messages, "TTL": seconds}: see trio_djws.history
    group_history: Mapping[str, object] = field(default_factory=dict)
    history_publish_timeout: float = 5 * SECONDS  # a history group's broker unreachable this long
    metrics: bool = False  # Prometheus metrics (trio-djws[metrics]): see trio_djws.metrics
    tracing: bool = False  # OpenTelemetry spans per hook (trio-djws[tracing]): trio_djws.tracing
    dashboard_path: str | None = None  # the admin's live connections page socket; None: off


_CHECKS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "base_uri": (str, "a str"),
    "handlers": ((list, tuple), "a list of module paths"),
    "allowed_origins": ((list, tuple, type(None)), "a list of origins or None"),
    "require_origin": (bool, "a bool"),
    "max_message_size": (int, "an int >= 1 (bytes)"),
    "send_queue_size": (int, "an int >= 1 (messages)"),
    "send_timeout": ((int, float), "a number > 0 (seconds)"),
    "close_timeout": ((int, float), "a number > 0 (seconds)"),
    "shutdown_timeout": ((int, float), "a number > 0 (seconds)"),
    "http_threads": (int, "an int >= 1 (threads)"),
    "db_threads": (int, "an int >= 1 (threads)"),
    "ping_timeout": ((int, float, type(None)), "a number > 0 (seconds) or None"),
    "ping_interval": ((int, float, type(None)), "a number > 0 (seconds) or None"),
    "tcp_user_timeout": ((int, float, type(None)), "a number > 0 (seconds) or None"),
    "broker": (Mapping, "a dict with a 'BACKEND' dotted path and an optional 'CONFIG' dict"),
    "presence_ttl": ((int, float), "a number > 0 (seconds)"),
    "middleware": ((list, tuple), "a list of middleware dotted paths"),
    "accept_all": (bool, "a bool"),
    "view_threads": (int, "an int >= 1 (threads)"),
    "engine": (str, "one of " + ", ".join(repr(name) for name in ENGINES)),
    "compression": ((str, type(None)), "None or 'deflate'"),
    "host": (str, "a host name or IP address (str)"),
    "port": (int, "an int in 0-65535 (TCP port)"),
    "signals_path": ((str, type(None)), "a path starting and ending with '/', or None"),
    "topic_serializer": (str, "a dotted path to a function"),
    "topics_max_age": ((int, float), "a number > 0 (seconds)"),
    "celery_app": ((str, type(None)), "a dotted path to a Celery app, or None"),
    "signal_queue_threads": (Mapping, "a dict of queue name → int >= 1 (threads)"),
    "rate_limit": ((int, float, type(None)), "a number > 0 (messages per second) or None"),
    "rate_burst": (int, "an int >= 1 (messages)"),
    "max_connections": ((int, type(None)), "an int >= 1 (WebSockets) or None"),
    "max_connections_per_ip": ((int, type(None)), "an int >= 1 (WebSockets) or None"),
    "trusted_proxies": ((list, tuple), "a list of IP addresses or networks"),
    "fd_headroom": (int, "an int >= 0 (file descriptors)"),
    "http_body_timeout": ((int, float, type(None)), "a number > 0 (seconds) or None"),
    "view_idle_timeout": ((int, float, type(None)), "a number > 0 (seconds) or None"),
    "max_lifetime": ((int, float, type(None)), "a number > 0 (seconds) or None"),
    "ticket_max_age": ((int, float), "a number > 0 (seconds)"),
    "ticket_cache": (str, "a CACHES alias (str)"),
    "group_history": (
        Mapping,
        "a dict of group-name pattern → {'SIZE': int >= 1 (messages), 'TTL': seconds}",
    ),
    "history_publish_timeout": ((int, float), "a number > 0 (seconds)"),
    "metrics": (bool, "a bool"),
    "tracing": (bool, "a bool"),
    "dashboard_path": ((str, type(None)), "a path starting and ending with '/', or None"),
}


def _is_network(value: object) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return False
    return isinstance(value, str)


def validate(name: str, value: object) -> str | None:
    """Return why ``value`` is not valid for setting field ``name``, or None if it is."""
    expected_type, expected = _CHECKS[name]
    bad = not isinstance(value, expected_type) or (
        isinstance(value, bool) and expected_type in (int, (int, float))
    )
    if name == "port":
        bad = bad or not (isinstance(value, int) and 0 <= value <= 65535)
    elif not bad and isinstance(value, int | float) and not isinstance(value, bool):
        bad = value < 1 if isinstance(value, int) and expected_type is int else value <= 0
    if name in ("max_connections", "max_connections_per_ip"):
        bad = bad or isinstance(value, bool)
    if name == "fd_headroom":
        bad = type(value) is not int or value < 0
    if not bad and name == "trusted_proxies" and isinstance(value, list | tuple):
        bad = not all(_is_network(item) for item in value)
    if not bad and name == "middleware":
        bad = not isinstance(value, list | tuple) or not all(isinstance(i, str) for i in value)
    if not bad and name == "engine":
        bad = value not in ENGINES
    if not bad and name == "compression":
        bad = value not in COMPRESSIONS
    if not bad and name == "broker":
        bad = (
            not isinstance(value, Mapping)
            or not isinstance(value.get("BACKEND"), str)
            or not isinstance(value.get("CONFIG", {}), Mapping)
        )
    if not bad and name in ("signals_path", "dashboard_path") and isinstance(value, str):
        bad = not (value.startswith("/") and value.endswith("/"))
    if not bad and name == "signal_queue_threads" and isinstance(value, Mapping):
        bad = not all(isinstance(k, str) and type(v) is int and v >= 1 for k, v in value.items())
    if bad:
        return f"{PREFIX}{name.upper()} must be {expected}, got {value!r}"
    return None


@functools.cache
def get_settings() -> Settings:
    """Read, validate and cache the ``WEBSOCKET_*`` settings.

    Returns:
        The frozen Settings; cached until a ``setting_changed`` signal.

    Raises:
        ConfigurationError: a setting has the wrong type or range; the message names it.
    """
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = PREFIX + f.name.upper()
        if not hasattr(django_settings, name):
            continue
        value = getattr(django_settings, name)
        problem = validate(f.name, value)
        if problem is not None:
            raise ConfigurationError(problem)
        if isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return Settings(**values)


def broker_backend() -> tuple[Any, Mapping[str, object]]:
    """The ``WEBSOCKET_BROKER`` backend class and its ``CONFIG`` mapping (empty if absent).

    Raises:
        ConfigurationError: ``BACKEND`` does not import, or ``CONFIG`` is not a dict.
    """
    options = get_settings().broker
    path = str(options["BACKEND"])
    try:
        backend = import_string(path)
    except ImportError as exc:
        raise ConfigurationError(
            f"WEBSOCKET_BROKER['BACKEND'] must be an importable dotted path, got {path!r}: {exc}"
        ) from exc
    config = options.get("CONFIG", {})
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"WEBSOCKET_BROKER['CONFIG'] must be a dict, got {config!r}")
    return backend, config


def require_app() -> None:
    """Check that ``"trio_djws"`` is in ``INSTALLED_APPS``: its ``AppConfig.ready()``
    registers the system checks, the ORM guard and the routing hooks of the features
    (``ROOT_URLCONF`` views, the signals endpoint). Needs Django's app registry ready.

    Raises:
        ConfigurationError: (an ``ImproperlyConfigured``) it is missing; the message names
            the fix.
    """
    from django.apps import apps  # the app registry: only once Django is set up

    if not apps.is_installed("trio_djws"):
        raise ConfigurationError(
            'trio_djws needs "trio_djws" in INSTALLED_APPS (its AppConfig.ready() registers '
            "the system checks and the routing of views and signals); add it to "
            "INSTALLED_APPS in your settings"
        )


def _clear_cache(*, setting: str, **kwargs: object) -> None:
    if setting.startswith(PREFIX) or setting in {"ALLOWED_HOSTS", "DEBUG"}:
        get_settings.cache_clear()


setting_changed.connect(_clear_cache, dispatch_uid="trio_djws.conf.clear_cache")
