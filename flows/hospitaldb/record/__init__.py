"""The record of a run: its outcome, the etl_audit trail, artifacts, alerts and their delivery, hooks, monitoring."""
