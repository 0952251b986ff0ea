"""MkDocs hooks: the regions a page draws from the code (hospitaldb.tools.docs_pages), drawn again as
the site is built, the changelog included."""

from __future__ import annotations

from typing import Any

from hospitaldb.tools.docs_pages import drawn


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return drawn(markdown, build=True, source=page.file.src_path)
