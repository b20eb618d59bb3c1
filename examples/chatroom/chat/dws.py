"""dwebsocket's two README examples, unchanged but for the import (``trio_djws.views``).

Mounted at ``/dws/echo_once/`` and ``/dws/lower_case/`` in ``chatroom/urls.py``; each view runs
in a worker thread for the whole connection (``WEBSOCKET_VIEW_THREADS``).
"""

from django.http import HttpResponse

from trio_djws.views import accept_websocket, require_websocket

# dwebsocket's README, character for character:
# fmt: off

@require_websocket
def echo_once(request):
    message = request.websocket.wait()
    request.websocket.send(message)


def modify_message(message):
    return message.lower()


@accept_websocket
def lower_case(request):
    if not request.is_websocket():
        message = request.GET['message']
        message = modify_message(message)
        return HttpResponse(message)
    else:
        for message in request.websocket:
            message = modify_message(message)
            request.websocket.send(message)
# fmt: on
