"""Django settings for the docs: Sphinx's autodoc imports and the samples run by sybil.

The database is a throwaway SQLite file (worker threads share it; ``:memory:`` would give each
thread its own empty database).
"""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "docs-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "docs_urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "trio_djws",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DOCS_SQLITE_PATH",
            os.path.join(tempfile.gettempdir(), f"trio-djws-docs-{os.getpid()}.sqlite3"),
        ),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
