"""Where the project is, and where the SQL it runs comes from.

The step files (and their checks) live in `sql/` of this checkout, or in the folder
HOSPITALDB_SQL_DIR names: adapting the refresh to another warehouse changes SQL files
only. The project's own SQL (the etl_audit schema, monitoring queries, the demo)
always comes from this checkout's `sql/`.
"""

from __future__ import annotations

from pathlib import Path

from hospitaldb import settings


def _project_root() -> Path:
    # A checkout (and an editable install) has sql/ beside flows/; an installed copy of the
    # package runs from the project folder, the working directory set by the pull step.
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "sql").is_dir() else Path.cwd()


PROJECT_ROOT = _project_root()
PROJECT_SQL_DIR = PROJECT_ROOT / "sql"


def step_sql_dir() -> Path:
    """Where the step files are: HOSPITALDB_SQL_DIR, else this checkout's sql/."""
    configured = settings.SQL_DIR.read()
    return Path(configured).expanduser().resolve() if configured else PROJECT_SQL_DIR


def display_path(path: Path) -> str:
    """How messages name a file: relative to the checkout when inside it, else in full."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
