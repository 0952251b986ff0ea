"""`hospitaldb roles`, by path: create the least-privilege database roles, hand etl_audit to its owner, grant what the SQL needs.

    HOSPITALDB_ADMIN_DATABASE_URL=postgresql://ADMIN@HOST:5432/hospitaldb python deployments/create_roles.py
    python deployments/create_roles.py --refresher etl_refresher --reader bi_status --owner etl_owner

Run it as an administrator (a superuser, or a role that owns the refreshed objects and may
create roles), once, and again after an upgrade of this project: the refresher may not
change etl_audit's definitions, so upgrades of it are applied here. It prints every
statement it ran. The login roles get no password here: set one with `\\password ROLE` in
psql (or your usual way), then use the refresher in HOSPITALDB_DATABASE_URL or the
database block, and the reader in the BI tool. See hospitaldb.tools.roles for what is granted.
"""

from __future__ import annotations

import sys

from hospitaldb.tools.roles_command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python deployments/create_roles.py"))
