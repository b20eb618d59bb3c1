"""Template tags: ``{% load trio_djws %}`` (``trio_djws.templatetags.trio_djws``)."""

from __future__ import annotations

__all__: list[str] = []
