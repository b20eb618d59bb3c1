"""Checks of the built site (``nox -s docs`` builds it first) and of the repository's own pages.

- every internal link, image and anchor of the built HTML resolves;
- README.md, CHANGELOG.md and the pages link only inside the repository and cite no internal
  tracker numbers;
- README.md's Python samples run;
- the tutorial page renders in headless Chromium with its title and the sidebar, and its
  screenshot is taken (kept in docs/_static/tutorial.png when DOCS_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser, SkipParser

from trio_djws.routing import registry

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
BUILD = Path(os.environ.get("DOCS_BUILD_DIR", DOCS / "_build" / "html"))
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
USER_FACING = [REPO / "README.md", REPO / "CHANGELOG.md", *PAGES]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        for name in ("href", "src"):
            value = values.get(name)
            if value and tag in {"a", "img", "link", "script"}:
                self.links.append(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _built_pages() -> list[Path]:
    assert (BUILD / "index.html").is_file(), f"no built site in {BUILD}: run `nox -s docs`"
    return sorted(BUILD.rglob("*.html"))


def test_every_internal_link_of_the_site_resolves() -> None:
    parsed: dict[Path, _Links] = {}

    def page(path: Path) -> _Links:
        if path not in parsed:
            parsed[path] = _parse(path)
        return parsed[path]

    broken: list[str] = []
    for source in _built_pages():
        for link in page(source).links:
            url = urlsplit(link)
            if url.scheme or url.netloc or link.startswith("mailto:"):
                continue
            target = (source.parent / unquote(url.path)).resolve() if url.path else source
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(BUILD.resolve()) or not target.exists():
                broken.append(f"{source.relative_to(BUILD)}: {link}")
            elif url.fragment and target.suffix == ".html":
                if unquote(url.fragment) not in page(target).ids:
                    broken.append(f"{source.relative_to(BUILD)}: {link} (no such anchor)")
    assert broken == []


_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.MULTILINE | re.DOTALL)
_MD_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_INTERNAL_NUMBER = re.compile(r"\b(issue|PR|pull request)s?\s*#?\d+|\(#\d+\)", re.IGNORECASE)


def _relative_links(path: Path) -> Iterator[str]:
    text = _CODE.sub("", path.read_text(encoding="utf-8"))
    for match in _MD_LINK.finditer(text):
        link = match.group(1)
        if not urlsplit(link).scheme and not link.startswith("#"):
            yield link


@pytest.mark.parametrize("path", USER_FACING, ids=lambda p: str(p.relative_to(REPO)))
def test_page_links_stay_inside_the_repository(path: Path) -> None:
    outside = []
    for link in _relative_links(path):
        target = (path.parent / unquote(urlsplit(link).path)).resolve()
        if not target.is_relative_to(REPO) or not target.exists():
            outside.append(link)
    assert outside == [], f"{path.name}: links to missing files or outside the repository"


@pytest.mark.parametrize("path", USER_FACING, ids=lambda p: str(p.relative_to(REPO)))
def test_page_cites_no_internal_tracker_numbers(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert _INTERNAL_NUMBER.findall(text) == []
    assert "../shared" not in text


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, "README.md holds the overview only: move detail into docs/"


def test_readme_figures_are_in_the_benchmark_results() -> None:
    """Each figure of the README's Performance table is a figure of bench/results/results.md,
    as rounded there (11,408 for 11,407.9)."""
    number = re.compile(r"\b\d[\d,]*(?:\.\d+)?\b")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    figures = {f for row in rows[1:] for f in number.findall(row.split("|", 2)[2])}
    results = (REPO / "bench" / "results" / "results.md").read_text(encoding="utf-8")
    measured = [float(n.replace(",", "")) for n in number.findall(results)]

    def found(figure: str) -> bool:
        value = float(figure.replace(",", ""))
        step = 0.05 if "." in figure else 0.5  # the README rounds to its shown precision
        return any(abs(value - m) <= step for m in measured)

    missing = sorted(f for f in figures if not found(f))
    assert figures and missing == [], (
        f"README's Performance figures {missing} are not in bench/results/results.md: "
        "update the README's table from the latest run"
    )


def test_readme_samples_run() -> None:
    readme = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()], path=str(REPO))
    document = readme.parse(REPO / "README.md")
    registry.clear()
    try:
        examples = list(document.examples())
        for example in examples:
            example.evaluate()
    finally:
        registry.clear()


def test_tutorial_page_renders_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from tests.browser import chromium, new_page

    tutorial = BUILD / "tutorial" / "index.html"
    assert tutorial.is_file(), f"no built tutorial in {BUILD}: run `nox -s docs`"
    shot = tmp_path / "tutorial.png"
    with chromium() as browser:
        page = new_page(browser, {"width": 1280, "height": 900})
        page.goto(tutorial.as_uri())
        expect(page).to_have_title(re.compile(r"^Tutorial - trio-djws"))
        expect(page.locator("article h1")).to_have_text(re.compile(r"^Tutorial"))
        sidebar = page.locator(".sidebar-tree")
        expect(sidebar).to_be_visible()
        for section in ("Tutorial", "How-to guides", "Reference", "Explanation"):
            expect(sidebar.get_by_role("link", name=section, exact=True)).to_be_visible()
        page.screenshot(path=str(shot), full_page=False)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    if os.environ.get("DOCS_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, DOCS / "_static" / "tutorial.png")
