"""The record of a run: its outcome, kept once as it happens, and the etl_audit trail that holds it."""
