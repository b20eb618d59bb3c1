"""Connection tickets: signed, short-lived, single-use credentials for a WebSocket handshake.

Browsers cannot set ``Authorization`` on a WebSocket, and non-browser clients may have no
session cookie. A ticket carries the user instead: the server signs one for a logged-in user
(``issue_ticket(user)``, or the ``ticket_view`` view), the client passes it on the handshake,
and ``TicketMixin`` verifies it, consumes it and sets ``websocket.user``:

- ``wss://host/ws/path/?ticket=<ticket>``, or
- in ``Sec-WebSocket-Protocol``: offer ``TICKET_SUBPROTOCOL`` and ``TICKET_SUBPROTOCOL + "." +
  ticket``; the server accepts with ``TICKET_SUBPROTOCOL``, never echoing the ticket. Prefer
  this form: a query string lands in proxies' access logs.

A ticket is ``django.core.signing.TimestampSigner(salt=TICKET_SALT, sep=".")`` over the user's
primary key and a random nonce (only characters valid in an HTTP token, so it fits a
subprotocol entry). It expires after ``WEBSOCKET_TICKET_MAX_AGE`` seconds and is consumed once
through ``cache.add`` in the ``WEBSOCKET_TICKET_CACHE`` cache, which every server process must
share (Redis, Memcached, the database cache): with a per-process cache (``LocMemCache``) a
ticket could be used once per process, which ``manage.py serve --workers N`` refuses
(``trio_djws.E090``). Expired, reused, forged, or for a user that is gone or inactive: HTTP 403.
No ticket is ever written to a log line.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse

from .conf import get_settings
from .exceptions import ConfigurationError, Reject
from .handler import BaseMixin
from .routing import autodiscover, iter_namespaces
from .threads import database_sync_to_thread

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

    from .websocket import WebSocket

__all__ = [
    "PER_PROCESS_CACHES",
    "TICKET_SALT",
    "TICKET_SUBPROTOCOL",
    "TicketMixin",
    "check_ticket_cache",
    "issue_ticket",
    "per_process_ticket_cache",
    "ticket_view",
    "tickets_in_use",
    "verify_ticket",
]

logger = logging.getLogger(__name__)

TICKET_SALT: Final = "trio_djws.tickets"  # signing salt: a ticket is no other signed value
TICKET_SUBPROTOCOL: Final = "trio-djws.ticket"  # the subprotocol the server accepts with
PER_PROCESS_CACHES: Final = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
_PREFIX: Final = TICKET_SUBPROTOCOL + "."


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=TICKET_SALT, sep=".")


def issue_ticket(user: AbstractBaseUser) -> str:
    """Sign a single-use ticket for ``user`` valid ``WEBSOCKET_TICKET_MAX_AGE`` seconds.

    Sync and quick (no database or cache access): call it in a view, or from trio code.

    Raises:
        ValueError: ``user`` is not a saved, authenticated user.
    """
    if not getattr(user, "is_authenticated", False) or user.pk is None:
        raise ValueError(f"issue_ticket() expects a saved, authenticated user, got {user!r}")
    return _signer().sign_object({"u": str(user.pk), "n": secrets.token_urlsafe(16)})


def _ticket_cache_key(nonce: str) -> str:
    return f"trio_djws:ticket:{nonce}"


def _consume(ticket: str) -> AbstractBaseUser:
    # In a worker thread: verify, consume once in the shared cache, load the user.
    max_age = get_settings().ticket_max_age
    try:
        data: Any = _signer().unsign_object(ticket, max_age=max_age)
    except signing.SignatureExpired:
        raise Reject(403, "ticket expired") from None
    except signing.BadSignature:
        raise Reject(403, "ticket forged or damaged") from None
    if not isinstance(data, dict) or not isinstance(data.get("n"), str) or "u" not in data:
        raise Reject(403, "ticket forged or damaged")
    cache = caches[get_settings().ticket_cache]
    # add() is atomic on every shared backend: only the first use stores the key. The key
    # outlives the ticket's validity, so a reuse can never find it gone.
    if not cache.add(_ticket_cache_key(data["n"]), True, timeout=int(max_age) + 1):
        raise Reject(403, "ticket already used")
    model = get_user_model()
    try:
        # Django's documented model API (_default_manager, _meta), as its auth backends use.
        manager, pk = model._default_manager, model._meta.pk  # noqa: SLF001
        user = manager.get(pk=pk.to_python(data["u"]))
    except (model.DoesNotExist, ValueError):
        raise Reject(403, "ticket for a user that no longer exists") from None
    if not getattr(user, "is_active", True):
        raise Reject(403, "ticket for an inactive user")
    return user


async def verify_ticket(ticket: str) -> AbstractBaseUser:
    """Verify and consume ``ticket``; returns its user. The cache and the user query run in
    a worker thread (``WEBSOCKET_DB_THREADS``). A checkpoint.

    Raises:
        Reject: 403, the ticket is expired, forged, already used, or its user is gone or
            inactive (the message names which, never the ticket).
    """
    consume = database_sync_to_thread(_consume)
    return await consume(ticket)


def _offered_ticket(websocket: WebSocket) -> tuple[str | None, bool]:
    # (ticket, whether it came as a subprotocol entry)
    for entry in websocket.scope.get("subprotocols", ()):
        if entry.startswith(_PREFIX):
            return entry[len(_PREFIX) :], True
    ticket = websocket.query.get("ticket")
    return (ticket or None), False


class TicketMixin(BaseMixin):
    """Authenticate the handshake with a connection ticket (module docstring).

    Without a ticket, or with a bad one, the handshake is refused with HTTP 403 (one log line
    naming why, never the ticket). With a good one, ``websocket.user`` is its user and,
    in the subprotocol form, the connection is accepted with ``TICKET_SUBPROTOCOL``. List it
    before ``BaseWSClass`` (and after ``DjangoMiddlewareMixin`` if both are used, so that the
    ticket's user wins).
    """

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        ticket, as_subprotocol = _offered_ticket(websocket)
        if ticket is None:
            raise Reject(403, "no ticket")
        websocket.user = await verify_ticket(ticket)
        if as_subprotocol and TICKET_SUBPROTOCOL in websocket.scope.get("subprotocols", ()):
            websocket.select_subprotocol(TICKET_SUBPROTOCOL)


def ticket_view(request: HttpRequest) -> HttpResponse:
    """A Django view: ``POST`` answers ``{"ticket": ..., "expires_in": seconds}`` for the
    logged-in user (403 for anyone else, 405 for another method), never cached. Route it in
    your URLconf, e.g. ``path("ws-ticket/", ticket_view)``; it keeps Django's CSRF protection.
    """
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not logged in"}, status=403)
    response = JsonResponse(
        {"ticket": issue_ticket(request.user), "expires_in": get_settings().ticket_max_age}
    )
    response["Cache-Control"] = "no-store"
    return response


def check_ticket_cache(workers: int) -> None:
    """For ``manage.py serve --workers N``: refuse a per-process ticket cache when a
    registered handler uses ``TicketMixin`` and ``workers`` > 1 (trio_djws.E090).

    Raises:
        ConfigurationError: as above; the message names the cache and the fix.
    """
    if workers <= 1 or not tickets_in_use():
        return
    backend = per_process_ticket_cache()
    if backend is not None:
        raise ConfigurationError(
            f"trio_djws.E090: --workers {workers} with connection tickets needs a cache every "
            f"worker shares, but WEBSOCKET_TICKET_CACHE {get_settings().ticket_cache!r} is "
            f"{backend}: a ticket could be used once per worker. Use Redis, Memcached or the "
            f"database cache, or --workers 1."
        )


def tickets_in_use() -> bool:
    """Whether a registered handler uses ``TicketMixin`` (handler modules are imported first,
    as at startup)."""
    try:
        autodiscover()
    except Exception:  # noqa: BLE001  (a broken handler module is trio_djws.E010's report)
        logger.debug("handler modules failed to import; see manage.py check (E010)")
    return any(issubclass(handler, TicketMixin) for _, handler in iter_namespaces())


def per_process_ticket_cache() -> str | None:
    """The backend of ``WEBSOCKET_TICKET_CACHE`` if it is per-process (``LocMemCache``,
    ``DummyCache``), else None.

    Raises:
        ConfigurationError: ``WEBSOCKET_TICKET_CACHE`` is not a ``CACHES`` alias.
    """
    alias = get_settings().ticket_cache
    config = getattr(settings, "CACHES", {}).get(alias)
    if config is None:
        raise ConfigurationError(
            f"WEBSOCKET_TICKET_CACHE must name a CACHES alias, got {alias!r}; "
            f"CACHES has {sorted(getattr(settings, 'CACHES', {}))}"
        )
    backend = str(config.get("BACKEND", ""))
    return backend if backend in PER_PROCESS_CACHES else None
