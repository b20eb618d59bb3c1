"""``manage.py websocket_routes``."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings


def routes() -> str:
    out = io.StringIO()
    call_command("websocket_routes", stdout=out)
    return out.getvalue()


def test_websocket_routes_lists_namespaces_handlers_and_mixins() -> None:
    lines = routes().splitlines()
    assert lines[0].startswith("Namespaces (")
    assert "  /echo/  tests.handlers.Echo  mixins: -" in lines
    assert (
        "  /auth/login-required/  tests.auth_handlers.Private  mixins: "
        "trio_djws.mixins.DjangoMiddlewareMixin, trio_djws.mixins.LoginRequiredMixin"
    ) in lines
    assert (
        "  /mixins/  tests.handlers.Mixed  mixins: tests.handlers.Guard, tests.handlers.Upper"
        in (lines)
    )


def test_websocket_routes_lists_views_that_accept_websockets() -> None:
    output = routes()
    assert "  /dws/echo_once/  tests.ws_views.echo_once  require_websocket" in output
    assert "  /dws/lower_case/  tests.ws_views.lower_case  accept" in output
    assert "  /dws/flagged/  tests.ws_views.flagged  accept" in output
    assert "tests.ws_views.plain" not in output
    with override_settings(WEBSOCKET_ACCEPT_ALL=True):
        assert "  /dws/plain/  tests.ws_views.plain  accept" in routes()


@override_settings(WEBSOCKET_HANDLERS=["tests.broken_handlers"])
def test_websocket_routes_reports_a_broken_handler_module() -> None:
    with pytest.raises(CommandError, match="broken on purpose"):
        routes()
