"""Django views reached over WebSocket handshakes (trio_djws.views) and plain HTTP, routed in
tests/urls.py; used by tests/test_views.py and tests/test_mixins.py."""

from __future__ import annotations

import threading

from django.http import HttpRequest, HttpResponse, JsonResponse

from trio_djws.views import accept_websocket, require_websocket


def session_value(request: HttpRequest, key: str) -> JsonResponse:
    """The value of ``key`` in the request's session (None if absent)."""
    return JsonResponse({"value": request.session.get(key)})


# dwebsocket's two README examples, verbatim but for the import.


@require_websocket
def echo_once(request):  # type: ignore[no-untyped-def]
    message = request.websocket.wait()
    request.websocket.send(message)


def modify_message(message):  # type: ignore[no-untyped-def]
    return message.lower()


@accept_websocket
def lower_case(request):  # type: ignore[no-untyped-def]
    if not request.is_websocket():
        message = request.GET["message"]
        message = modify_message(message)
        return HttpResponse(message)
    else:
        for message in request.websocket:
            message = modify_message(message)
            request.websocket.send(message)


# -- the sync request.websocket API, one view per behaviour -----------------------------------

# Set by the views when they return; tests wait on them (threading.Event: views run in
# worker threads).
VIEW_RETURNED: dict[str, threading.Event] = {}
VIEW_RESULTS: dict[str, object] = {}
COUNT_GATE = threading.Event()  # test → api view: the messages to count are queued


def _returned(name: str, result: object) -> None:
    VIEW_RESULTS[name] = result
    VIEW_RETURNED.setdefault(name, threading.Event()).set()


@require_websocket
def api(request: HttpRequest) -> None:
    """Commands, one per message: ``read`` (non-blocking read, answers repr), ``count``
    (count_messages after the client said how many it sent), ``has``, ``closed``, ``close CODE``,
    ``user``, ``echo TEXT``."""
    websocket = request.websocket  # type: ignore[attr-defined]
    websocket.send("ready")
    while True:
        message = websocket.wait()
        if message is None:
            _returned("api", "client left")
            return
        command, _, rest = message.partition(" ")
        if command == "read":
            websocket.send(repr(websocket.read()))
        elif command == "count":
            # The test sends `rest` messages after "counting", waits until the server has
            # queued them (wait_all_tasks_blocked) and then sets COUNT_GATE.
            expected = int(rest)
            websocket.send("counting")
            COUNT_GATE.wait(30)
            websocket.send(f"count={websocket.count_messages()} has={websocket.has_messages()}")
            drained = [websocket.read() for _ in range(expected)]
            websocket.send(f"drained={drained} has={websocket.has_messages()}")
        elif command == "closed":
            websocket.send(f"closed={websocket.is_closed()}")
        elif command == "close":
            websocket.close(int(rest))
            _returned("api", f"closed={websocket.is_closed()}")
            websocket.send("after close")  # dwebsocket: send on a closed socket does nothing
            return
        elif command == "user":
            websocket.send(request.user.get_username() or "anonymous")
        elif command == "echo":
            websocket.send(rest)
        elif command == "binary":
            websocket.send(rest.encode())
        elif command == "fail":
            raise RuntimeError("view failed")


@require_websocket
def wait_forever(request: HttpRequest) -> None:
    """Blocks in wait() until the client leaves; records what wait() returned."""
    websocket = request.websocket  # type: ignore[attr-defined]
    websocket.send("waiting")
    _returned("wait_forever", ("started", threading.get_ident()))
    message = websocket.wait()
    _returned("wait_forever", ("returned", message, websocket.is_closed()))


GATE = threading.Event()


@require_websocket
def hold(request: HttpRequest) -> None:
    """Holds its view thread until GATE is set (for the 503 test)."""
    request.websocket.send("holding")  # type: ignore[attr-defined]
    GATE.wait(30)


@accept_websocket
def silent(request: HttpRequest) -> HttpResponse:
    """Never touches the websocket: a handshake is accepted, then closed normally."""
    return HttpResponse("nothing")


@accept_websocket
def forbidden(request: HttpRequest) -> HttpResponse:
    """Refuses before using the websocket: the handshake gets 403."""
    return HttpResponse("no", status=403)


def plain(request: HttpRequest) -> HttpResponse:
    """An ordinary view: a handshake gets 400 unless WEBSOCKET_ACCEPT_ALL."""
    websocket = getattr(request, "websocket", None)
    if websocket is not None:
        websocket.send("plain view over a websocket")
        return HttpResponse()
    return HttpResponse("plain")


def flagged(request: HttpRequest) -> HttpResponse:
    """Accepts WebSockets through its ``accept_websocket`` attribute, without a decorator."""
    request.websocket.send(f"flagged {request.is_websocket()}")  # type: ignore[attr-defined]
    return HttpResponse()


flagged.accept_websocket = True  # type: ignore[attr-defined]  # dwebsocket's view attribute


@require_websocket
def notify(request: HttpRequest) -> None:
    """Publishes every message to the logged-in user's group, from this view thread."""
    from trio_djws import publish, user_group

    for message in request.websocket:  # type: ignore[attr-defined]
        publish(user_group(request.user), message)
        request.websocket.send("published")  # type: ignore[attr-defined]
