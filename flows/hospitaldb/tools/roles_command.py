"""`hospitaldb roles`: create the least-privilege roles, hand etl_audit to its owner, grant what the SQL needs.

Run it as an administrator (a superuser, or a role that owns the refreshed objects and may
create roles), once, and again after an upgrade of this project: the refresher may not
change etl_audit's definitions, so upgrades of it are applied here. It prints every
statement it ran. The login roles get no password here: set one with `\\password ROLE` in
psql (or your usual way), then use the refresher in HOSPITALDB_DATABASE_URL or the
database block, and the reader in the BI tool. See hospitaldb.tools.roles for what is granted.
"""

from __future__ import annotations

import argparse
import sys

from hospitaldb import settings
from hospitaldb.engine.db.database import DatabaseNotConfigured, target_from_url
from hospitaldb.tools.roles import RoleNames, create_roles

ROLES_COMMAND = (
    "Create the least-privilege database roles, hand etl_audit to its owner, grant what the SQL needs."
)


def main(argv: list[str] | None = None, prog: str = "hospitaldb roles") -> int:
    """Create the roles as an administrator (HOSPITALDB_ADMIN_DATABASE_URL); print every statement."""
    defaults = RoleNames()
    parser = argparse.ArgumentParser(prog=prog, description=ROLES_COMMAND)
    parser.add_argument("--refresher", default=defaults.refresher, help="the role the refresh logs in as")
    parser.add_argument(
        "--reader", default=defaults.reader, help="the role that may read etl_audit.data_status"
    )
    parser.add_argument("--owner", default=defaults.owner, help="the role (NOLOGIN) that owns etl_audit")
    args = parser.parse_args(argv)
    url = settings.ADMIN_DATABASE_URL.read()
    if not url:
        print(
            f"error    set {settings.ADMIN_DATABASE_URL} to an administrator's database URL", file=sys.stderr
        )
        return 2
    try:
        connection = target_from_url(url, settings.ADMIN_DATABASE_URL.name).connect(
            purpose="roles", autocommit=True
        )
    except DatabaseNotConfigured as error:
        print(f"error    {error}", file=sys.stderr)
        return 2
    try:
        for statement in create_roles(connection, RoleNames(args.owner, args.refresher, args.reader)):
            print(f"{statement};")
    finally:
        connection.close()
    print(f"-- done. Set the passwords of {args.refresher} and {args.reader} before they log in.")
    return 0
