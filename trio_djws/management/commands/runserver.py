"""``manage.py runserver`` with WebSockets: Django's development server command, serving through
``manage.py serve``'s launcher (``trio_djws.servers.serve.run``) on one port.

What Django's ``runserver`` (and ``django.contrib.staticfiles``' one) does is kept: its options
(``addrport``, ``--noreload``, ``--nostatic``, ``--insecure``, ``--ipv6``, ``--skip-checks``;
``--nothreading`` has no effect: HTTP always runs in worker threads, WebSockets on trio),
the system checks and the unapplied-migrations warning, its banner, one ``django.server``
log line per request, static files at ``STATIC_URL`` when ``DEBUG`` is on (or with
``--insecure``), and the autoreloader (``django.utils.autoreload``): a changed Python file of the
project restarts the server process with the new code.

The autoreloader runs the server in a thread of its child process, where trio cannot handle
signals: that server installs none (the reloader owns Ctrl-C, and a reload ends the process).
With ``--noreload`` the server runs in the main thread, and SIGINT/SIGTERM close WebSockets
with 1001 before it exits, as ``manage.py serve`` does.

This command replaces Django's only if ``"trio_djws"`` comes before
``"django.contrib.staticfiles"`` in ``INSTALLED_APPS`` (the first app providing a command
wins); the system check ``trio_djws.W072`` says so otherwise.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.contrib.staticfiles.management.commands.runserver import (
    Command as StaticfilesRunserverCommand,
)
from django.core.management.base import BaseCommand
from django.db import connections
from django.utils import autoreload

from trio_djws.servers.serve import run
from trio_djws.servers.sockets import open_sockets
from trio_djws.wsgi_bridge import HTTPOptions, configure_http

__all__ = ["Command"]

_ERRORS = {  # Django's runserver's messages
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


class Command(StaticfilesRunserverCommand):
    help = (
        "Starts a development server for HTTP and WebSockets on one port (trio-djws, on the "
        "launcher of 'manage.py serve'), with Django's autoreloader and static files."
    )

    def inner_run(self, *args: Any, **options: Any) -> None:
        # Django's inner_run, with manage.py serve's launcher instead of its WSGI server.
        autoreload.raise_last_exception()
        shutdown_message = options.get("shutdown_message", "")
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            # Every check, as Django's inner_run (its own get_check_kwargs() skips them all at
            # startup). Typed narrowly by django-stubs: the keyword arguments of self.check().
            kwargs = BaseCommand.get_check_kwargs(self, options)
            check_kwargs = cast("dict[str, Any]", dict(kwargs))
            check_kwargs["display_num_errors"] = True
            self.check(**check_kwargs)
        self.check_migrations()
        for conn in connections.all(initialized_only=True):
            conn.close()

        static = options["use_static_handler"] and (
            bool(settings.DEBUG) or options["insecure_serving"]
        )
        configure_http(HTTPOptions(static_files=static, log_requests=True))
        # attr-defined: set by Django's handle() from addrport; not in django-stubs.
        addr: str = self.addr  # type: ignore[attr-defined]
        host = "0.0.0.0" if addr == "0" else addr  # Django's "0" means every address
        try:
            sockets = open_sockets([(host, int(self.port))])  # type: ignore[attr-defined]
        except OSError as exc:
            self.stderr.write(f"Error: {_ERRORS.get(exc.errno or 0, exc)}")
            # As Django's runserver: sys.exit does not end the process from a thread.
            os._exit(1)
        port = sockets[0].getsockname()[1]
        in_main_thread = threading.current_thread() is threading.main_thread()
        try:
            status = run(
                sockets,
                stdout=self.stdout,
                announce=lambda urls: self._announce(port),
                handle_signals=in_main_thread,
            )
        except KeyboardInterrupt:
            status = 0
        if shutdown_message:
            self.stdout.write(shutdown_message)
        sys.exit(status)

    def _announce(self, port: int) -> None:
        self.on_bind(port)  # the banner, with the port bound (port 0 picks one)
        self.stdout.flush()

    def on_bind(self, server_port: int) -> None:
        # Django's banner, naming this server (Django 6.1's says "WSGI development server").
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        addr: str = self.addr  # type: ignore[attr-defined]  # as in inner_run
        if getattr(self, "_raw_ipv6", False):
            addr = f"[{addr}]"
        elif addr == "0":
            addr = "0.0.0.0"
        now = datetime.now().strftime("%B %d, %Y - %X")
        self.stdout.write(
            f"{now}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting development server at {self.protocol}://{addr}:{server_port}/ "
            "(HTTP and WebSockets: trio-djws)\n"
            f"Quit the server with {quit_command}."
        )
        if os.environ.get("DJANGO_RUNSERVER_HIDE_WARNING") != "true":
            self.stdout.write(
                self.style.WARNING(
                    "WARNING: This is a development server. Do not use it in a production "
                    "setting: use 'manage.py serve' (see the deployment guide)."
                )
            )
