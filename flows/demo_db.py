"""Create (or recreate) the demo HospitalDB: `hospitaldb demo-db`, by path.

python flows/demo_db.py --database-url URL [--visits N] [--seed S] [--force]
"""

from __future__ import annotations

import sys

from hospitaldb.local.demo_command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python flows/demo_db.py"))
