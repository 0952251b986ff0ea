"""Create the least-privilege database roles: `hospitaldb roles`, by path.

    HOSPITALDB_ADMIN_DATABASE_URL=postgresql://ADMIN@HOST:5432/hospitaldb python deployments/create_roles.py
    python deployments/create_roles.py --refresher etl_refresher --reader bi_status --owner etl_owner

Run it as an administrator, once, and again after an upgrade; what it does and why:
hospitaldb.tools.roles_command.
"""

from __future__ import annotations

import sys

from hospitaldb.tools.roles_command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python deployments/create_roles.py"))
