"""Every command a developer runs: ``nox -s tests``, ``nox -s tests_matrix``, ``nox -s lint``,
``nox -s build``, ``nox -s chatroom``, ``nox -s chatroom_standalone``, ``nox -s docs``."""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

CHATROOM = "examples/chatroom"

# The default interpreter runs the whole suite on the Django LTS; tests_matrix runs the
# library suite on each newer Django with the oldest Python it supports (Django 6.x: 3.12+).
DEFAULT_DJANGO = "5.2"
MATRIX = [("3.12", "6.0"), ("3.13", "6.1")]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: the library's, then the chatroom's on SQLite and on PostgreSQL
    (needs redis-server, PostgreSQL on 127.0.0.1:5432 and Chromium: see
    docs/howto/contributing.md).

    pytest-django holds one settings module per process, hence three pytest runs; options
    after ``--`` go to each of them.
    """
    session.install("-e", ".[test]", f"django~={DEFAULT_DJANGO}.0")
    session.run("pytest", "--ignore=tests/chatroom", *session.posargs)
    chatroom = [
        "pytest",
        "--ds=chatroom.settings",
        "-o",
        f"pythonpath=. {CHATROOM}",
        "tests/chatroom",
        *session.posargs,
    ]
    # Set, so that a DATABASE_URL in the shell does not leak in; the test database itself
    # is a temporary file (tests/chatroom/conftest.py).
    sqlite = f"sqlite:///{session.create_tmp()}/chatroom.sqlite3"
    session.run(*chatroom, env={"DATABASE_URL": sqlite})
    # pytest-django creates test_<name>; CHATROOM_POSTGRES_URL lets two checkouts run at once.
    postgres = os.environ.get("CHATROOM_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    session.run(
        *chatroom, "--ignore=tests/chatroom/test_browser.py", env={"DATABASE_URL": postgres}
    )


@nox.session
@nox.parametrize(("python", "django"), MATRIX, ids=[f"py{py}-django{dj}" for py, dj in MATRIX])
def tests_matrix(session: nox.Session, django: str) -> None:
    """The library suite on (Python 3.12, Django 6.0) and (Python 3.13, Django 6.1).

    Needs ``python3.12`` and ``python3.13`` on PATH (``.ci/run`` takes them from pyenv).
    ``nox -s "tests_matrix(py3.13-django6.1)"`` runs one cell; options after ``--`` go to pytest.
    """
    session.install("-e", ".[test]", f"django~={django}.0")
    session.run("python", "-c", "import django, sys; print(sys.version, django.__version__)")
    session.run("pytest", "--ignore=tests/chatroom", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel into dist/, check them with ``twine check --strict`` and
    the listing test (tests/test_packaging.py), then install the wheel into this session."""
    session.install("build>=1", "twine>=5", "pytest>=8")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    artifacts = sorted(glob.glob("dist/*"))
    session.run("twine", "check", "--strict", *artifacts)
    session.install(*glob.glob("dist/*.whl"))  # with its dependencies: the wheel installs
    # The listing test needs no conftest and no Django: run it alone on the built dist/.
    session.run(
        "pytest",
        "--noconftest",
        "-W",
        "ignore::pytest.PytestConfigWarning",  # the suite's pytest-django/pytest-trio options
        "tests/test_packaging.py",
        env={"TRIO_DJWS_DIST": "dist"},
    )
    session.log("built: %s", ", ".join(artifacts))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy (strict on trio_djws/), import-linter (the
    layers of docs/explanation/layers.md, no cycles), and the structure tests that lint cannot
    express (no private name imported across modules, the public/internal line, the layer
    maps, the 450-line rule)."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    # The layers and the no-cycles rule (pyproject.toml [tool.importlinter]).
    session.run("lint-imports")
    session.run("pytest", "-q", "tests/test_layers.py", "tests/test_public_api.py")


@nox.session
def chatroom(session: nox.Session) -> None:
    """Run the chatroom on http://127.0.0.1:8000 (``-- --bind HOST:PORT`` to change)."""
    session.install("-e", ".", "-r", f"{CHATROOM}/requirements.txt")
    session.chdir(CHATROOM)
    session.run("python", "manage.py", "migrate", "--noinput")
    args = session.posargs or ["--bind", "127.0.0.1:8000"]
    session.run("python", "manage.py", "serve", *args)


# Servers and tools the benchmark needs; never dependencies of the package.
BENCH_SMOKE_DEPS = [
    "channels>=4,<5",
    "uvicorn[standard]>=0.30",  # uvloop too, which the load generator uses when present
    "websockets>=14",
    "dj-database-url>=2",  # the chatroom example's settings
    "psycopg[binary]>=3.1",
    "whitenoise>=6",
    "coredis>=4",  # trio_djws.brokers.RedisBroker, when it is in the tree
]
BENCH_DEPS = [
    *BENCH_SMOKE_DEPS,
    "daphne>=4",
    "hypercorn>=0.17",
    "matplotlib>=3.8",
    "py-spy>=0.3",
    "prometheus-client>=0.20",  # the servers with --metrics-bind (the cost of the metrics)
]


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite against Django Channels (docs/explanation/performance.md).

    Takes several minutes; writes bench/results/. Options after ``--`` go to
    ``python -m bench`` (e.g. ``-- --workloads echo,broadcast --servers trio-djws,channels-daphne
    --profile``); needs PostgreSQL on 127.0.0.1:5432 for the chatroom workload.
    """
    session.install("-e", ".", *BENCH_DEPS)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """Every bench workload far below capacity on trio-djws (and Channels on uvicorn),
    asserting only that each completes with 0 lost; speed is never asserted."""
    session.install("-e", ".", *BENCH_SMOKE_DEPS)
    session.run("python", "-m", "bench", "--smoke", *session.posargs)


@nox.session
def chatroom_standalone(session: nox.Session) -> None:
    """The chatroom as gunicorn (HTTP, ``chatroom.wsgi``) + ``manage.py runwebsocket``
    (WebSockets), djwebsockets' deployment: ``-- --bind 127.0.0.1:8000 --ws-port 8001``
    (the defaults). The room page connects its socket to the WebSocket port
    (``CHAT_WEBSOCKET_PORT``). Ctrl-C stops both; runwebsocket closes sockets with 1001.
    """
    parser = argparse.ArgumentParser(prog="nox -s chatroom_standalone --")
    parser.add_argument("--bind", default="127.0.0.1:8000", metavar="HOST:PORT")
    parser.add_argument("--ws-port", type=int, default=8001, metavar="PORT")
    options = parser.parse_args(session.posargs)
    host = options.bind.rpartition(":")[0]
    session.install("-e", ".", "-r", f"{CHATROOM}/requirements.txt", "gunicorn>=27")
    session.chdir(CHATROOM)
    session.run("python", "manage.py", "migrate", "--noinput")
    env = {**os.environ, "CHAT_WEBSOCKET_PORT": str(options.ws_port)}
    python = os.path.join(session.bin, "python")
    ws_server = subprocess.Popen(
        [python, "manage.py", "runwebsocket", "--bind", f"{host}:{options.ws_port}"], env=env
    )
    try:
        session.run("gunicorn", "--bind", options.bind, "chatroom.wsgi:application", env=env)
    finally:
        if ws_server.poll() is None:
            ws_server.send_signal(signal.SIGINT)  # drain: 1001 after the queued messages
        ws_server.wait(timeout=60)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site into docs/_build/html (warnings are errors, every cross-reference must
    resolve), then test it: every internal link resolves, every Python sample of the pages and
    of README.md runs (sybil), the tutorial page renders in Chromium. Options after ``--`` go
    to pytest (``-- -k settings``). docs/README.md has the conventions.
    """
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-n",
        "-q",
        "-E",
        "-b",
        "html",
        "-d",
        "docs/_build/doctrees",
        "docs",
        "docs/_build/html",
    )
    session.run("pytest", "-c", "docs/pytest.ini", "docs", *session.posargs)
