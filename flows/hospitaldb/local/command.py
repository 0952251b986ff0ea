"""`hospitaldb`: one command for everything a person runs (the console script of `pip install .`).

The scripts by path (`python flows/refresh.py`, `python tools/validate.py`,
`python deployments/create_blocks.py` ...) keep working: each is one of these subcommands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from hospitaldb import package_version

Command = Callable[[list[str], str], int]


def _refresh(argv: list[str], prog: str) -> int:
    from hospitaldb.local.cli import main

    return main(argv, prog)


def _validate(argv: list[str], prog: str) -> int:
    from hospitaldb.tools.validation import main

    return main(args=argv, prog=prog)


def _lineage(argv: list[str], prog: str) -> int:
    from hospitaldb.tools.validation import main

    return main(args=["--lineage", *argv], prog=prog)


def _demo_db(argv: list[str], prog: str) -> int:
    from hospitaldb.local.demo_command import main

    return main(argv, prog)


def _roles(argv: list[str], prog: str) -> int:
    from hospitaldb.tools.roles_command import main

    return main(argv, prog)


def _changes(argv: list[str], prog: str) -> int:
    from hospitaldb.local.changes_command import main

    return main(argv, prog)


def _schedule(argv: list[str], prog: str) -> int:
    from hospitaldb.tools.schedules import main

    return main(argv, prog)


def _blocks(argv: list[str], prog: str) -> int:
    from hospitaldb.tools.blocks import main

    return main(argv, prog)


COMMANDS: dict[str, tuple[Command, str]] = {
    "refresh": (_refresh, "run the refresh once, here; every flow parameter is an option"),
    "validate": (_validate, "offline checks: the SQL parses, the flow loads, prefect.yaml is sound"),
    "lineage": (_lineage, "what each refreshed object reads, from the SQL (--mermaid: as a chart)"),
    "demo-db": (_demo_db, "build the demo HospitalDB in a database (--database-url URL)"),
    "roles": (_roles, "create the least-privilege roles, as an administrator"),
    "changes": (_changes, "install change capture on the steps' sources (as an administrator), or show it"),
    "blocks": (_blocks, "create or update the Prefect blocks from environment variables"),
    "schedule": (_schedule, "pause or resume the schedules of deployments, by name (Airflow's dags pause)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: hospitaldb COMMAND [OPTIONS]   (hospitaldb COMMAND --help for its options)",
        "",
        "HospitalDB refresh: keeps a hospital analytics PostgreSQL fresh, in order, checked before it publishes.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {about}" for name, (_, about) in COMMANDS.items()),
        "",
        "  --version  the version of this installation",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"hospitaldb {package_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hospitaldb: no command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    command, _ = COMMANDS[name]
    return command(rest, f"hospitaldb {name}")
