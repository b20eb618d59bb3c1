"""No HTTP views: the benchmark speaks WebSocket only."""

from __future__ import annotations

urlpatterns: list[object] = []
