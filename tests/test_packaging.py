"""The built wheel holds every subpackage, and handlers/ as trio_djws.handlers."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_contains_every_package(tmp_path: pathlib.Path) -> None:
    # Build from a copy: setuptools' in-tree build/ directory would hide a missing package.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".nox", ".*_cache", "build", "*.egg-info", "__pycache__", "*.sqlite3*"
        ),
    )
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("trio_djws-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(path.relative_to(ROOT / "trio_djws").parent / "__init__.py")
        for path in (ROOT / "trio_djws").rglob("__init__.py")
    }
    for package in expected:
        assert f"trio_djws/{package}".replace("/./", "/") in names, package
    assert "trio_djws/handlers/__init__.py" in names
    assert "trio_djws/py.typed" in names
    assert "trio_djws/static/trio_djws/signals.js" in names  # {% websocket_script %}
    assert "trio_djws/static/trio_djws/signals.mjs" in names
    assert "trio_djws/templatetags/trio_djws.py" in names
