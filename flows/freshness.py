"""Freshness check: alert when no refresh has succeeded for too long (hospitaldb.freshness).

    python flows/freshness.py            # check once, here

prefect.yaml deploys `flows/freshness.py:hospitaldb_freshness_check`.
"""

from __future__ import annotations

from hospitaldb.freshness import hospitaldb_freshness_check

__all__ = ["hospitaldb_freshness_check"]

if __name__ == "__main__":
    hospitaldb_freshness_check()
