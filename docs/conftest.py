"""Every Python sample of the docs is a test (sybil), under the Django settings in docs_settings.py.

In a page, a fenced block marked ``python`` runs; blocks of one page share a namespace and run in
order. A block marked ``py`` is shown only (an excerpt of a file that needs a project around it);
``<!-- skip: next -->`` skips the next block. The page's handlers are registered for that page only:
the namespace registry is cleared before and after each page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs_settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from sybil import Sybil  # noqa: E402
from sybil.parsers.myst import PythonCodeBlockParser, SkipParser  # noqa: E402

from trio_djws.routing import registry  # noqa: E402

DOCS = Path(__file__).resolve().parent


def pytest_sessionstart(session: pytest.Session) -> None:
    call_command("migrate", verbosity=0, interactive=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from django.conf import settings
    from django.db import connections

    connections.close_all()
    Path(settings.DATABASES["default"]["NAME"]).unlink(missing_ok=True)


def page_setup(namespace: dict[str, Any]) -> None:
    registry.clear()


def page_teardown(namespace: dict[str, Any]) -> None:
    registry.clear()


SAMPLES = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["*.md"],
    excludes=["_build/*", "README.md"],
    setup=page_setup,
    teardown=page_teardown,
)
pytest_collect_file = SAMPLES.pytest()
