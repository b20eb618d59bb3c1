"""Management commands of trio_djws (``manage.py serve``, ``runwebsocket``, ...)."""

from __future__ import annotations

__all__: list[str] = []
