"""Internal: the signal registry; use ``trio_djws.signals``.

The signal registry: ``@signal`` and the permission functions for ``is_allowed_to``.

``@signal(path="myapp.first_signal")`` registers a Python function under a signal name, as
df_websockets' ``@signal`` does; several functions may share a name (each is called). The
registry is filled at import time (each installed app's ``signals`` and ``websockets`` modules
are imported by ``autodiscover()``, and by ``load()`` in processes that run no server, such as
a Celery worker) and is resettable with ``registry.clear()`` in tests.

A function receives the ``WindowInfo`` first, then the signal's keyword arguments::

    @signal(path="chat.typing", is_allowed_to=everyone)
    async def typing(window_info, room: int, nick: str = ""):
        trigger(window_info, "chat.typing", to=[Room(pk=room)], nick=nick)

A parameter annotated ``SerializedForm(MyForm)`` (or ``Annotated[MyForm,
SerializedForm(MyForm)]``) receives the form data the page sent (a list of ``{name, value}``)
as a bound ``MyForm``. String annotations (``from __future__ import annotations``) are
evaluated in the function's module globals, so import what they name at module level.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.http import QueryDict
from django.utils.module_loading import autodiscover_modules

from ..conf import get_settings

if TYPE_CHECKING:
    from django import forms

    from .window import WindowInfo

__all__: list[str] = []

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

Permission = Callable[..., bool]
"""``is_allowed_to(window_info, **kwargs) -> bool``: a sync function that must not block
(it runs on the trio thread: read ``window_info``, never the database)."""


def everyone(window_info: WindowInfo, **kwargs: Any) -> bool:
    """Allow every window, anonymous ones included."""
    return True


def is_authenticated(window_info: WindowInfo, **kwargs: Any) -> bool:
    """Allow windows of a logged-in user (the default)."""
    return window_info.is_authenticated


def is_staff(window_info: WindowInfo, **kwargs: Any) -> bool:
    """Allow windows of a staff user."""
    return window_info.is_authenticated and window_info.is_staff


def is_superuser(window_info: WindowInfo, **kwargs: Any) -> bool:
    """Allow windows of a superuser."""
    return window_info.is_authenticated and window_info.is_superuser


class SerializedForm:
    """Annotation: turn the ``[{"name": ..., "value": ...}, ...]`` a page sends (``{% js_call
    ... form="name" %}``) into the bound Django form ``form_class(data)`` (files are not sent).

    Raises (when the signal is called):
        TypeError: the value is not a list of ``{name, value}`` objects; the page gets a
            ``bad_kwargs`` error event.
    """

    def __init__(self, form_class: type[forms.BaseForm]) -> None:
        self.form_class = form_class

    def __repr__(self) -> str:
        return f"SerializedForm({self.form_class.__qualname__})"

    def __call__(self, value: object) -> forms.BaseForm:
        data = QueryDict(mutable=True)
        if not isinstance(value, list):
            raise TypeError(f"expected a list of {{name, value}} objects, got {value!r}")
        for item in value:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str | int | float | bool)
            ):
                raise TypeError(f"expected a {{name, value}} object, got {item!r}")
            data.appendlist(item["name"], str(item["value"]))
        return self.form_class(data)


def _form_of(annotation: object) -> SerializedForm | None:
    if isinstance(annotation, SerializedForm):
        return annotation
    for meta in getattr(annotation, "__metadata__", ()):  # typing.Annotated
        if isinstance(meta, SerializedForm):
            return meta
    return None


@dataclass(frozen=True)
class SignalFunction:
    """One registered function."""

    path: str
    """The signal name."""
    function: Callable[..., Any]
    """The function: called as ``function(window_info, **kwargs)``."""
    is_allowed_to: Permission
    """Checked before a call from a page (never for ``trigger()`` from server code)."""
    queue: str | None
    """None: run at once (async: on the connection's task; sync: in a worker thread). Else the
    background queue: a Celery task (``WEBSOCKET_CELERY_APP``) or a worker thread under the
    queue's limiter (``WEBSOCKET_SIGNAL_QUEUE_THREADS[queue]``)."""
    is_async: bool
    """Whether ``function`` is an ``async def``."""
    signature: inspect.Signature
    """``function``'s signature, to check the keyword arguments before calling."""
    forms: Mapping[str, SerializedForm]
    """Parameters annotated with ``SerializedForm``."""

    def bind(self, window_info: WindowInfo, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``kwargs`` against the signature and convert ``SerializedForm`` parameters.

        Returns:
            The keyword arguments to call with.

        Raises:
            TypeError: an unknown or missing keyword argument, or bad form data; the message
                says which.
        """
        self.signature.bind(window_info, **kwargs)
        return {
            name: self.forms[name](value) if name in self.forms else value
            for name, value in kwargs.items()
        }


def _signature(function: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, SerializedForm]]:
    try:
        signature = inspect.signature(function, eval_str=True)
    except NameError:  # annotations naming what the module imports only for type checking
        signature = inspect.signature(function)
    forms: dict[str, SerializedForm] = {}
    for name, parameter in signature.parameters.items():
        form = _form_of(parameter.annotation)
        if form is not None:
            forms[name] = form
    return signature, forms


class _Registry:
    def __init__(self) -> None:
        self._functions: dict[str, list[SignalFunction]] = {}
        self._lock = threading.Lock()

    def add(self, entry: SignalFunction) -> None:
        with self._lock:
            entries = self._functions.setdefault(entry.path, [])
            if all(existing.function is not entry.function for existing in entries):
                entries.append(entry)

    def get(self, path: str) -> list[SignalFunction]:
        """The functions of signal ``path`` (empty: unknown)."""
        return list(self._functions.get(path, ()))

    def paths(self) -> list[str]:
        """Every registered signal name."""
        return sorted(self._functions)

    def clear(self) -> None:
        """Forget every signal (for tests)."""
        with self._lock:
            self._functions.clear()


registry = _Registry()


def signal(
    fn: F | None = None,
    *,
    path: str | None = None,
    is_allowed_to: Permission = is_authenticated,
    queue: str | None = None,
) -> Any:
    """Decorator: register a function for signal ``path`` (default: ``module.function``).

    Args:
        path: the signal name the page calls (``TrioDJWS.call(path, kwargs)``) and
            ``trigger()`` addresses.
        is_allowed_to: ``is_allowed_to(window_info, **kwargs) -> bool``, checked before each
            call from a page; a denial is logged and the page gets a ``forbidden`` error
            event. Default ``is_authenticated`` (anonymous windows are denied).
        queue: run in the background on this queue: a Celery task when ``celery`` is
            installed and ``WEBSOCKET_CELERY_APP`` is set, else a worker thread under the
            queue's own limiter (``WEBSOCKET_SIGNAL_QUEUE_THREADS``, 4 threads by default).
            Queued functions must be plain ``def`` with JSON-serialisable arguments.

    Raises:
        TypeError: ``queue`` is set on an ``async def`` function.
    """

    def register(function: F) -> F:
        is_async = inspect.iscoroutinefunction(function)
        if queue is not None and is_async:
            raise TypeError(
                f"@signal(queue={queue!r}) needs a plain def function (it may run in a Celery "
                f"worker), got async def {function.__qualname__}"
            )
        name = path or f"{function.__module__}.{function.__name__}"
        signature, forms = _signature(function)
        registry.add(
            SignalFunction(name, function, is_allowed_to, queue, is_async, signature, forms)
        )
        return function

    if fn is not None:
        return register(fn)
    return register


def autodiscover_signals(extra: Iterable[str] = ()) -> None:
    """Import every installed app's ``signals`` module (df_websockets' convention) and the
    modules in ``extra``; registration happens as a side effect of import."""
    autodiscover_modules("signals")
    for module in extra:
        importlib.import_module(module)


_loaded = threading.Event()


def load() -> None:
    """Autodiscover signals once per process (``signals``, ``websockets`` and
    ``WEBSOCKET_HANDLERS`` modules): what a Celery worker calls before running a signal."""
    if _loaded.is_set():
        return
    autodiscover_modules("websockets")
    autodiscover_signals(get_settings().handlers)
    _loaded.set()
