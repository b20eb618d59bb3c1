"""The benchmark project under plain Hypercorn: ``hypercorn -k trio benchapp.asgi:application``
(with ``bench/app`` on ``PYTHONPATH``), the deployment ``manage.py serve`` is compared with."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchapp.settings")

from trio_djws.asgi import get_asgi_application

application = get_asgi_application()
