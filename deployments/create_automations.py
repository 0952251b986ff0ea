"""Create or update the automations that catch runs whose process died silently (deploy.sh runs this).

    python deployments/create_automations.py

What they do and cannot do: hospitaldb.tools.automations.
"""

from __future__ import annotations

import sys

from hospitaldb.tools.automations import main

if __name__ == "__main__":
    sys.exit(main())
