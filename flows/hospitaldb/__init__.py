"""Building blocks of the HospitalDB refresh: SQL scripts, connections, locking, the demo database."""
