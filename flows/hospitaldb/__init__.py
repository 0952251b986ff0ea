"""HospitalDB refresh: the flows (refresh, freshness) over an engine, a record, local commands and offline tools."""
