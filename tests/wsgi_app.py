"""The WSGI module the tests/test_servers_wsgi.py subprocesses serve
(``gunicorn tests.wsgi_app``)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wsgi_settings")

from trio_djws.wsgi import get_wsgi_application

application = get_wsgi_application()
