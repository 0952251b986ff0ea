"""Create or update the Prefect blocks HospitalDB refresh uses: `hospitaldb blocks`, by path.

    python deployments/create_blocks.py

What it creates, from which environment variables: hospitaldb.tools.blocks.
"""

from __future__ import annotations

import sys

from hospitaldb.tools.blocks import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python deployments/create_blocks.py"))
