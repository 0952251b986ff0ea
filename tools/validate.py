"""Offline checks of the SQL, the flow and prefect.yaml; no database or Prefect server needed.

    python tools/validate.py
    python tools/validate.py --lineage [--mermaid]   what each refreshed object reads

The checks are hospitaldb.tools.validation; each problem is printed as FILE:LINE: MESSAGE.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hospitaldb.tools.validation import main

if __name__ == "__main__":
    # The project to validate is the one this script belongs to, wherever it is run from.
    sys.exit(main(Path(__file__).resolve().parents[1]))
