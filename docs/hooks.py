"""MkDocs hooks: what the code defines is drawn from the code when the site is built, so it cannot drift.

A page holds a marker, `<!-- generated: NAME -->`, replaced at build time by:

- `settings`: every HOSPITALDB_* variable, from hospitaldb.settings;
- `flow-parameters`: every parameter of the refresh flow, from its signature and docstring;
- `lineage`: what each refreshed object reads, from the reference SQL, as a Mermaid chart;
- `changelog`: CHANGELOG.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


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
    from hospitaldb.engine.lineage import lineage_of
    from hospitaldb.engine.sql_analysis import analyse_steps

    return f"```mermaid\n{lineage_of(analyse_steps()).as_mermaid()}\n```"


def changelog() -> str:
    return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


GENERATORS = {
    "settings": settings_table,
    "flow-parameters": flow_parameters_table,
    "lineage": lineage_chart,
    "changelog": changelog,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def generated(marker: re.Match[str]) -> str:
        if marker[1] not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: no generator for '{marker[0]}'")
        return GENERATORS[marker[1]]()

    return MARKER.sub(generated, markdown)
