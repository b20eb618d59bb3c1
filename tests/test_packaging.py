"""The built distributions (sdist and wheel) hold every package, handlers/ as
trio_djws.handlers, the static files, the template tags, ``py.typed`` and the pytest plugin.

``nox -s build`` runs this module on the ``dist/`` it built (``TRIO_DJWS_DIST``); the test
suite builds its own into a temporary directory. Standard library only: it runs without the
test suite's conftest.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = [  # paths inside the trio_djws package that must be in both distributions
    "py.typed",
    "static/trio_djws/signals.js",  # {% websocket_script %}
    "static/trio_djws/signals.mjs",
    "templates/trio_djws/admin/connections.html",  # the live connections page
    "templatetags/__init__.py",
    "templatetags/trio_djws.py",
    "handlers/__init__.py",  # handlers/ in the tree
    "handlers/signals.py",
]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    given = os.environ.get("TRIO_DJWS_DIST")
    if given:
        return pathlib.Path(given)
    # Build from a copy: setuptools' in-tree build/ directory would hide a missing package.
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".nox",
            ".*_cache",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "*.sqlite3*",
            "_build",
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp / "out"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return tmp / "out"


def _packages() -> list[str]:
    # Every package of trio_djws/ in the tree, as its __init__.py's path inside the package.
    return sorted(
        str(path.relative_to(ROOT / "trio_djws"))
        for path in (ROOT / "trio_djws").rglob("__init__.py")
    )


def _in_tree(path: str) -> str:
    # Where a file of the installed trio_djws package lies in the source tree (the sdist).
    return path if path.startswith("handlers/") else f"trio_djws/{path}"


def test_wheel_contains_every_package_and_data_file(dist: pathlib.Path) -> None:
    (wheel,) = dist.glob("trio_djws-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in _packages() + SHIPPED:
        assert f"trio_djws/{path}" in names, path
    assert "pytest_trio_djws.py" in names
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]" in text
    assert "trio_djws = pytest_trio_djws" in text


def test_sdist_contains_the_sources_and_data_files(dist: pathlib.Path) -> None:
    (sdist,) = dist.glob("trio_djws-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for path in ["pyproject.toml", "README.md", "pytest_trio_djws.py"]:
        assert path in names, path
    for path in _packages() + SHIPPED:
        assert _in_tree(path) in names, path
