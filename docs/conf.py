"""Sphinx configuration for the trio-djws site (``nox -s docs`` builds it into docs/_build/html).

MyST markdown pages, the furo theme, autodoc + napoleon over the Google-style docstrings.
No intersphinx: the build fetches nothing from the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))  # docs_settings
sys.path.insert(0, str(DOCS / "_ext"))  # djws_tables
sys.path.insert(0, str(DOCS.parent))  # the checkout, for autodoc
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs_settings")
django.setup()

import trio_djws  # noqa: E402  (after django.setup())

project = "trio-djws"
author = "trio-djws contributors"
copyright = "trio-djws contributors"
release = trio_djws.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "djws_tables",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "README.md", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve (and are checked)

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# -n (nitpicky) in nox -s docs: every cross-reference must resolve. Names from libraries
# we have no inventory for (no intersphinx: nothing is fetched) are listed here.
nitpick_ignore_regex = [
    # other libraries and the standard library (no inventories: nothing is fetched)
    (
        r"py:.*",
        r"(trio|django|wsproto|hypercorn|collections|typing|types|contextlib|socket|logging"
        r"|forms|redis|coredis|celery|opentelemetry|trace|prometheus_client)\..*",
    ),
    (
        r"py:.*",
        r"(Any|Callable|Awaitable|Mapping|Sequence|Iterable|Iterator|AbstractAsyncContextManager"
        r"|AnonymousUser|AbstractBaseUser|HttpRequest|HttpResponse|HttpResponseBase|QueryDict)",
    ),
    # type variables (P, R, T, F, ~P) and prose that napoleon reads as a type ("Raises: Whatever
    # fn raises.")
    (r"py:.*", r"~?[A-Z]"),
    (r"py:.*", r".*\..*\.[A-Z]"),
    (r"py:.*", r".*\s.*"),
    # private and internal types named in public signatures; the typing aliases
    (
        r"py:.*",
        r"(trio_djws\.[\w.]*\.)?(_\w+|ServerState|Groups|SyncWebSocket|TrioDjwsApplication"
        r"|Output|Transport|Announce|WebSocketScope|HTTPScope|LifespanScope|Message|ASGIApp"
        r"|JSONValue|Refusal|FallbackResolver|GroupServer|ServerThreadRunner|Runtime|Hook"
        # group history, named bare in the brokers' signatures (documented in history)
        r"|HistoryPolicy|Position|JoinResult|HistoryRead|Pause|Hold|Resync)",
    ),
]

html_theme = "furo"
html_title = f"trio-djws {release}"
html_static_path = ["_static"]
html_css_files = ["tables.css"]
html_show_sourcelink = False
