"""The parts of the documentation that the code defines, drawn from the code so they cannot drift.

A page holds a region that opens with `<!-- generated: NAME -->` and closes with
`<!-- end generated -->`; between them, what the generator NAME draws:

- `settings`: every HOSPITALDB_* variable, from hospitaldb.settings;
- `flow-parameters`: every parameter of the refresh flow, from its signature and docstring;
- `lineage`: what each refreshed object reads, from the reference SQL, as a Mermaid chart;
- `changelog`: CHANGELOG.md (drawn only when the site is built: it stays one file in git).

The regions are committed, so a page reads whole on GitHub too; `python3 dev.py docs` draws them
again (`write_pages`) before it builds the site, and a unit test fails while a committed page is
out of date. docs/hooks.py draws them once more as the site is built.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from hospitaldb.paths import PROJECT_ROOT, display_path

DOCS = PROJECT_ROOT / "docs"
REGION = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)
BUILD_TIME_ONLY = {"changelog"}  # drawn into the site, never copied into a committed page


def settings_table() -> str:
    from hospitaldb import settings

    rows = [
        f"| `{setting.name}` | {setting.used_by} | {setting.meaning}"
        + (" (a secret: never logged)" if setting.secret else "")
        + " |"
        for setting in settings.ALL
    ]
    return "\n".join(["| environment variable | read by | meaning |", "|---|---|---|", *rows])


def flow_parameters_table() -> str:
    from hospitaldb.refresh import hospitaldb_refresh

    rows = []
    for name, spec in hospitaldb_refresh.parameters.model_dump()["properties"].items():
        default = spec.get("default")
        shown = (
            "none"
            if default is None
            else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        )
        description = " ".join(spec.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` (`--{name.replace('_', '-')}`) | {shown} | {description} |")
    return "\n".join(["| parameter (option) | default | meaning |", "|---|---|---|", *rows])


def lineage_chart() -> str:
    from hospitaldb.engine.sql.analysis import analyse_steps
    from hospitaldb.engine.sql.lineage import lineage_of
    from hospitaldb.engine.sql.script import SqlFiles

    files = SqlFiles()
    return f"```mermaid\n{lineage_of(analyse_steps(files), files).as_mermaid()}\n```"


def changelog() -> str:
    return (PROJECT_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "flow-parameters": flow_parameters_table,
    "lineage": lineage_chart,
    "changelog": changelog,
}


def drawn(markdown: str, *, build: bool = False, source: str = "a page") -> str:
    """markdown with every generated region drawn again (the changelog too when build is true)."""

    def region(match: re.Match[str]) -> str:
        opening, name, closing = match[1], match[2], match[4]
        if name not in GENERATORS:
            raise ValueError(f"{source}: no generator for '{name}' (known: {', '.join(GENERATORS)})")
        if name in BUILD_TIME_ONLY and not build:
            return match[0]
        return f"{opening}{GENERATORS[name]().rstrip()}\n{closing}"

    return REGION.sub(region, markdown)


def pages(docs: Path = DOCS) -> list[Path]:
    return sorted(path for path in docs.rglob("*.md") if "<!-- generated:" in path.read_text())


def stale_pages(docs: Path = DOCS) -> list[Path]:
    """The pages whose committed regions differ from what the code draws now."""
    return [path for path in pages(docs) if drawn(path.read_text(), source=path.name) != path.read_text()]


def write_pages(docs: Path = DOCS) -> list[Path]:
    """Draw every page's regions again, in place; return the pages that changed."""
    changed = stale_pages(docs)
    for path in changed:
        path.write_text(drawn(path.read_text(), source=path.name))
    return changed


def main() -> int:
    """`python -m hospitaldb.tools.docs.pages`: what `python3 dev.py docs` does before it builds."""
    for path in write_pages():
        print(f"docs: {display_path(path)} drawn again from the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
