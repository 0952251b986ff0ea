"""MkDocs hooks: the regions a page draws from the code (hospitaldb.tools.docs.pages), drawn again as
the site is built, the changelog included; and what the site needs to show itself, shipped with it
(hospitaldb.tools.docs.site: Mermaid from the npm registry, no third-party fallback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

from hospitaldb.tools.docs.pages import drawn
from hospitaldb.tools.docs.site import MERMAID, SHIPPED, fetched, without_third_party_fallbacks


def on_config(config: Any) -> Any:
    config.extra_javascript.append(MERMAID.in_site)  # on every page, before any diagram is drawn
    return config


def on_files(files: Any, config: Any) -> Any:
    for asset in SHIPPED:
        files.append(File.generated(config, asset.in_site, abs_src_path=str(fetched(asset))))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return drawn(markdown, build=True, source=page.file.src_path)


def on_post_build(config: Any) -> None:
    without_third_party_fallbacks(Path(config.site_dir))
