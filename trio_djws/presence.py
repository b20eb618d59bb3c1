"""Presence: who is connected to a group, across every process the broker reaches.

A connection counts as present in a group once it ``join``s through this module, under an
identity: the username when the connection is logged in (``websocket.user``), else the name
the handler passes (a nickname), else the connection id. ``members(group)`` returns each
distinct identity with its number of connections; a user with two tabs open counts once, with
2 connections.

Backends follow ``WEBSOCKET_BROKER``: the in-memory broker keeps presence in the process; the
``RedisBroker`` writes each process's counts to Redis with an expiry of
``WEBSOCKET_PRESENCE_TTL`` seconds, refreshed every third of it, so the members of a killed
worker vanish within about that time (a worker that stops normally removes them at once).

Changes are announced to the group: pass ``announce`` (identity → count mapping to a frame)
and every present member that passed it gets the rendered frame whenever the member list
changes, rendered once per change and per renderer, queued like a group message (a full send
queue closes that member with 1008).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .groups import Announce, current_group_server

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = ["identity", "join", "leave", "members"]


def identity(websocket: WebSocket, name: str | None = None) -> str:
    """The identity ``websocket`` is present under: the logged-in user's username, else
    ``name`` if given and not empty, else the connection id."""
    user = getattr(websocket, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.get_username())
    if name:
        return name
    return websocket.id


async def join(
    websocket: WebSocket,
    group: str,
    name: str | None = None,
    *,
    announce: Announce | None = None,
) -> str:
    """Join ``group`` (as ``websocket.join``) and be present in it until leaving it or the
    end of the connection.

    Args:
        websocket: the connection.
        group: the group name.
        name: the identity when the connection is not logged in (e.g. a nickname).
        announce: renders the group's presence (identity → connections) as the frame this
            connection is sent on each change, the first one right after this join.

    Returns:
        The identity this connection is present under.

    Raises:
        ConnectionClosed: the connection is closing.
    """
    await websocket.join(group)
    who = identity(websocket, name)
    # The connection's server is the one of this trio run (serve_connection made it so).
    current_group_server().groups.set_identity(group, websocket, who, announce)
    return who


async def leave(websocket: WebSocket, group: str) -> None:
    """Leave ``group`` (as ``websocket.leave``): no longer present there. A checkpoint."""
    await websocket.leave(group)


async def members(group: str) -> dict[str, int]:
    """The identities present in ``group`` on every process the broker reaches, each with
    its number of connections. Call it in the server's trio thread. A checkpoint.

    Raises:
        BrokerError: the broker's store (Redis) is unreachable.
    """
    return await current_group_server().broker.members(group)
