"""ASGI entry point: ``python manage.py serve`` or
``hypercorn --worker-class trio chatroom.asgi:application``.

``trio_djws.asgi.get_asgi_application()`` serves HTTP (Django's WSGI handler in worker
threads) and the ``@Namespace`` WebSocket handlers, such as ``chat.websockets``.
"""

from __future__ import annotations

import os

from trio_djws.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatroom.settings")

application = get_asgi_application()
