"""The Celery task behind ``@signal(..., queue="name")`` when ``WEBSOCKET_CELERY_APP`` is set.

``trio_djws.run_signal`` is a ``shared_task``: a Celery app that autodiscovers tasks
(``app.autodiscover_tasks()``, with ``trio_djws`` in ``INSTALLED_APPS``) or lists this module
in ``include`` registers it. Start a worker for each queue name used by your signals, e.g.
``celery -A myproject worker -Q slow``. In the worker, ``trigger()`` calls the windows through
``publish()``, so ``WEBSOCKET_BROKER`` must be the ``RedisBroker`` there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import shared_task

from .signals.trigger import CELERY_TASK, run_queued

__all__ = ["run_signal"]


@shared_task(name=CELERY_TASK)  # type: ignore[untyped-decorator]  # celery ships no types
def run_signal(path: str, queue: str, window: Mapping[str, Any], kwargs: Mapping[str, Any]) -> int:
    """Run the functions of signal ``path`` on ``queue`` for the window ``window`` (a
    ``WindowInfo.to_dict()``); returns how many ran."""
    return run_queued(path, queue, window, kwargs)
