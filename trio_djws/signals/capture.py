"""Internal: capturing signals in tests; use ``trio_djws.testing.SignalQueue``.

``SignalQueue``: capture triggered signals in memory instead of delivering them (tests).

As df_websockets' ``SignalQueue``::

    with SignalQueue() as signals:
        response = client.post("/rooms/lobby/", {...})   # the view calls trigger(...)
    assert signals.javascript[0].name == "chat.refresh"
    assert signals.javascript[0].topic == "chat.room:1"

The capture is a ``ContextVar``: it sees ``trigger()``/``atrigger()`` in the same thread or
task and in the worker threads and tasks started from there (which inherit the context).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .window import WindowInfo

__all__: list[str] = []


@dataclass(frozen=True)
class CapturedSignal:
    """One captured call."""

    name: str
    """The signal name."""
    kwargs: dict[str, Any]
    """Its keyword arguments."""
    topic: str
    """``"SERVER"``, ``"WINDOW"``, ``"USER"``, ``"BROADCAST"`` or the serialized topic."""
    group: str | None
    """The group the JavaScript call would have been sent to (None for ``SERVER``)."""
    window_info: WindowInfo | None = field(compare=False)
    """The source window."""


_capture: ContextVar[SignalQueue | None] = ContextVar("trio_djws.signal_queue", default=None)


def current_capture() -> SignalQueue | None:
    """The ``SignalQueue`` active in this context, if any."""
    return _capture.get()


class SignalQueue:
    """Context manager: while active, ``trigger()`` records calls here and delivers nothing.

    Attributes:
        python: calls to ``SERVER`` (the Python functions were not run).
        javascript: JavaScript calls, one per destination topic.
    """

    def __init__(self) -> None:
        self.python: list[CapturedSignal] = []
        self.javascript: list[CapturedSignal] = []
        self._token: Token[SignalQueue | None] | None = None

    def record(
        self,
        name: str,
        kwargs: dict[str, Any],
        info: WindowInfo | None,
        server: bool,
        groups: list[tuple[str, str]],
    ) -> None:
        """Record one ``trigger()`` (called by it)."""
        if server:
            self.python.append(CapturedSignal(name, dict(kwargs), "SERVER", None, info))
        for topic, group in groups:
            self.javascript.append(CapturedSignal(name, dict(kwargs), topic, group, info))

    def calls(self, topic: str) -> list[tuple[str, dict[str, Any]]]:
        """``(name, kwargs)`` of the JavaScript calls to ``topic`` (``"WINDOW"``, ``"USER"``,
        ``"BROADCAST"`` or a serialized topic), in order."""
        return [(c.name, c.kwargs) for c in self.javascript if c.topic == topic]

    def __enter__(self) -> SignalQueue:
        if self._token is not None:
            raise RuntimeError("a SignalQueue is not reentrant")
        self._token = _capture.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _capture.reset(self._token)
        self._token = None
