"""Hostile-client attacks on the chatroom example, from outside the server process.

``python -m bench.attacks`` starts the chatroom (``examples/chatroom`` with
``bench.attack_settings``: its own settings plus a connection limit and one ticket-protected
namespace) on loopback, once per attack and per server:

- ``serve``: ``manage.py serve`` (WebSockets on the ``websockets`` engine, HTTP on Hypercorn);
- ``standalone-websockets`` / ``standalone-trio-websocket``: ``manage.py runwebsocket``;
- ``hypercorn``: plain ``hypercorn --worker-class trio chatroom.asgi:application``.

Each attack is a real client (raw sockets, or the ``websockets`` library) doing what a hostile
or broken client does; the server is judged from outside: HTTP statuses and close codes seen,
the server process's open descriptors (``/proc/<pid>/fd``) and its sockets in ``CLOSE-WAIT``
(``/proc/net/tcp``) before and after, and the lines it logged. Every loop is bounded in count
and every wait in time; the table at the end says what was expected, what was seen, and
``ok`` or ``FAIL`` per row (exit status 1 on any ``FAIL``).

A contributor's tool (not run in CI): it takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

__all__ = ["ATTACKS", "SERVERS", "main"]

ROOT = Path(__file__).resolve().parent.parent
CHATROOM = ROOT / "examples" / "chatroom"
SETTINGS = "bench.attack_settings"
START_TIMEOUT = 30.0  # seconds for a server to answer its first handshake
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
SETTLE_TIMEOUT = 10.0  # seconds the server may take to close what the attack left
ATTACK_TIMEOUT = 180.0  # seconds per attack, whatever happens
IO_TIMEOUT = 5.0  # seconds per read of a raw client
KEY = base64.b64encode(b"attack-key-16by!").decode()  # a valid Sec-WebSocket-Key
ROOM = "/ws/chat/lobby/"
TCP_CLOSE_WAIT = "08"
TRACEBACK_STARTS = ("Traceback (most recent call last)", "  + Exception Group Traceback")
# A path, a nickname and a close reason that would each start a line of their own if logged
# unescaped (the chatroom's log format starts with the date).
FORGED = "2099-01-01 00:00:00,000 CRITICAL trio_djws FORGED LINE"

SERVERS: dict[str, list[str]] = {
    "serve": ["{python}", "-m", "django", "serve", "--bind", "127.0.0.1:{port}"],
    "standalone-websockets": [
        *("{python}", "-m", "django", "runwebsocket", "--bind", "127.0.0.1:{port}"),
        *("--engine", "websockets"),
    ],
    "standalone-trio-websocket": [
        *("{python}", "-m", "django", "runwebsocket", "--bind", "127.0.0.1:{port}"),
        *("--engine", "trio_websocket"),
    ],
    "hypercorn": [
        *("{python}", "-m", "hypercorn", "--worker-class", "trio"),
        *("--bind", "127.0.0.1:{port}", "chatroom.asgi:application"),
    ],
}


# -- the server under attack, seen from outside ----------------------------------------------


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _tcp_rows() -> list[list[str]]:
    with open("/proc/net/tcp") as f:
        return [line.split() for line in f.readlines()[1:]]


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def open_fds(pid: int) -> int:
    """The number of open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def close_wait(port: int) -> int:
    """Server-side sockets of ``port`` in CLOSE-WAIT: the client closed, the server did not."""
    return sum(1 for r in _tcp_rows() if _port_of(r[1]) == port and r[3] == TCP_CLOSE_WAIT)


@dataclasses.dataclass
class Server:
    """One running server: its command's process, the one holding the connections, its log."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    pid: int = 0  # the process that accepts (Hypercorn's CLI runs its worker in a child)

    def find_pid(self) -> int:
        listening = {
            r[9] for r in _tcp_rows() if _port_of(r[1]) == self.port and r[3] == "0A"
        }  # 0A: LISTEN
        children = _children()
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            if _socket_inodes(pid) & listening:
                found.append(pid)
            todo.extend(children.get(pid, ()))
        return found[-1] if found else self.process.pid  # the deepest holder: the worker

    def alive(self) -> bool:
        """Whether the accepting process still runs."""
        return self.process.poll() is None and os.path.exists(f"/proc/{self.pid}")

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def fds(self) -> int:
        return open_fds(self.pid)

    async def settle(self, before: int) -> tuple[int, int, float]:
        """Wait (bounded) until the server is back to ``before`` descriptors and has no socket
        in CLOSE-WAIT; returns (descriptors, CLOSE-WAIT sockets, seconds waited)."""
        start = time.monotonic()
        while True:
            fds, waiting = self.fds(), close_wait(self.port)
            elapsed = time.monotonic() - start
            if (fds <= before and not waiting) or elapsed > SETTLE_TIMEOUT:
                return fds, waiting, round(elapsed, 1)
            await asyncio.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(database_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of every server and helper process of one run."""
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{CHATROOM}",
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "PYTHONUNBUFFERED": "1",
        "ATTACK_CACHE_DIR": str(workdir / "cache"),
        **extra,
    }


@contextlib.asynccontextmanager
async def running(name: str, env: dict[str, str], log: Path) -> AsyncIterator[Server]:
    """Start server ``name`` on a free loopback port, wait for its first handshake (the
    warm-up: a chat client that sends one message and reads it back), stop it afterwards
    (SIGTERM, SIGKILL after STOP_TIMEOUT)."""
    port = _free_port()
    argv = [a.format(python=sys.executable, port=port) for a in SERVERS[name]]
    process = _start(argv, env, log)
    server = Server(name, port, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: see {log}")
            try:
                async with chat_client(port, "warmup") as ws:
                    await ws.send(json.dumps({"type": "message", "text": "warm-up"}))
                    while json.loads(await ws.recv()).get("text") != "warm-up":
                        pass
                break
            except (TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        server.pid = server.find_pid()
        await asyncio.sleep(0.5)  # the warm-up connection's close
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=CHATROOM, env=env, stdout=out, stderr=out)


def chat_client(port: int, nick: str, **kwargs: Any) -> Any:
    """A ``websockets`` client in the lobby (it buffers everything: never the bottleneck)."""
    return connect(
        f"ws://127.0.0.1:{port}{ROOM}?nick={nick}",
        open_timeout=IO_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        max_queue=None,
        **kwargs,
    )


# -- raw clients ----------------------------------------------------------------------------


def handshake(port: int, path: str, key: str = KEY, headers: str = "") -> bytes:
    """A WebSocket upgrade request for ``path`` (already percent-encoded)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n"
    ).encode()


def frame(opcode: int, payload: bytes, *, mask: bool = True, rsv1: bool = False) -> bytes:
    """One final frame (RFC 6455 §5.2), masked as a client's must be unless ``mask=False``."""
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(data: object) -> bytes:
    """A masked text frame carrying ``data`` as JSON."""
    return frame(0x1, json.dumps(data).encode())


CLOSE_1000 = frame(0x8, struct.pack("!H", 1000))


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in a server's byte stream after its 101, if any."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        if i + n > len(data):
            return None
        if opcode == 0x8:
            return struct.unpack("!H", data[i : i + 2])[0] if n >= 2 else 1005
        i += n
    return None


@dataclasses.dataclass
class Probe:
    """What one raw client saw: the HTTP status, then the server's close code, "EOF" (the
    server closed TCP without a close frame) or "open" (it kept the connection)."""

    status: int | None = None
    close: int | str | None = None
    seconds: float = 0.0
    eof: bool = False  # the server closed the TCP connection (else this client hung up)

    def outcome(self) -> str:
        if self.status != 101:
            status = str(self.status) if self.status else "no answer"
            return status if self.eof else status + " (left open)"
        return f"101+{self.close}"


async def _read_until_eof(reader: asyncio.StreamReader, buffer: bytearray, limit: float) -> bool:
    # Read into ``buffer`` until EOF (True) or ``limit`` seconds without it (False).
    end = time.monotonic() + limit
    while (left := end - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return False
        except OSError:
            return True
        if not chunk:
            return True
        buffer += chunk
    return False


async def probe(
    port: int, packet: bytes, *, linger: float = 0.3, wait: float = IO_TIMEOUT
) -> Probe:
    """Send ``packet`` (a handshake and whatever follows it, one write) and see what comes
    back. After a 101 the server has ``linger`` seconds to close by itself; then this client
    sends a 1000 close frame and waits for the server's close."""
    result, start = Probe(), time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(packet)
        buffer = bytearray()
        eof = False
        while b"\r\n\r\n" not in buffer and not eof:
            eof = not await _more(reader, buffer)
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        with contextlib.suppress(IndexError, ValueError):
            result.status = int(head.split(b" ", 2)[1])
        body = bytearray(rest)
        if result.status == 101:
            if not eof:
                eof = await _read_until_eof(reader, body, linger)
            if close_code(bytes(body)) is None and not eof:
                writer.write(CLOSE_1000)
                eof = await _read_until_eof(reader, body, wait)
            code = close_code(bytes(body))
            result.close = code if code is not None else ("EOF" if eof else "open (hung up)")
        elif not eof:
            eof = await _read_until_eof(reader, body, wait)
        result.eof = eof
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    result.seconds = time.monotonic() - start
    return result


async def _more(reader: asyncio.StreamReader, buffer: bytearray) -> bool:
    # One read of at most IO_TIMEOUT seconds; False on EOF or timeout.
    try:
        chunk = await asyncio.wait_for(reader.read(65536), IO_TIMEOUT)
    except (TimeoutError, OSError):
        return False
    buffer += chunk
    return bool(chunk)


async def probe_many(
    port: int, packets: list[bytes], concurrency: int = 20, wait: float = IO_TIMEOUT
) -> list[Probe]:
    """``probe()`` each packet, ``concurrency`` at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(packet: bytes) -> Probe:
        async with semaphore:
            try:
                return await probe(port, packet, wait=wait)
            except OSError as exc:
                return Probe(close=type(exc).__name__)

    return await asyncio.gather(*(one(p) for p in packets))


def outcomes(probes: list[Probe]) -> str:
    return ", ".join(f"{k} x{n}" for k, n in Counter(p.outcome() for p in probes).most_common())


# -- attacks ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the table: an attack on one server."""

    server: str
    attack: str
    expected: str
    seen: str
    ok: bool
    fds: str = ""  # "before -> after"
    close_wait: int | None = None
    log_lines: int | None = None  # lines the server logged during the attack
    tracebacks: int | None = None  # of which first lines of a traceback
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Ctx:
    """What an attack gets: the server, the run's options and its helper processes' env."""

    server: Server
    env: dict[str, str]
    opts: argparse.Namespace

    @property
    def standalone(self) -> bool:
        return self.server.name.startswith("standalone")

    @property
    def hypercorn(self) -> bool:
        return self.server.name == "hypercorn"


Attack = Callable[[Ctx], Awaitable[Row]]


async def _measured(
    ctx: Ctx, attack: str, run: Callable[[], Awaitable[tuple[str, str, bool, dict[str, Any]]]]
) -> Row:
    # Descriptors before, the attack, descriptors and CLOSE-WAIT after it settled, log lines.
    server = ctx.server
    before, lines = server.fds(), len(server.lines())
    expected, seen, ok, figures = await run()
    if not server.alive():  # the attack killed it
        return Row(server.name, attack, expected, seen + " (server process gone)", ok)
    after, waiting, waited = await server.settle(before)
    logged = server.lines()[lines:]
    tracebacks = sum(1 for line in logged if line.startswith(TRACEBACK_STARTS))
    figures["settled_in_s"] = waited
    return Row(
        server.name,
        attack,
        expected + "; fds back, 0 CLOSE-WAIT, no traceback",
        seen,
        ok and after <= before and waiting == 0 and not tracebacks,
        f"{before} -> {after}",
        waiting,
        len(logged),
        tracebacks,
        figures,
    )


async def leak_stray_byte(ctx: Ctx) -> Row:
    """A valid upgrade request and the byte ``x`` in the same packet, 300 times."""
    port, count = ctx.server.port, ctx.opts.leak_packets

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        # After a 101 the byte starts a frame that never completes: a server may wait for the
        # rest (until its ping timeout); the client hangs up after a second.
        probes = await probe_many(port, [handshake(port, ROOM) + b"x"] * count, wait=1.0)
        return "a definite answer each", outcomes(probes), True, {}

    return await _measured(ctx, f"handshake+byte x{count}", run)


async def leak_pipelined_frame(ctx: Ctx) -> Row:
    """A valid upgrade request and a valid chat message frame in the same packet, 300 times."""
    port, count = ctx.server.port, ctx.opts.leak_packets
    packet = handshake(port, ROOM + "?nick=pipelined") + text({"type": "message", "text": "p"})

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        probes = await probe_many(port, [packet] * count, wait=1.0)
        return "a definite answer each", outcomes(probes), True, {}

    return await _measured(ctx, f"handshake+frame x{count}", run)


async def _burst_client(
    port: int, index: int, messages: int, size: int, ready: asyncio.Event, go: asyncio.Event
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]:
    # A chat client with a 4 KiB receive buffer that posts and then reads nothing.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(handshake(port, f"{ROOM}?nick=burst{index}"))
    head = bytearray()
    while b"\r\n\r\n" not in head:
        if not await _more(reader, head):
            break
    status, _, rest = bytes(head).partition(b"\r\n\r\n")
    if b" 101 " not in status.split(b"\r\n", 1)[0] + b" ":
        raise OSError(f"handshake refused: {status[:40]!r}")
    ready.set()
    await go.wait()
    body = "b" * size
    writer.write(b"".join(text({"type": "message", "text": body}) for _ in range(messages)))
    return reader, writer, bytearray(rest)


async def burst(ctx: Ctx) -> Row:
    """60 chat clients with small receive buffers each post 20 messages, then read nothing
    while the room's broadcast piles up, until the server has closed every one of them (its
    log says so); then each reads again, what it was sent, and notes the close code it finds.
    A slow consumer's close frame waits WEBSOCKET_CLOSE_TIMEOUT for its client to read: one
    that reads nothing longer is dropped without it (EOF)."""
    server, opts = ctx.server, ctx.opts
    clients, messages, size = opts.burst_clients, opts.burst_messages, opts.burst_size

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        go = asyncio.Event()
        readies = [asyncio.Event() for _ in range(clients)]
        tasks = [
            asyncio.create_task(_burst_client(server.port, i, messages, size, readies[i], go))
            for i in range(clients)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        go.set()
        opened = await asyncio.gather(*tasks)
        # Read nothing until the server has closed every client, or for hold seconds: its
        # log has a line per close for a cause ("aborting connection ... close code 1008"),
        # or its sockets left ESTABLISHED (a FIN it sent may wait behind unread data, so the
        # client side cannot tell).
        start = time.monotonic()
        while time.monotonic() - start < opts.burst_hold:
            if sum("aborting connection" in line for line in server.lines()) >= clients:
                break
            if not sum(1 for r in _tcp_rows() if _port_of(r[1]) == server.port and r[3] == "01"):
                break
            await asyncio.sleep(0.25)
        held = round(time.monotonic() - start, 1)

        async def finish(reader: asyncio.StreamReader, buffer: bytearray) -> int | str:
            eof = await _read_until_eof(reader, buffer, 3.0)
            code = close_code(bytes(buffer))
            return code if code is not None else ("EOF" if eof else "open")

        codes = await asyncio.gather(*(finish(r, b) for r, _, b in opened))
        for _, writer, _ in opened:
            writer.close()
        seen = Counter(codes)
        description = ", ".join(f"{k} x{n}" for k, n in seen.most_common())
        return (
            "every client closed with 1008 (slow consumer)",
            f"close codes: {description} (held {held} s)",
            seen.get(1008) == clients,
            {"close_codes": {str(k): n for k, n in seen.items()}, "held_s": held},
        )

    return await _measured(ctx, f"{clients} clients x {messages} msgs, not reading", run)


async def connection_limit(ctx: Ctx) -> Row:
    """Hold WEBSOCKET_MAX_CONNECTIONS chat connections, then try more handshakes."""
    server, limit, extra = ctx.server, ctx.opts.max_connections, ctx.opts.over_limit

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            held = 0
            for i in range(limit):
                await stack.enter_async_context(chat_client(server.port, f"held{i}"))
                held += 1
            lines = len(server.lines())
            probes = await probe_many(server.port, [handshake(server.port, ROOM)] * extra, 10)
            new = server.lines()[lines:]
        statuses = Counter(p.outcome() for p in probes)
        refused_lines = sum(1 for line in new if "503" in line or "refused" in line)
        tracebacks = sum(1 for line in new if line.startswith(TRACEBACK_STARTS))
        # A place frees once the held connections are gone.
        await server.settle(0)
        after = await probe(server.port, handshake(server.port, ROOM))
        seen = (
            f"held {held}; then {outcomes(probes)}; {refused_lines} log lines about it, "
            f"{tracebacks} tracebacks; after release: {after.outcome()}"
        )
        ok = statuses.get("503") == extra and refused_lines <= 3 and not tracebacks
        ok = ok and after.status == 101
        return (
            f"503 x{extra}, at most 3 log lines, then 101",
            seen,
            ok,
            {"refusal_log_lines": refused_lines},
        )

    return await _measured(ctx, f"{limit} held + {extra} over the limit", run)


async def flood(ctx: Ctx) -> Row:
    """One client posting as fast as it can, far over the chatroom's 10/s (burst 20)."""
    port, count = ctx.server.port, ctx.opts.flood_messages

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        sent = accepted = 0
        async with chat_client(port, "flooder") as ws:
            received: list[str] = []

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in ws:
                        received.append(str(message))

            reader = asyncio.create_task(read())
            with contextlib.suppress(ConnectionClosed):
                for _ in range(count):
                    await ws.send(json.dumps({"type": "message", "text": "flood"}))
                    sent += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), IO_TIMEOUT)
            reader.cancel()
            code, reason = ws.close_code, ws.close_reason
        frames = [json.loads(m) for m in received]
        accepted = sum(1 for f in frames if f["type"] == "message" and f["author"] == "flooder")
        return (
            "close 1008 'rate limit'",
            f"sent {sent}, {accepted} broadcast back, close {code} {reason!r}",
            code == 1008,
            {"sent": sent, "accepted": accepted, "close": code},
        )

    return await _measured(ctx, f"flood {count} msgs", run)


async def log_forging(ctx: Ctx) -> Row:
    """A newline followed by a fake log line, percent-encoded in the path (of a WebSocket
    handshake, a handshake with a stray byte, a plain HTTP request), in ``?nick=`` and in a
    close reason; then the server's log is searched for a line that starts like the fake."""
    server, port = ctx.server, ctx.server.port
    encoded = FORGED.replace(" ", "%20")

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        lines = len(server.lines())
        packets = [
            handshake(port, f"/ws/chat/x%0A{encoded}/"),
            handshake(port, f"/ws/x%0D%0A{encoded}/"),
            handshake(port, f"{ROOM}?nick=x%0A{encoded}") + b"x",
            f"GET /x%0A{encoded} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(),
        ]
        await probe_many(port, packets, wait=1.0)
        async with chat_client(port, f"x%0A{encoded}") as ws:
            await ws.close(4000, "bye\n" + FORGED)
        # Last: a refused handshake with a stray byte kills plain Hypercorn (see one_packet).
        await probe(port, handshake(port, f"/ws/chat/x%0A{encoded}/") + b"x", wait=1.0)
        await asyncio.sleep(1.0)  # the server's close lines
        new = server.lines()[lines:]
        forged = [line for line in new if line.startswith("2099")]
        mentions = sum(1 for line in new if "FORGED" in line)
        return (
            "0 forged lines",
            f"{len(forged)} forged lines ({mentions} lines quote the attempt escaped)",
            not forged,
            {"forged": forged[:3], "mentions": mentions},
        )

    return await _measured(ctx, "log forging (%0A)", run)


async def one_packet(ctx: Ctx) -> Row:
    """An upgrade request for a path nothing serves (refused with 403 at once) and one more
    byte, in one packet; then a normal handshake: is the server still serving?"""
    port = ctx.server.port

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        first = await probe(port, handshake(port, "/nowhere/") + b"x", wait=1.0)
        await asyncio.sleep(1.0)
        try:
            after = (await probe(port, handshake(port, ROOM), wait=1.0)).outcome()
        except OSError as exc:
            after = f"{type(exc).__name__}"
        state = "alive" if ctx.server.alive() else "dead"
        seen = f"{first.outcome()}, then {after}; server {state}"
        if ctx.hypercorn:  # Hypercorn issue 225, documented in production-hardening.md
            return "known: the worker dies (Hypercorn issue 225)", seen, True, {}
        return "the next handshake gets 101", seen, after.startswith("101"), {}

    return await _measured(ctx, "refused handshake+byte, then", run)


async def bad_key(ctx: Ctx) -> Row:
    """An upgrade request whose Sec-WebSocket-Key is not base64 of 16 bytes."""
    port = ctx.server.port

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        probes = [await probe(port, handshake(port, ROOM, key=k)) for k in ("not-a-key!!", "AA==")]
        return "400", outcomes(probes), all(p.status == 400 for p in probes), {}

    return await _measured(ctx, "invalid Sec-WebSocket-Key", run)


async def bad_frame_pipelined(ctx: Ctx) -> Row:
    """An unmasked frame with RSV1 set in the handshake's packet."""
    port = ctx.server.port
    bad = frame(0x1, b"hello", mask=False, rsv1=True)

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        result = await probe(port, handshake(port, ROOM) + bad, linger=2.0)
        if ctx.hypercorn:
            expected, ok = "400 (Hypercorn answers any extra bytes so)", result.status == 400
        else:
            expected, ok = "101, then close 1002", result.close == 1002
        seen = f"{result.outcome()} after {result.seconds:.2f} s"
        return expected, seen, ok, {}

    return await _measured(ctx, "bad frame pipelined", run)


async def slowloris(ctx: Ctx) -> Row:
    """Sockets that send a handshake one header line per second and never finish it."""
    port, count, limit = ctx.server.port, ctx.opts.slowloris, ctx.opts.slowloris_limit

    async def one() -> tuple[float, str]:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = bytearray()
        try:
            writer.write(f"GET {ROOM} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
            for i in range(int(limit)):
                writer.write(f"X-Slow-{i}: {i}\r\n".encode())
                try:
                    chunk = await asyncio.wait_for(reader.read(1024), 1.0)
                except TimeoutError:
                    continue
                except OSError:
                    break
                answer += chunk
                break  # an answer, or EOF
            else:
                return time.monotonic() - start, "still open"
        finally:
            writer.close()
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "EOF"
        return time.monotonic() - start, status

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        results = await asyncio.gather(*(one() for _ in range(count)))
        times = sorted(t for t, _ in results)
        answers = Counter(a for _, a in results)
        still = answers.get("still open", 0)
        seen = f"closed after {times[0]:.1f}-{times[-1]:.1f} s: " + ", ".join(
            f"{k!s} x{n}" for k, n in answers.most_common()
        )
        return f"every one closed within {limit:.0f} s", seen, not still, {}

    return await _measured(ctx, f"slowloris x{count}", run)


async def nul_message(ctx: Ctx) -> Row:
    """A chat message with a NUL character, then a normal one on the same connection."""
    port = ctx.server.port

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        error, echoed, code = None, False, None
        try:
            async with chat_client(port, "nul") as ws:
                await ws.send(json.dumps({"type": "message", "text": "a\x00b"}))
                await ws.send(json.dumps({"type": "message", "text": "after nul"}))
                async with asyncio.timeout(IO_TIMEOUT):
                    while not echoed:
                        data = json.loads(await ws.recv())
                        if data["type"] == "error":
                            error = data["error"]
                        echoed = data.get("text") == "after nul"
        except (ConnectionClosed, TimeoutError) as exc:
            code = getattr(getattr(exc, "rcvd", None), "code", type(exc).__name__)
        seen = f"error frame {error!r}" if error else "no error frame"
        seen += ", then the next message went through" if echoed else f", closed {code}"
        return "an error frame, connection open", seen, bool(error) and echoed, {}

    return await _measured(ctx, "NUL in a message", run)


def issue_tickets(env: dict[str, str], count: int) -> list[str]:
    """Tickets for the user ``attacker``, signed by the chatroom's own code in a helper
    process (``trio_djws.tickets.issue_ticket``), as a login view would."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from trio_djws.tickets import issue_ticket\n"
        "user, _ = get_user_model().objects.get_or_create(username='attacker')\n"
        f"print(*(issue_ticket(user) for _ in range({count})))\n"
    )
    argv = [sys.executable, "-m", "django", "shell", "-v0", "-c", code]
    done = subprocess.run(argv, cwd=CHATROOM, env=env, capture_output=True, timeout=60)
    done.check_returncode()
    return done.stdout.decode().split()[-count:]


async def ticket_reuse(ctx: Ctx) -> Row:
    """A connection ticket used twice (in the query string and as a subprotocol entry), and
    a forged one."""
    server, port, path = ctx.server, ctx.server.port, "/attack/ticket/"

    async def run() -> tuple[str, str, bool, dict[str, Any]]:
        query, proto = await asyncio.to_thread(issue_tickets, ctx.env, 2)
        offer = f"Sec-WebSocket-Protocol: trio-djws.ticket, trio-djws.ticket.{proto}\r\n"
        forged = query[:-2] + ("AA" if not query.endswith("AA") else "BB")
        attempts = [
            handshake(port, f"{path}?ticket={query}"),
            handshake(port, f"{path}?ticket={query}"),
            handshake(port, path, headers=offer),
            handshake(port, path, headers=offer),
            handshake(port, f"{path}?ticket={forged}"),
        ]
        seen = [(await probe(port, p)).status for p in attempts]
        await asyncio.sleep(0.5)
        in_log = sum(1 for line in server.lines() if query in line or proto in line)
        expected = [101, 403, 101, 403, 403]
        return (
            "query 101 then 403, subprotocol 101 then 403, forged 403, ticket never logged",
            f"{seen}, ticket in {in_log} log lines",
            seen == expected and in_log == 0,
            {},
        )

    return await _measured(ctx, "ticket reuse", run)


ATTACKS: dict[str, Attack] = {
    "stray-byte": leak_stray_byte,
    "pipelined-frame": leak_pipelined_frame,
    "burst": burst,
    "limit": connection_limit,
    "flood": flood,
    "forging": log_forging,
    "one-packet": one_packet,
    "bad-key": bad_key,
    "bad-frame": bad_frame_pipelined,
    "slowloris": slowloris,
    "nul": nul_message,
    "ticket": ticket_reuse,
}


# -- the run ----------------------------------------------------------------------------------


def migrate(env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "django", "migrate", "--noinput", "-v0"]
    subprocess.run(argv, cwd=CHATROOM, env=env, check=True, timeout=120)


async def attack_all(opts: argparse.Namespace, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    for name in opts.servers:
        for attack in opts.attacks:
            limit = str(opts.max_connections) if attack == "limit" else ""
            env = server_env(opts.database_url, workdir, ATTACK_MAX_CONNECTIONS=limit)
            log = workdir / f"{name}-{attack}.log"
            try:
                async with running(name, env, log) as server:
                    row = await asyncio.wait_for(
                        ATTACKS[attack](Ctx(server, env, opts)), ATTACK_TIMEOUT
                    )
                    row.figures["pid"] = server.pid
            except Exception as exc:  # noqa: BLE001 (a row says what broke; the run goes on)
                row = Row(name, attack, "", f"attack failed: {exc!r}", False)
            whole = log.read_text(errors="replace").splitlines()
            row.figures["log_total_lines"] = len(whole)  # start and shutdown included
            rows.append(row)
            print(_line(row), flush=True)
    return rows


COLUMNS = ("server", "attack", "fds", "CLOSE-WAIT", "log lines", "verdict", "seen")


def _line(row: Row) -> str:
    return " | ".join(
        [
            row.server,
            row.attack,
            row.fds,
            "" if row.close_wait is None else str(row.close_wait),
            "" if row.log_lines is None else f"{row.log_lines} ({row.tracebacks} tb)",
            "ok" if row.ok else "FAIL (expected: " + row.expected + ")",
            row.seen,
        ]
    )


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += [f"| {_line(row)} |" for row in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the attacks; returns 1 if any row failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset")
    parser.add_argument(
        "--database-url",
        help="the chatroom's DATABASE_URL (default: a fresh SQLite file), e.g. "
        "postgres://postgres@127.0.0.1:5432/test_attack (the database must exist)",
    )
    parser.add_argument("--leak-packets", type=int, default=300, help="per leak attack")
    parser.add_argument("--burst-clients", type=int, default=60)
    parser.add_argument("--burst-messages", type=int, default=20, help="per burst client")
    parser.add_argument("--burst-size", type=int, default=1000, help="characters per message")
    parser.add_argument(
        "--burst-hold", type=float, default=20.0, help="seconds the burst clients read nothing"
    )
    parser.add_argument("--max-connections", type=int, default=50, help="the limit attack's")
    parser.add_argument("--over-limit", type=int, default=200, help="handshakes above it")
    parser.add_argument("--flood-messages", type=int, default=200)
    parser.add_argument("--slowloris", type=int, default=50, help="slow sockets")
    parser.add_argument(
        "--slowloris-limit", type=float, default=15.0, help="seconds a slow socket may live"
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--logs", type=Path, help="keep the server logs in this directory")
    opts = parser.parse_args(argv)
    opts.servers = opts.servers.split(",")
    opts.attacks = opts.attacks.split(",")
    for name in opts.servers + opts.attacks:
        if name not in SERVERS and name not in ATTACKS:
            parser.error(f"unknown server or attack {name!r}")
    with tempfile.TemporaryDirectory(prefix="attacks-") as tmp:
        workdir = opts.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        opts.database_url = opts.database_url or f"sqlite:///{Path(tmp) / 'chat.sqlite3'}"
        migrate(server_env(opts.database_url, workdir))
        print(" | ".join(COLUMNS), flush=True)
        rows = asyncio.run(attack_all(opts, workdir))
    print()
    print(table(rows))
    if opts.json:
        opts.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
