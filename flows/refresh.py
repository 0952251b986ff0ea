"""The nightly HospitalDB refresh: phase 2 views, then phase 3 reporting tables, then dashboards.

    python flows/refresh.py --help      # run it once, here (hospitaldb.local.cli)

prefect.yaml deploys `flows/refresh.py:hospitaldb_refresh`; the flow itself is
hospitaldb.refresh. The package is installed (pip install -e .), so this file
needs no path set-up, however Prefect loads it.
"""

from __future__ import annotations

import sys

from hospitaldb.local.cli import main
from hospitaldb.refresh import hospitaldb_refresh

__all__ = ["hospitaldb_refresh"]

if __name__ == "__main__":
    sys.exit(main())
