"""The docs: a short README that links to the site's pages, and pictures that the script makes.

The site itself is built in strict mode by `python3 dev.py docs` (CI runs it): a broken link, an
unknown anchor or a page left out of the navigation fails the build.
"""

from __future__ import annotations

import re

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.docs import pages as docs_pages

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"


def test_the_readme_is_short_and_every_link_in_it_leads_somewhere():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)", text)
    assert links, "the README links to the docs"
    missing = [link for link in links if not link.startswith("http") and not (PROJECT_ROOT / link).exists()]
    assert missing == []


def test_every_picture_in_the_docs_is_one_the_screenshot_script_makes():
    script = (DOCS / "screenshots.py").read_text()
    made = set(re.findall(r'IMAGES / "([\w-]+\.png)"', script))
    shown = {
        name for page in DOCS.glob("*.md") for name in re.findall(r"images/([\w-]+\.png)", page.read_text())
    }
    assert shown and shown <= made, f"not made by docs/screenshots.py: {sorted(shown - made)}"
    assert all((DOCS / "images" / name).is_file() for name in shown)


def test_messages_in_the_code_point_at_pages_not_readme_sections():
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}"
        for path in (PROJECT_ROOT / "flows").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"README[ ,:]+['\"]?[A-Z]", line)
    ]
    assert offenders == []


def test_every_page_shows_what_the_code_draws_now_so_it_reads_whole_on_github_too():
    assert {path.name for path in docs_pages.pages()} >= {
        "configuration.md",
        "get-started.md",
        "changelog.md",
    }
    stale = [path.name for path in docs_pages.stale_pages()]
    assert stale == [], f"out of date: {stale}; `python3 dev.py docs` draws them again"


def test_a_region_out_of_date_is_found_and_drawn_again(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(
        "# Configuration\n\n<!-- generated: settings -->\n| old |\n<!-- end generated -->\nafter\n"
    )
    assert docs_pages.stale_pages(tmp_path) == [page]
    assert docs_pages.write_pages(tmp_path) == [page]
    text = page.read_text()
    assert "| old |" not in text and "`HOSPITALDB_DATABASE_URL`" in text and text.endswith("after\n")
    assert docs_pages.stale_pages(tmp_path) == []
