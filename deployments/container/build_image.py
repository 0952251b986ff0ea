"""Build the HospitalDB refresh image with docker or podman: `python3 dev.py image --help`.

The steps (wheels, a staged context, an optional debootstrap base, the build) are in
hospitaldb.tools.container_image.
"""

from __future__ import annotations

import sys

from hospitaldb.tools.container_image import main

if __name__ == "__main__":
    sys.exit(main())
